"""The two-player game's scoring and preference pairs (loop stages `score` and `build_pairs`).

The classifier of the previous iteration plays against the generator's fresh samples: every curated
sample of iteration i is scored against the label it inherited from its seed, with the *same* loss
the classifier is trained with (so "hard for the classifier" means exactly what training would
push on). Samples the classifier gets most wrong are what the generator should produce more of:
they become the `chosen` side of DPO pairs, the samples it gets most right the `rejected` side.

The mean loss and the error rate on these fresh samples are the game's value: as the classifier
catches up with the generator they should fall from one iteration to the next.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json, write_jsonl
from duelguard.layout import Layout
from duelguard.records import read_records, write_records
from duelguard.taxonomy import is_unsafe

# Probabilities are clipped before turning them back into logits: p = 1.0 in float32 would give an
# infinite logit, and the classifier's losses are defined on finite logits.
_PROB_EPS = 1e-6
SCORE_FIELDS = ("loss", "unsafe_score", "pred_unsafe", "correct")
# The generation prompt is identified by these provenance fields of a generated record.
PROMPT_FIELDS = ("template", "task", "seed_text")


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

    Writes layout.scored(iteration) (records + loss, unsafe_score, pred_unsafe, correct) and the
    game value to layout.score_metrics(iteration); returns the same metrics.
    """
    from duelguard.evaluation.evaluate import load_classifier

    if iteration < 1:
        raise ValueError(f"score runs in loop iterations >= 1, got {iteration}")
    clf_dir = layout.classifier_dir(iteration - 1)
    records = read_records(layout.curated(iteration))
    classifier = load_classifier(clf_dir, layout.weights_cache)
    scored = score_records(classifier, records, params.classifier.loss, params.classifier.predict_batch_size)
    write_records(layout.scored(iteration), scored)
    metrics = {
        "iteration": iteration,
        "classifier": str(clf_dir.relative_to(layout.root)) if clf_dir.is_relative_to(layout.root) else str(clf_dir),
        "loss": params.classifier.loss,
        **game_value(scored),
    }
    atomic_write_json(layout.score_metrics(iteration), metrics)
    return metrics


def _group_key(rec: dict[str, Any]) -> tuple[str, str, str, str]:
    """One group = one generation prompt: the same seed, target language, task and template."""
    return (rec["parent_id"], rec["lang"], str(rec.get("task")), str(rec.get("template")))


def select_pairs(scored: Iterable[dict[str, Any]], min_margin: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Choose at most one (chosen, rejected) pair per generation prompt.

    Rule (documented for the issue): samples are grouped by the prompt that generated them (parent
    seed, language, task, template). In each group, `chosen` is the sample with the HIGHEST
    classifier loss (the one the classifier got most wrong: what the generator should make more
    of) and `rejected` the one with the LOWEST loss among the others (the one it got most right).
    A pair is kept only if loss(chosen) - loss(rejected) >= min_margin, so the preference carries
    signal rather than noise (with min_margin 0, equal losses still make a zero-margin pair). Groups with a single
    curated survivor give no pair. Ties are broken by record id (chosen: smallest id among the
    highest losses; rejected: smallest id among the lowest), so the result does not depend on
    file order.

    Returns (pair stubs with the chosen/rejected records, counts by rule).
    """
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in scored:
        if rec.get("parent_id") is None or not isinstance(rec.get("loss"), (int, float)):
            raise DataError(f"record {rec.get('id')!r}: scored synthetic records need parent_id and a numeric loss")
        if not math.isfinite(rec["loss"]):
            raise DataError(f"record {rec['id']!r}: loss is not finite ({rec['loss']})")
        groups[_group_key(rec)].append(rec)
    counts = {"groups": len(groups), "pairs": 0, "dropped_single_survivor": 0, "dropped_below_margin": 0}
    pairs = []
    for key in sorted(groups):
        members = groups[key]
        if len(members) < 2:
            counts["dropped_single_survivor"] += 1
            continue
        chosen = min(members, key=lambda r: (-r["loss"], r["id"]))
        rejected = min((r for r in members if r is not chosen), key=lambda r: (r["loss"], r["id"]))
        margin = chosen["loss"] - rejected["loss"]
        if margin < min_margin:
            counts["dropped_below_margin"] += 1
            continue
        pairs.append({"chosen": chosen, "rejected": rejected, "margin": round(margin, 6)})
    counts["pairs"] = len(pairs)
    return pairs, counts


def generation_prompt(record: dict[str, Any], tokenizer: Any = None) -> str:
    """The exact prompt the generator was given for this sample, re-rendered by duelguard.prompts.

    `tokenizer` (the generator's) is needed only for chat-template records.
    """
    from duelguard.prompts import render

    missing = [f for f in PROMPT_FIELDS if record.get(f) in (None, "")]
    if missing:
        raise DataError(f"record {record['id']!r}: missing generation provenance field(s) {', '.join(missing)}")
    return render(
        tokenizer,
        record["template"],
        record["task"],
        record["seed_text"],
        record["lang"],
        is_unsafe(record["labels"]),
    )


def build_pairs(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `build_pairs`: DPO preference pairs from the scored samples (rule: see select_pairs).

    Each pair line: prompt (the generation prompt, as rendered for generation), template, chosen,
    rejected (sample texts), margin, chosen_loss, rejected_loss, chosen_correct, rejected_correct,
    parent_id, lang, task, seed_text, unsafe, chosen_id, rejected_id. Counts go to
    layout.pairs_metrics(iteration).
    """
    scored = read_records(layout.scored(iteration))
    stubs, counts = select_pairs(scored, params.pairs.min_margin)
    tokenizer = None
    if any(stub["chosen"].get("template") == "chat" for stub in stubs):
        from duelguard.generator import generator_tokenizer

        tokenizer = generator_tokenizer(params, layout)
    rows = []
    for stub in stubs:
        chosen, rejected = stub["chosen"], stub["rejected"]
        rows.append(
            {
                "prompt": generation_prompt(chosen, tokenizer),
                "template": chosen["template"],
                "chosen": chosen["text"],
                "rejected": rejected["text"],
                "margin": stub["margin"],
                "chosen_loss": chosen["loss"],
                "rejected_loss": rejected["loss"],
                "chosen_correct": chosen["correct"],
                "rejected_correct": rejected["correct"],
                "parent_id": chosen["parent_id"],
                "lang": chosen["lang"],
                "task": chosen["task"],
                "seed_text": chosen["seed_text"],
                "unsafe": is_unsafe(chosen["labels"]),
                "chosen_id": chosen["id"],
                "rejected_id": rejected["id"],
            }
        )
    write_jsonl(layout.pairs(iteration), rows)
    per_lang: dict[str, int] = defaultdict(int)
    for row in rows:
        per_lang[row["lang"]] += 1
    metrics = {
        "iteration": iteration,
        "min_margin": params.pairs.min_margin,
        "samples": len(scored),
        **counts,
        # Pairs whose chosen the classifier actually misclassified and whose rejected it got right:
        # the paper's strict reading of "chosen = wrong, rejected = right".
        "pairs_wrong_vs_right": sum(r["chosen_correct"] is False and r["rejected_correct"] is True for r in rows),
        "mean_margin": round(sum(r["margin"] for r in rows) / len(rows), 6) if rows else None,
        "pairs_per_language": dict(sorted(per_lang.items())),
    }
    atomic_write_json(layout.pairs_metrics(iteration), metrics)
    return metrics
