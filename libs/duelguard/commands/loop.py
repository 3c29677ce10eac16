"""CLI commands: the two-player loop (`loop`) and its reports (`report`)."""

from __future__ import annotations

from typing import Optional

import typer

from duelguard.commands.common import context_params


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("loop")
    def loop_cmd(
        ctx: typer.Context,
        iterations: Optional[int] = typer.Option(
            None, "--iterations", "-n", min=0, help="Loop iterations after the seed-only iteration 0 (default: loop.iterations)."
        ),
        from_scratch: bool = typer.Option(
            False, "--from-scratch", help="Ignore the recorded progress and rerun every stage."
        ),
        report: bool = typer.Option(True, "--report/--no-report", help="Rebuild reports, plots and the ablation at the end."),
    ) -> None:
        """Run the seed-only baseline and N generator/classifier iterations; a rerun resumes where a killed run stopped."""
        import json

        from duelguard.loop import run_loop

        params, layout = context_params(ctx)
        n = params.loop.iterations if iterations is None else iterations
        result = run_loop(params, layout, n, from_scratch=from_scratch, report=report)
        typer.echo(json.dumps({k: result[k] for k in ("iterations", "ran", "skipped", "timings")}, indent=2))
        if report:
            typer.echo(f"ablation: {result['reports']['ablation']['markdown']}")

    @app.command("report")
    def report_cmd(
        ctx: typer.Context,
        mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the plots and metrics to MLflow."),
    ) -> None:
        """Rebuild per-iteration game metrics, loop plots (PNG) and reports/ablation.md from the stages' outputs."""
        from duelguard.reports import write_reports

        params, layout = context_params(ctx)
        result = write_reports(params, layout, log_to_mlflow=mlflow)
        typer.echo((layout.reports / "ablation.md").read_text(encoding="utf-8"))
        for path in result["plots"]:
            typer.echo(f"plot: {path}")
