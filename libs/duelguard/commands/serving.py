"""CLI commands: Triton export, the local Triton server and the gRPC client (see duelguard.serving)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from duelguard.commands.common import context_params

if TYPE_CHECKING:
    from duelguard.serving.server import ServerInfo


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("export-triton")
    def export_triton_cmd(
        ctx: typer.Context,
        model: Optional[str] = typer.Option(
            None, "--model", "-m", help="Classifier directory or MLflow URI (default: models:/<registered>@champion)."
        ),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Repository directory (default: serving.repository)."),
        target: str = typer.Option(
            "local", "--target", help="local: ONNX Runtime inside the Python backend (pytriton's server); "
            "nvidia: + a native onnxruntime/TensorRT model for NVIDIA's Triton image."
        ),
    ) -> None:
        """Write a complete Triton model repository (ONNX verified against torch, config from params)."""
        from duelguard.serving.triton_repository import TARGETS, export_triton

        if target not in TARGETS:
            raise typer.BadParameter(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
        params, layout = context_params(ctx)
        model = model or f"models:/{params.tracking.registered_model}@champion"
        model_dir = export_triton(model, out or layout.triton_repository, params.serving, target,  # type: ignore[arg-type]
                                  params=params, root=layout.root)
        typer.echo(f"exported {model} -> {model_dir}")

    @app.command("serve")
    def serve_cmd(
        ctx: typer.Context,
        repository: Optional[Path] = typer.Option(None, "--repository", help="Model repository (default: serving.repository)."),
        http_port: Optional[int] = typer.Option(None, "--http-port", help="Default: serving.http_port (8000)."),
        grpc_port: Optional[int] = typer.Option(None, "--grpc-port", help="Default: serving.grpc_port (8001)."),
        metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Default: serving.metrics_port (8002)."),
        timeout: float = typer.Option(180.0, "--timeout", help="Seconds to wait for the model to be ready."),
        stop: bool = typer.Option(False, "--stop", help="Stop the running server instead (same as serve-stop)."),
    ) -> None:
        """Serve the registry's champion on 127.0.0.1: export it if the repository holds another version,
        then start tritonserver in the background, or switch the running one to it without a gap."""
        from duelguard.serving.http_front import read_front, settings_from, start_front
        from duelguard.serving.release import serve_champion
        from duelguard.serving.server import stop_server

        params, layout = context_params(ctx)
        if stop:
            _stop_front(layout.serving_state)
            _report_stop(stop_server(layout.serving_state))
            return
        ports = (http_port or params.serving.http_port, grpc_port or params.serving.grpc_port,
                 metrics_port or params.serving.metrics_port)
        done = serve_champion(params, layout, repository, ports, timeout)
        info = done["server"]
        was = f" (was v{done['previous_version']})" if done["previous_version"] not in (None, done["version"]) else ""
        typer.echo(
            f"{done['action']}: tritonserver pid {info.pid} serves {info.model_name!r} v{done['version']} = "
            f"{done['concrete']}{was}; gRPC {info.grpc_url}, HTTP {info.http_url}, metrics 127.0.0.1:{info.metrics_port}; "
            f"log {info.log}"
        )
        front = read_front(layout.serving_state)  # the HTTP front beside it (issue 15); kept across switches
        http = params.serving.http
        if front is None or (front.grpc_url, front.host, front.port) != (info.grpc_url, http.host, http.port):
            _stop_front(layout.serving_state)
            front = start_front(settings_from(params, info.grpc_url), layout.serving_state, http.host, http.port)
        typer.echo(f"HTTP front pid {front.pid}: {front.url}/v1/moderations (OpenAI), "
                   f"{front.url}/beta/litellm_basic_guardrail_api (LiteLLM); log {front.log}")

    @app.command("serve-container")
    def serve_container_cmd() -> None:
        """The serving image's entrypoint: export $DUELGUARD_MODEL_URI and exec tritonserver (no params.yaml;
        settings from DUELGUARD_SERVING_* variables, see duelguard.serving.container)."""
        from duelguard.serving.container import main

        main()

    @app.command("serve-stop")
    def serve_stop_cmd(ctx: typer.Context) -> None:
        """Stop the tritonserver and the HTTP front started by `duelguard serve` (by the PIDs they recorded)."""
        from duelguard.serving.server import stop_server

        _, layout = context_params(ctx)
        _stop_front(layout.serving_state)
        _report_stop(stop_server(layout.serving_state))

    @app.command("classify")
    def classify_cmd(
        ctx: typer.Context,
        url: Optional[str] = typer.Option(None, "--url", help="Triton gRPC HOST:PORT (default: 127.0.0.1:serving.grpc_port)."),
        text: Optional[list[str]] = typer.Option(None, "--text", "-t", help="A text to classify (repeatable)."),
        input_path: Optional[Path] = typer.Option(None, "--input", "-i", help="JSONL input (`text` or `messages` per line)."),
        output_path: Optional[Path] = typer.Option(None, "--output", "-o", help="JSONL output (default: stdout)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows per request (<= the model's max batch)."),
        retries: int = typer.Option(5, "--retries", help="Retries with exponential backoff while the server is unavailable."),
    ) -> None:
        """Classify texts over gRPC with the served model: the `duelguard predict` output schema."""
        import json

        from duelguard.classifier.predict import read_inputs
        from duelguard.fsio import write_jsonl
        from duelguard.serving.client import GuardServingClient

        params, _ = context_params(ctx)
        if bool(text) == bool(input_path):
            raise typer.BadParameter("give either --text (repeatable) or --input FILE")
        objs = read_inputs(input_path) if input_path else [{"text": t} for t in text or []]
        with GuardServingClient(
            url or f"127.0.0.1:{params.serving.grpc_port}", params.serving.model_name, retries=retries
        ) as client:
            rows = client.classify_records(objs, batch_size)
        if output_path:
            count = write_jsonl(output_path, rows)
            typer.echo(f"classified {count} inputs -> {output_path}", err=True)
        else:
            for row in rows:
                typer.echo(json.dumps(row, ensure_ascii=False))


def _stop_front(state_dir: Path) -> None:
    from duelguard.serving.http_front import stop_front

    front = stop_front(state_dir)
    if front is not None:
        typer.echo(f"stopped the HTTP front pid {front.pid}")


def _report_stop(info: ServerInfo | None) -> None:
    if info is None:
        typer.echo("no tritonserver recorded as running")
    else:
        typer.echo(f"stopped tritonserver pid {info.pid}")
