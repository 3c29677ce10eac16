"""CLI commands: the local runner (`loop` = `dvc repro`), `dvc-yaml` (generate/check dvc.yaml from the
stage spec) and `report`."""

from __future__ import annotations

from typing import Optional

import typer

from duelguard.commands.common import context_params


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("loop", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def loop_cmd(
        ctx: typer.Context,
        iterations: Optional[int] = typer.Option(
            None, "--iterations", "-n", min=0, help="Set loop.iterations in params.yaml first (default: keep it)."
        ),
        from_scratch: bool = typer.Option(False, "--from-scratch", help="Rerun every stage (`dvc repro --force`)."),
    ) -> None:
        """Run the pipeline locally: set loop.iterations (-n), regenerate dvc.yaml, then `dvc repro`.

        DVC reruns exactly the stages whose data, params or code changed, and a killed run resumes: each
        finished stage is in dvc.lock. Extra arguments go to `dvc repro` (e.g. `duelguard loop -- generate_1`).
        """
        from duelguard.pipeline.dvc import repro

        root = (ctx.obj or {}).get("root") or "."
        code = repro(root, iterations, force=from_scratch, extra=ctx.args)
        raise typer.Exit(code)

    @app.command("dvc-yaml")
    def dvc_yaml_cmd(
        ctx: typer.Context,
        write: bool = typer.Option(False, "--write", help="Write dvc.yaml if it differs from the generated file."),
        check: bool = typer.Option(False, "--check", help="Exit 1 if dvc.yaml differs from the generated file."),
    ) -> None:
        """dvc.yaml generated from the stage spec and params.yaml loop.iterations (printed, --write or --check)."""
        from duelguard.config import load_params
        from duelguard.pipeline import dvc

        obj = ctx.obj or {}
        root = obj.get("root") or "."
        params = load_params(obj.get("params_path") or f"{root}/params.yaml", "default")
        if check:
            problems = dvc.check(params, root)
            for line in problems:
                typer.echo(f"dvc.yaml: {line}", err=True)
            if problems:
                typer.echo("dvc.yaml is out of date: run `duelguard dvc-yaml --write`", err=True)
            raise typer.Exit(1 if problems else 0)
        if write:
            changed = dvc.write(params, root)
            typer.echo(f"{dvc.dvc_yaml_path(root)}: {'written' if changed else 'up to date'}")
            return
        typer.echo(dvc.render(params, root), nl=False)

    @app.command("report")
    def report_cmd(
        ctx: typer.Context,
        mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the plots and metrics to MLflow."),
    ) -> None:
        """Rebuild per-iteration game metrics, loop plots (PNG) and reports/ablation.md from the stages' outputs."""
        from duelguard.reports import write_reports

        params, layout = context_params(ctx)
        result = write_reports(params, layout, log_to_mlflow=mlflow)
        typer.echo(layout.ablation_markdown.read_text(encoding="utf-8"))
        for path in result["plots"]:
            typer.echo(f"plot: {path}")
