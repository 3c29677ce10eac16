"""The `export` pipeline stage: refresh the Triton model repository from the registry's champion
(duelguard.registry.lookup.champion_uri), never from anything else."""

from __future__ import annotations

from typing import Any

from duelguard.config import Params
from duelguard.layout import Layout


def export_stage(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Export the registry's champion (what production serves) into params.serving.repository;
    a registry without a champion is an error (every candidate refused: nothing may be served)."""
    from duelguard.registry.lookup import champion_uri
    from duelguard.serving.triton_repository import export_triton

    model = champion_uri(params, layout.root)
    model_dir = export_triton(model, layout.triton_repository, params.serving, params=params, root=layout.root)
    versions = sorted(p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return {"model": model, "repository": str(model_dir.parent), "versions": versions}
