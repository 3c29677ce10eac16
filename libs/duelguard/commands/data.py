"""CLI commands: configuration profiles, backbone weights, seed data and `stage` (one pipeline stage)."""

from __future__ import annotations

import typer

from duelguard.commands.common import context_params


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("profile")
    def profile_cmd(
        ctx: typer.Context,
        name: str = typer.Argument(None, help="default | tiny | e5 | long | paper (omit to print the active one)."),
    ) -> None:
        """Show or switch the active profile (rewrites the `profile:` value of params.yaml, comments kept)."""
        from duelguard.config import default_params_path, load_params, set_profile

        path = (ctx.obj or {}).get("params_path") or default_params_path()
        if name is None:
            typer.echo(load_params(path).profile)
            return
        set_profile(path, name)
        typer.echo(f"{path}: profile set to {name}")

    @app.command("fetch-weights")
    def fetch_weights(ctx: typer.Context) -> None:
        """Verify and dequantise the packaged pretrained weights into the weights cache (once)."""
        from duelguard.backbones import resolve_backbone

        params, layout = context_params(ctx)
        for role, backbone in (("classifier", params.classifier.backbone), ("generator", params.generator.backbone)):
            if backbone.kind == "tiny":
                typer.echo(f"{role}: tiny backbone (built from the seed texts when first trained)")
                continue
            typer.echo(f"{role}: {resolve_backbone(backbone, params.paths.weights_cache)}")

    @app.command("prepare-seed")
    def prepare_seed_cmd(ctx: typer.Context) -> None:
        """Assemble the seed dataset from the raw public files (same as `duelguard stage prepare_seed`)."""
        from duelguard.pipeline.spec import run_stage

        params, layout = context_params(ctx)
        summary = run_stage("prepare_seed", params, layout, 0)
        typer.echo(f"seed: {summary}")

    register_stage_command(app)


def register_stage_command(app: typer.Typer) -> None:
    """`duelguard stage NAME -i I`: what each DVC stage and KFP component runs."""

    @app.command("stage")
    def stage_cmd(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Stage name (the table in duelguard/pipeline/spec.py)."),
        iteration: int = typer.Option(0, "--iteration", "-i", help="Loop iteration (0 = seed-only baseline)."),
    ) -> None:
        """Run one pipeline stage: what each dvc.yaml stage and each Kubeflow component runs."""
        import json

        from duelguard.pipeline.spec import run_stage

        params, layout = context_params(ctx)
        summary = run_stage(name, params, layout, iteration)
        typer.echo(json.dumps(summary, indent=2, default=str))
