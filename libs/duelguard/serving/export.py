"""The `export` pipeline stage: refresh the Triton model repository from the served classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.layout import Layout


def champion_uri(params: Params, root: str | Path) -> str | None:
    """models:/<registered>@champion when the registry has a champion, else None (no registry yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from duelguard.tracking import tracking_uri

    uri = tracking_uri(params, root)
    name = params.tracking.registered_model
    try:
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    return f"models:/{name}@champion"


def export_stage(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Export the registry's champion (what production serves) or, with no champion yet, the
    classifier of `iteration`, into params.serving.repository."""
    from duelguard.serving.triton_repository import export_triton

    model = champion_uri(params, layout.root) or str(layout.classifier_dir(iteration))
    model_dir = export_triton(model, layout.triton_repository, params, root=layout.root)
    versions = sorted(p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return {"model": model, "repository": str(model_dir.parent), "versions": versions}
