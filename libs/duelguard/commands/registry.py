"""CLI commands: evaluate, register, promote, rollback, and the local MLflow server (`mlflow up|down|status`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from duelguard.commands.common import context_params

if TYPE_CHECKING:
    from duelguard.registry.server import ServerConfig


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("evaluate")
    def evaluate_cmd(
        ctx: typer.Context,
        iteration: int = typer.Option(0, "--iteration", "-i", help="Evaluate models/classifier/iter_<i>."),
    ) -> None:
        """Evaluate a trained classifier on the frozen dev/test sample (same as `duelguard stage evaluate -i I`)."""
        from duelguard.pipeline.spec import run_stage

        params, layout = context_params(ctx)
        typer.echo(json.dumps(run_stage("evaluate", params, layout, iteration), indent=2, default=str))

    @app.command("register")
    def register_cmd(
        ctx: typer.Context,
        iteration: int = typer.Option(0, "--iteration", "-i", help="Register the evaluated classifier of iteration <i>."),
    ) -> None:
        """Log the evaluated classifier as an MLflow model and register it (same as `duelguard stage register -i I`)."""
        from duelguard.pipeline.spec import run_stage

        params, layout = context_params(ctx)
        typer.echo(json.dumps(run_stage("register", params, layout, iteration), indent=2, default=str))

    @app.command("promote")
    def promote_cmd(
        ctx: typer.Context,
        version: str = typer.Option(None, "--version", "-v", help="Candidate version (default: the newest)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the decision; change nothing."),
    ) -> None:
        """Promote a candidate to `champion` if it beats the champion by the rules in params.promotion."""
        from duelguard.registry.registry import promote

        params, layout = context_params(ctx)
        decision = promote(params, version, dry_run=dry_run, layout=layout)
        typer.echo(decision.describe())

    @app.command("rollback")
    def rollback_cmd(ctx: typer.Context) -> None:
        """Move the `champion` alias back to the `previous` version."""
        from duelguard.registry.registry import rollback

        params, layout = context_params(ctx)
        result = rollback(params, layout)
        typer.echo(f"{result['name']}: champion is now v{result['champion']} (v{result['demoted']} rolled back)")

    mlflow_app = typer.Typer(help="A local MLflow tracking server (settings: services/mlflow/server.env).",
                             no_args_is_help=True)
    app.add_typer(mlflow_app, name="mlflow")

    def _server_config(ctx: typer.Context, port: int | None) -> ServerConfig:
        from duelguard.registry.server import load_config

        return load_config((ctx.obj or {}).get("root") or ".", port=port)

    @mlflow_app.command("up")
    def mlflow_up(ctx: typer.Context, port: int = typer.Option(None, "--port", help="Override MLFLOW_PORT.")) -> None:
        """Start `mlflow server` in the background and wait until it is healthy."""
        from duelguard.registry.server import start

        info = start(_server_config(ctx, port))
        state = "started" if info["started"] else "already running"
        typer.echo(f"mlflow server {state} at {info['url']} (pid {info['pid']}, log {info['log']})")
        typer.echo(f"export MLFLOW_TRACKING_URI={info['url']}")

    @mlflow_app.command("down")
    def mlflow_down(ctx: typer.Context, port: int = typer.Option(None, "--port", help="Override MLFLOW_PORT.")) -> None:
        """Stop the server started by `duelguard mlflow up`."""
        from duelguard.registry.server import stop

        cfg = _server_config(ctx, port)
        typer.echo(f"mlflow server at {cfg.url} " + ("stopped" if stop(cfg) else "was not running"))

    @mlflow_app.command("status")
    def mlflow_status(ctx: typer.Context, port: int = typer.Option(None, "--port", help="Override MLFLOW_PORT.")) -> None:
        """Say whether the server answers /health."""
        from duelguard.registry.server import healthy

        cfg = _server_config(ctx, port)
        up = healthy(cfg.url)
        typer.echo(f"mlflow server at {cfg.url}: {'up' if up else 'down'}")
        raise typer.Exit(0 if up else 1)
