"""`duelguard loop`: the two-player loop outside DVC, resumable.

Iteration 0 trains and evaluates the seed-only classifier (prepare_seed, train_classifier, evaluate,
register); iterations 1..N run duelguard.stages.ITERATION_STAGES (generate, curate, score,
build_pairs, train_generator, train_classifier, evaluate, register). Every stage is the same
function DVC and Kubeflow call (duelguard.stages.run_stage).

Resume: after each stage finishes, its (iteration, stage) is recorded in
<root>/.duelguard/loop_state.json (written atomically) with a fingerprint of the params it reads
(STAGE_PARAMS). A rerun walks the same plan and skips a stage only if it is recorded complete, its
fingerprint is unchanged and its outputs exist; from the first stage that must run, every later
stage runs too (each consumes its predecessors' outputs). A stage killed mid-way is not recorded,
so it reruns from its start: stage outputs are written atomically, so no half-written file is ever
mistaken for a finished one. Only one loop may run in a root at a time (a lock file).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.errors import BusyError
from duelguard.fsio import DataError, atomic_write_json, read_json
from duelguard.layout import Layout
from duelguard.reports import stage_metrics_path
from duelguard.stages import ITERATION_STAGES, SEED_STAGES, run_stage

STATE_VERSION = 1

# The params.yaml keys each stage reads (dotted; a section name means the whole section). They are
# the stage's resume fingerprint here and its `params:` list in dvc.yaml.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "prepare_seed": ("paths.raw_data", "seed"),
    "train_classifier": ("classifier", "evaluate.max_examples_per_lang", "paths.weights_cache", "tracking"),
    "evaluate": ("evaluate", "classifier.predict_batch_size", "tracking"),
    "register": ("tracking", "promotion.eval_split"),
    "promote": ("promotion", "evaluate.max_examples_per_lang", "classifier.predict_batch_size", "tracking"),
    "generate": ("generator", "paths.weights_cache", "loop.stop_min_gain", "loop.stop_patience"),
    "curate": ("curation", "generator.languages", "seed.languages", "paths.weights_cache"),
    "score": ("classifier.loss", "classifier.predict_batch_size"),
    "build_pairs": ("pairs", "generator.template", "generator.backbone", "paths.weights_cache"),
    "train_generator": ("dpo", "generator", "paths.weights_cache", "tracking"),
}


def stage_outputs(layout: Layout, stage: str, iteration: int) -> list[Path]:
    """The files/directories a stage writes (its DVC `outs` and `metrics`); all must exist when done."""
    from duelguard.registry.registry import promotion_record, registry_record

    syn = layout.synthetic_dir(iteration)
    table: dict[str, list[Path]] = {
        "prepare_seed": [layout.seed_split(s) for s in ("train", "dev", "test")] + [layout.seed_card],
        "train_classifier": [layout.classifier_dir(iteration) / "duelguard.json", layout.train_metrics(iteration)],
        "evaluate": [layout.eval_metrics(iteration)],
        "register": [registry_record(layout, iteration)],
        "promote": [promotion_record(layout, iteration)],
        "generate": [layout.generated(iteration), syn / "generate.json"],
        "curate": [layout.curated(iteration), syn / "curation.json"],
        "score": [layout.scored(iteration), stage_metrics_path(layout, "score", iteration)],
        "build_pairs": [layout.pairs(iteration), stage_metrics_path(layout, "pairs", iteration)],
        "train_generator": [layout.generator_dir(iteration) / "adapter_config.json",
                            stage_metrics_path(layout, "dpo", iteration)],
    }
    return table[stage]


def _lookup(dumped: dict[str, Any], dotted: str) -> Any:
    value: Any = dumped
    for part in dotted.split("."):
        value = value[part]
    return value


def stage_fingerprint(params: Params, stage: str, iteration: int) -> str:
    """sha256 of the params the stage reads (and the iteration): a change means the stage reruns."""
    dumped = params.model_dump()
    payload = {"stage": stage, "iteration": iteration, "params": {k: _lookup(dumped, k) for k in STAGE_PARAMS[stage]}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def plan(iterations: int) -> list[tuple[int, str]]:
    """Every (iteration, stage) of a loop with `iterations` iterations, in execution order."""
    steps = [(0, s) for s in SEED_STAGES]
    for i in range(1, iterations + 1):
        steps += [(i, s) for s in ITERATION_STAGES]
    return steps


def state_path(layout: Layout) -> Path:
    return layout.root / ".duelguard" / "loop_state.json"


def timings_path(layout: Layout) -> Path:
    return layout.metrics / "loop_timings.json"


def load_state(layout: Layout) -> dict[str, Any]:
    """The recorded progress (empty on a first run); a corrupt or foreign file is an error, not a reset."""
    path = state_path(layout)
    if not path.exists():
        return {"version": STATE_VERSION, "stages": {}, "running": None}
    state = read_json(path)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or not isinstance(state.get("stages"), dict):
        raise DataError(f"{path}: not a duelguard loop state file (version {STATE_VERSION}); delete it or use --from-scratch")
    return state


def _key(iteration: int, stage: str) -> str:
    return f"{iteration}/{stage}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _exclusive(layout: Layout) -> Iterator[None]:
    """Hold <root>/.duelguard/loop.lock; a second loop in the same root fails fast (released on kill)."""
    import fcntl

    lock_path = layout.root / ".duelguard" / "loop.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"another `duelguard loop` is running in {layout.root} ({lock_path} is locked)") from None
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def timings_table(state: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{iteration: {stage: seconds}} of the completed stages, in plan order."""
    table: dict[str, dict[str, float]] = {}
    for key, entry in state["stages"].items():
        iteration, stage = key.split("/", 1)
        table.setdefault(iteration, {})[stage] = entry["seconds"]
    return {i: table[i] for i in sorted(table, key=int)}


def write_timings(layout: Layout, state: dict[str, Any], params: Params) -> dict[str, Any]:
    """metrics/loop_timings.json: per-iteration, per-stage wall time (seconds) of the recorded stages."""
    table = timings_table(state)
    out = {
        "profile": params.profile,
        "iterations": table,
        "iteration_total_s": {i: round(sum(v.values()), 3) for i, v in table.items()},
        "total_s": round(sum(sum(v.values()) for v in table.values()), 3),
    }
    atomic_write_json(timings_path(layout), out)
    return out


def _print_timings(timings: dict[str, Any]) -> None:
    """The wall-time table on stderr: one row per stage, one column per iteration."""
    from rich.console import Console
    from rich.table import Table

    iterations = list(timings["iterations"])
    table = Table(title=f"loop wall time (s), profile {timings['profile']}")
    table.add_column("stage")
    for i in iterations:
        table.add_column(f"iter {i}", justify="right")
    for stage in dict.fromkeys([*SEED_STAGES, *ITERATION_STAGES]):
        cells = [timings["iterations"][i].get(stage) for i in iterations]
        table.add_row(stage, *["" if c is None else f"{c:.1f}" for c in cells])
    table.add_row("total", *[f"{timings['iteration_total_s'][i]:.1f}" for i in iterations])
    Console(stderr=True).print(table)


def run_loop(params: Params, layout: Layout, iterations: int, from_scratch: bool = False,
             report: bool = True) -> dict[str, Any]:
    """Run (or resume) iteration 0 and loop iterations 1..`iterations`; returns what ran and skipped.

    from_scratch: forget the recorded progress and run every stage again (outputs are overwritten).
    report: rebuild the per-iteration reports, plots and ablation at the end (duelguard.reports).
    """
    from tqdm import tqdm

    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    ran: list[str] = []
    skipped: list[str] = []
    with _exclusive(layout):
        state = {"version": STATE_VERSION, "stages": {}, "running": None} if from_scratch else load_state(layout)
        steps = plan(iterations)
        must_run = False
        bar = tqdm(steps, desc="loop", unit="stage", dynamic_ncols=True)
        for n, (iteration, stage) in enumerate(bar):
            key = _key(iteration, stage)
            fingerprint = stage_fingerprint(params, stage, iteration)
            done = state["stages"].get(key)
            outputs_ok = all(p.exists() for p in stage_outputs(layout, stage, iteration))
            if not must_run and done and done["fingerprint"] == fingerprint and outputs_ok:
                skipped.append(key)
                continue
            if not must_run:
                # From here on every stage runs (each consumes outputs about to change): forget the
                # records of this stage and all later ones in the same write that marks it running,
                # so a kill at any point can never leave a stale "complete" after a rerun stage.
                must_run = True
                keep = {_key(i, s) for i, s in steps[:n]}
                state["stages"] = {k: v for k, v in state["stages"].items() if k in keep}
            state["running"] = {"stage": stage, "iteration": iteration, "started_at": _now(), "pid": os.getpid()}
            atomic_write_json(state_path(layout), state)
            bar.set_description(f"iter {iteration}: {stage}")
            started = time.perf_counter()
            summary = run_stage(stage, params, layout, iteration)
            seconds = round(time.perf_counter() - started, 3)
            state["stages"][key] = {"fingerprint": fingerprint, "completed_at": _now(), "seconds": seconds,
                                    "summary": summary}
            state["running"] = None
            atomic_write_json(state_path(layout), state)
            ran.append(key)
            tqdm.write(f"[loop] iteration {iteration} {stage}: done in {seconds:.1f}s")
        bar.close()
        planned = {_key(i, s) for i, s in steps}
        timings = write_timings(layout, {"stages": {k: v for k, v in state["stages"].items() if k in planned}}, params)
    _print_timings(timings)
    result: dict[str, Any] = {"iterations": iterations, "ran": ran, "skipped": skipped, "timings": str(timings_path(layout))}
    if report:
        from duelguard.reports import write_reports

        result["reports"] = write_reports(params, layout, list(range(iterations + 1)))
    return result
