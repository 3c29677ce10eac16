"""CLI commands: `duelguard pipeline compile | run-local | submit` (the Kubeflow pipeline, see duelguard.cli).

The pipeline itself lives in pipelines/duelguard_pipeline.py at the repository root (the product's
layout: pipelines/ holds the KFP pipeline); these commands load it from the --root checkout, so the
library stays importable in images that do not ship pipelines/ (the trainer image runs components only).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import typer

DEFAULT_PACKAGE = Path("build/pipelines/duelguard-loop.yaml")

pipeline_app = typer.Typer(help="Kubeflow pipeline `duelguard-loop`: compile, run locally (kfp.local), submit to KFP_HOST.", no_args_is_help=True)


def load_pipeline_module(root: str | Path) -> ModuleType:
    """Import <root>/pipelines/duelguard_pipeline.py (needs the `pipelines` extra: kfp, kfp-kubernetes)."""
    path = Path(root).resolve() / "pipelines" / "duelguard_pipeline.py"
    if not path.exists():
        raise FileNotFoundError(f"{path}: pipeline module not found (pass --root <repository root>)")
    name = "duelguard_pipeline"
    if name in sys.modules and Path(sys.modules[name].__file__ or "") == path:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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
    params_path, profile, root = _options(ctx)
    module = load_pipeline_module(root)
    try:
        result = module.compile_pipeline(params_path, out, profile=profile, image=image, root=root)
    except module.PipelineError as exc:
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
    params_path, profile, root = _options(ctx)
    module = load_pipeline_module(root)
    try:
        result = module.run_local(params_path, workdir, profile=profile or "tiny", iterations=iterations, root=root, raw_data=raw_data)
    except module.PipelineError as exc:
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

    params_path, profile, root = _options(ctx)
    module = load_pipeline_module(root)
    experiment = experiment or load_params(params_path, profile).kubeflow.experiment
    try:
        result = module.submit(package, host, experiment, run_name=run_name, arguments=_parse_arguments(arg), namespace=namespace,
                               service_account=service_account)
    except module.PipelineError as exc:
        _fail(exc)
    typer.echo(json.dumps(result))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""
    app.add_typer(pipeline_app, name="pipeline")
