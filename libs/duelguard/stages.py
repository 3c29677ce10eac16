"""The pipeline's stages, by name: the one table that DVC (`duelguard stage NAME -i I`),
`duelguard loop` and the Kubeflow components all dispatch through.

Every stage function has the signature `fn(params: Params, layout: Layout, iteration: int) -> dict`:
it reads its inputs from `layout`, writes its outputs atomically to `layout`, and returns a small
JSON-able summary. Functions are named by dotted path so that importing this module stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from duelguard.config import Params
from duelguard.layout import Layout

StageFn = Callable[[Params, Layout, int], dict[str, Any]]

STAGES: dict[str, str] = {
    "prepare_seed": "duelguard.seed.assemble:prepare_seed_stage",
    "train_classifier": "duelguard.classifier.train:train_classifier",
    "evaluate": "duelguard.evaluation:evaluate_classifier",
    "register": "duelguard.registry.registry:register_classifier",
    "promote": "duelguard.registry.registry:promote_stage",
    "generate": "duelguard.generator:generate",
    "curate": "duelguard.curation:curate",
    "score": "duelguard.game:score",
    "build_pairs": "duelguard.game:build_pairs",
    "train_generator": "duelguard.dpo:train_generator",
    "export": "duelguard.serving.export:export_stage",
}

# Iteration 0: the seed-only baseline.
SEED_STAGES: tuple[str, ...] = ("prepare_seed", "train_classifier", "evaluate", "register", "promote")
# The order of one loop iteration i >= 1.
ITERATION_STAGES: tuple[str, ...] = (
    "generate",
    "curate",
    "score",
    "build_pairs",
    "train_generator",
    "train_classifier",
    "evaluate",
    "register",
    "promote",
)


def stage_function(name: str) -> StageFn:
    """Import and return the stage function registered under `name`."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    module, _, attr = STAGES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def run_stage(name: str, params: Params, layout: Layout, iteration: int = 0) -> dict[str, Any]:
    """Run one stage by name."""
    return stage_function(name)(params, layout, iteration)
