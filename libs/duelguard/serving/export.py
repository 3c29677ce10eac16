"""The `export` pipeline stage and the champion reference: refresh the Triton model repository from
the registry's champion, never from anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.layout import Layout

CHAMPION_ALIAS = "champion"


def champion_uri(params: Params, root: str | Path) -> str:
    """models:/<registered>@champion; ModelNotFoundError when the registry has no champion,
    RegistryError when it cannot be read (duelguard.registry.lookup)."""
    from mlflow import MlflowClient

    from duelguard.errors import ModelNotFoundError
    from duelguard.registry.lookup import alias_version
    from duelguard.tracking import tracking_uri

    uri = tracking_uri(params, root)
    name = params.tracking.registered_model
    if alias_version(MlflowClient(tracking_uri=uri, registry_uri=uri), name, CHAMPION_ALIAS) is None:
        raise ModelNotFoundError(
            f"{name} has no '{CHAMPION_ALIAS}' in the MLflow registry at {uri}: nothing to serve "
            "(promote a version with `duelguard promote`, or export a directory with `duelguard export-triton --model DIR`)"
        )
    return f"models:/{name}@{CHAMPION_ALIAS}"


def export_stage(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Export the registry's champion (what production serves) into params.serving.repository;
    a registry without a champion is an error (every candidate refused: nothing may be served)."""
    from duelguard.serving.triton_repository import export_triton

    model = champion_uri(params, layout.root)
    model_dir = export_triton(model, layout.triton_repository, params.serving, params=params, root=layout.root)
    versions = sorted(p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return {"model": model, "repository": str(model_dir.parent), "versions": versions}
