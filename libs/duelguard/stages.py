"""The pipeline's stages, by name: the one table that DVC (`duelguard stage NAME -i I`),
`duelguard loop` and the Kubeflow components all dispatch through.

Every stage function has the signature `fn(params: Params, layout: Layout, iteration: int) -> dict`:
it reads its inputs from `layout`, writes its outputs atomically to `layout`, and returns a small
JSON-able summary. Functions are named by dotted path so that importing this module stays cheap.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
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


def timing_path(layout: Layout, name: str, iteration: int) -> Path:
    """Where run_stage records a stage's wall time (read by bench/bench_loop.py, whoever ran the stage:
    DVC, `duelguard loop` or a Kubeflow component)."""
    return layout.metrics / "timings" / f"iter_{iteration}" / f"{name}.json"


def run_stage(name: str, params: Params, layout: Layout, iteration: int = 0) -> dict[str, Any]:
    """Run one stage by name and record its wall time (unless it skipped as already complete)."""
    from duelguard.fsio import atomic_write_json

    fn = stage_function(name)
    started = time.perf_counter()
    summary = fn(params, layout, iteration)
    seconds = round(time.perf_counter() - started, 3)
    if not (isinstance(summary, dict) and summary.get("skipped")):
        atomic_write_json(
            timing_path(layout, name, iteration),
            {"stage": name, "iteration": iteration, "profile": params.profile, "seconds": seconds,
             "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        )
    return summary
