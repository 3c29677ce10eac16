"""CLI commands: `duelguard pipeline compile | run-local | submit` (the Kubeflow pipeline built from the
stage spec by duelguard.pipeline.kfp_pipeline; needs the `pipelines` extra: kfp, kfp-kubernetes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from duelguard.errors import PipelineError

DEFAULT_PACKAGE = Path("build/pipelines/duelguard-loop.yaml")

pipeline_app = typer.Typer(help="Kubeflow pipeline `duelguard-loop`: compile, run locally (kfp.local), submit to KFP_HOST.", no_args_is_help=True)


def _options(ctx: typer.Context) -> tuple[Path, Optional[str], Path]:
    from duelguard.config import default_params_path

    obj = ctx.obj or {}
    return Path(obj.get("params_path") or default_params_path()), obj.get("profile"), Path(obj.get("root") or ".")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _parse_arguments(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE (e.g. --arg profile=paper)", param_hint="--arg")
        out[key] = value
    return out


@pipeline_app.command("compile")
def compile_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(DEFAULT_PACKAGE, "--out", help="Where to write the compiled pipeline YAML."),
    image: Optional[str] = typer.Option(None, "--image", help="Image of every step (default: kubeflow.image tagged with the git commit)."),
) -> None:
    """Compile `duelguard-loop` (iterations unrolled from loop.iterations, defaults from params.yaml)."""
    from duelguard.pipeline.kfp_pipeline import compile_pipeline

    params_path, profile, root = _options(ctx)
    try:
        result = compile_pipeline(params_path, out, profile=profile, image=image, root=root)
    except PipelineError as exc:
        _fail(exc)
    typer.echo(json.dumps(result))


@pipeline_app.command("run-local")
def run_local_cmd(
    ctx: typer.Context,
    workdir: Path = typer.Option(Path("build/pipeline_local"), "--workdir", help="Artifacts and the local MLflow store go here."),
    iterations: int = typer.Option(1, "--iterations", min=0, help="Loop iterations to unroll (after the seed-only iteration 0)."),
    raw_data: Optional[Path] = typer.Option(None, "--raw-data", help="Raw corpora directory (default: paths.raw_data)."),
) -> None:
    """Run the pipeline on this machine with kfp.local's SubprocessRunner (default: tiny profile, 1 iteration)."""
    from duelguard.pipeline.kfp_pipeline import run_local

    params_path, profile, root = _options(ctx)
    try:
        result = run_local(params_path, workdir, profile=profile or "tiny", iterations=iterations, root=root, raw_data=raw_data)
    except PipelineError as exc:
        _fail(exc)
    typer.echo(json.dumps(result))


@pipeline_app.command("submit")
def submit_cmd(
    ctx: typer.Context,
    package: Path = typer.Option(DEFAULT_PACKAGE, "--package", help="Compiled pipeline YAML (duelguard pipeline compile)."),
    host: Optional[str] = typer.Option(None, "--host", envvar="KFP_HOST", help="Kubeflow Pipelines endpoint [env: KFP_HOST]."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="KFP experiment (default: kubeflow.experiment)."),
    run_name: Optional[str] = typer.Option(None, "--run-name", help="Run name (default: duelguard-loop-<timestamp>)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Kubeflow profile namespace (multi-user installs)."),
    service_account: Optional[str] = typer.Option(None, "--service-account", help="Run the steps as this ServiceAccount (infra/: duelguard-pipeline)."),
    arg: list[str] = typer.Option([], "--arg", help="Pipeline argument NAME=VALUE (repeatable), e.g. --arg profile=paper."),
) -> None:
    """Submit the compiled pipeline to KFP_HOST with kfp.Client (experiment, run name, arguments)."""
    from duelguard.config import load_params
    from duelguard.pipeline.kfp_pipeline import submit

    params_path, profile, _ = _options(ctx)
    experiment = experiment or load_params(params_path, profile).kubeflow.experiment
    try:
        result = submit(package, host, experiment, run_name=run_name, arguments=_parse_arguments(arg), namespace=namespace,
                        service_account=service_account)
    except PipelineError as exc:
        _fail(exc)
    typer.echo(json.dumps(result))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""
    app.add_typer(pipeline_app, name="pipeline")
