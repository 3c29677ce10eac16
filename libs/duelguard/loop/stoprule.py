"""The loop's stop rule: when the game has converged, the remaining iterations become no-ops.

Before generating iteration i >= 2 (stop_decision), if the mean unsafe-class F1 over the behavioural
suite's fr/es/de language x category cells rose by less than loop.stop_min_gain in each of the last
loop.stop_patience iterations, the game is over. The stage graph (dvc.yaml, Kubeflow) is static, so
the remaining iterations still run, as documented no-ops: generate writes no sample and records the
decision in its summary (layout.generate_summary), curate/score/build_pairs pass empty files through,
train_generator carries the adapter over (no pairs), and train_classifier copies the previous
classifier (carry_over_classifier: nothing new to learn from).

A small module on purpose: generate and the classifier's turn (duelguard.loop.turns) import it, and
a stage's code dependencies are the modules it imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json, read_json
from duelguard.layout import Layout

LOOP_LANGUAGES = ("fr", "es", "de")


def suite_cell_f1(layout: Layout, iteration: int) -> float | None:
    """Mean unsafe-class F1 over the behavioural suite's fr/es/de language x category cells of
    classifier `iteration` (its evaluate stage's metrics); None when no cell has a defined F1."""
    path = layout.eval_metrics(iteration)
    if not path.exists():
        raise DataError(f"{path}: classifier {iteration} is not evaluated (run its evaluate stage first)")
    cells = read_json(path).get("cells", {}).get("suite")
    if cells is None:
        raise DataError(f"{path}: no suite cells (evaluate.sets must include 'suite' for the stop rule)")
    values = [cell["f1"] for lang in LOOP_LANGUAGES for cell in cells.get(lang, {}).values()
              if cell.get("f1") is not None]
    return round(sum(values) / len(values), 6) if values else None


def stop_decision(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Whether generation iteration `iteration` should be a no-op because the game has converged.

    gain_k = suite_cell_f1(k) - suite_cell_f1(k-1) for the iterations k < `iteration` already played;
    stop when the last loop.stop_patience gains are all below loop.stop_min_gain (or when an earlier
    iteration already stopped). Iteration 1 always plays.
    """
    loop = params.loop
    decision: dict[str, Any] = {"stop": False, "min_gain": loop.stop_min_gain, "patience": loop.stop_patience}
    if iteration <= 1:
        return {**decision, "reason": "iteration 1 always plays"}
    previous = layout.generate_summary(iteration - 1)
    if previous.exists() and (read_json(previous).get("stopped") or {}).get("stop"):
        return {**decision, "stop": True, "reason": f"the game already stopped at iteration {iteration - 1}"}
    values = [suite_cell_f1(layout, k) for k in range(iteration)]
    gains = [None if a is None or b is None else round(b - a, 6) for a, b in zip(values, values[1:])]
    decision.update({"suite_cell_f1": values, "gains": gains})
    recent = gains[-loop.stop_patience:]
    if len(recent) < loop.stop_patience:
        return {**decision, "reason": f"fewer than {loop.stop_patience} played iterations to judge"}
    if all(g is not None and g < loop.stop_min_gain for g in recent):
        return {**decision, "stop": True,
                "reason": f"fr/es/de suite-cell F1 gained < {loop.stop_min_gain} in each of the last "
                          f"{loop.stop_patience} iteration(s): {recent}"}
    return {**decision, "reason": f"gains {recent} still reach {loop.stop_min_gain}"}


def loop_stopped(layout: Layout, iteration: int) -> dict[str, Any] | None:
    """The stop decision recorded by generate for `iteration`, when the game had stopped by then."""
    path = layout.generate_summary(iteration)
    decision = (read_json(path).get("stopped") or {}) if path.exists() else {}
    return decision if decision.get("stop") else None


def carry_over_classifier(layout: Layout, iteration: int) -> dict[str, Any] | None:
    """train_classifier's no-op once the game has stopped: iteration i has no new sample, so its
    classifier IS classifier i-1. Copies the model, its probe and its training metrics (marked
    `carried_over_from`) instead of retraining for minutes; None when the game is still on."""
    import shutil
    import tempfile

    from duelguard.fsio import publish_dir

    decision = loop_stopped(layout, iteration) if iteration >= 1 else None
    if decision is None:
        return None
    # The probe lives inside the classifier directory (layout.probe_dir): one copy carries both. The
    # training plots are declared outputs of the stage too.
    for source, target in ((layout.classifier_dir(iteration - 1), layout.classifier_dir(iteration)),
                           (layout.plots_dir("train", iteration - 1), layout.plots_dir("train", iteration))):
        if not source.is_dir():
            raise DataError(f"{source}: missing; the stopped iteration {iteration} reuses it")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            publish_dir(tmp, target)
        finally:  # after publish_dir renamed it, nothing is left to remove
            shutil.rmtree(tmp, ignore_errors=True)
    metrics = {**read_json(layout.train_metrics(iteration - 1)), "iteration": iteration,
               "carried_over_from": iteration - 1, "stopped": decision}
    atomic_write_json(layout.train_metrics(iteration), metrics)
    return {"iteration": iteration, "model_dir": str(layout.classifier_dir(iteration)), **metrics}

