"""The two-player game's scoring (loop stage `score`); the pairs it yields are duelguard.loop.pairs.

The classifier of the previous iteration plays against the generator's fresh samples: every curated
(hence FAITHFUL: duelguard.loop.curation checked that it still says what its seed said) sample of
iteration i is scored against the label it inherited from its seed, with the *same* loss the
classifier is trained with (so "hard for the classifier" means exactly what training would push on).

Game value that can converge: the fresh samples change every iteration, so their mean loss cannot
show convergence. Iteration 1 freezes a GAME SET of faithful samples (curation.select_game_set,
never trained on); every classifier, iteration 0's included, is scored on it (`game_set` in
metrics/score/iter_<i>.json for classifier i-1; the report scores the last one).

The stop rule that ends the game is duelguard.loop.stoprule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from duelguard.config import Params
from duelguard.fsio import atomic_write_json
from duelguard.layout import Layout
from duelguard.records import read_records, write_records
from duelguard.taxonomy import is_unsafe

# Probabilities are clipped before turning them back into logits: p = 1.0 in float32 would give an
# infinite logit, and the classifier's losses are defined on finite logits.
_PROB_EPS = 1e-6
SCORE_FIELDS = ("loss", "unsafe_score", "pred_unsafe", "correct")


def probs_to_logits(probs: Any) -> Any:
    """Logits from sigmoid probabilities (float64, clipped); inverse of the classifier's sigmoid.

    GuardClassifier.predict_proba max-aggregates chunk probabilities; since the logit is monotonic,
    logit(max p) is the max chunk logit, so this recovers the logits the loss is defined on.
    """
    import numpy as np

    p = np.clip(np.asarray(probs, dtype=np.float64), _PROB_EPS, 1.0 - _PROB_EPS)
    return np.log(p) - np.log1p(-p)


def per_sample_loss(loss_name: str, logits: Any, labels: Any) -> list[float]:
    """The training loss (duelguard.classifier.losses, chosen by params.classifier.loss) per sample:
    exactly what that sample contributes to training (before its language weight)."""
    import torch

    from duelguard.classifier.losses import loss_function

    fn = loss_function(loss_name)
    s = torch.as_tensor(logits, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.float32)
    with torch.no_grad():
        return [float(v) for v in fn(s, y)]


def score_records(classifier: Any, records: list[dict[str, Any]], loss_name: str,
                  batch_size: int | None = None) -> list[dict[str, Any]]:
    """Each record plus loss, unsafe_score, pred_unsafe and correct (predicted unsafe == true unsafe)."""
    from duelguard.metrics import unsafe_predictions

    if not records:
        return []
    probs = classifier.predict_proba([r["text"] for r in records], batch_size=batch_size, progress=True)
    losses = per_sample_loss(loss_name, probs_to_logits(probs), [r["labels"] for r in records])
    pred_unsafe, unsafe_score = unsafe_predictions(probs, classifier.thresholds)
    return [
        {
            **rec,
            "loss": round(loss, 6),
            "unsafe_score": round(float(sc), 6),
            "pred_unsafe": bool(pred),
            "correct": bool(pred) == is_unsafe(rec["labels"]),
        }
        for rec, loss, pred, sc in zip(records, losses, pred_unsafe, unsafe_score, strict=True)
    ]


def game_value(scored: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Mean loss and error rate overall, per language and per true class (safe/unsafe)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rows = list(scored)
    for rec in rows:
        groups[f"lang:{rec['lang']}"].append(rec)
        groups["class:" + ("unsafe" if is_unsafe(rec["labels"]) else "safe")].append(rec)

    def summary(items: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(items)
        if n == 0:
            return {"n": 0, "mean_loss": None, "error_rate": None}
        return {
            "n": n,
            "mean_loss": round(sum(r["loss"] for r in items) / n, 6),
            "error_rate": round(sum(not r["correct"] for r in items) / n, 6),
        }

    return {
        **summary(rows),
        "per_language": {k.split(":", 1)[1]: summary(v) for k, v in sorted(groups.items()) if k.startswith("lang:")},
        "per_class": {k.split(":", 1)[1]: summary(v) for k, v in sorted(groups.items()) if k.startswith("class:")},
    }


def score(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `score`: the classifier of iteration-1 scores the curated samples of `iteration`.

    Writes layout.scored(iteration) (records + loss, unsafe_score, pred_unsafe, correct; then this
    iteration's own game-set samples, marked `game_set`) and the game value on the fresh curated samples
    and on the whole game set to layout.score_metrics(iteration); returns the same metrics.
    """
    from duelguard.classifier.loader import load_classifier

    if iteration < 1:
        raise ValueError(f"score runs in loop iterations >= 1, got {iteration}")
    clf_dir = layout.classifier_dir(iteration - 1)
    records = read_records(layout.curated(iteration))
    game_set = read_records(layout.game_set(iteration))
    classifier = load_classifier(clf_dir, layout.weights_cache)
    scored = score_records(classifier, records, params.classifier.loss, params.classifier.predict_batch_size)
    game_scored = score_records(classifier, game_set, params.classifier.loss, params.classifier.predict_batch_size)
    # This iteration's own game-set samples are faithful samples of this generation too: build_pairs may
    # use them (the generator trains on pairs; the classifier never sees the game set).
    own = [{**r, "game_set": True} for r in game_scored if r.get("iteration") == iteration]
    write_records(layout.scored(iteration), scored + own)
    metrics = {
        "iteration": iteration,
        "classifier": str(clf_dir.relative_to(layout.root)) if clf_dir.is_relative_to(layout.root) else str(clf_dir),
        "loss": params.classifier.loss,
        **game_value(scored),
        # The fixed game set, scored by this iteration's opponent (classifier i-1).
        "game_set": {"classifier_iteration": iteration - 1, **game_value(game_scored)},
    }
    atomic_write_json(layout.score_metrics(iteration), metrics)
    return metrics
