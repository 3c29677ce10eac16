"""Decision thresholds, calibrated after training on the calibration rows (never the reported ones).

A category is flagged when its probability is strictly greater than its threshold, and a text is
unsafe when any category is flagged (the paper: "unsafe if the max probability > threshold", with
one threshold per category; docs/method.md). Rules (`classifier.threshold_rule`):

- fixed:         every category uses `default_threshold` (0.5 in the paper).
- global:        one threshold for all 12 categories: the grid point that maximises the unsafe-class
                 F1 of `max probability > t` (the guardrail's decision) on the calibration rows,
                 among the points whose false-positive rate on their safe rows is at most
                 `max_calib_fpr`, never below `threshold_floor`. One number fitted on a few hundred
                 rows per language is far steadier than 12 fitted on a handful of positives each.
- max_f1:        per category, the grid threshold that maximises that category's F1 on dev; the grid
                 is 0.05, 0.06, ..., 0.95. When several grid points tie at the maximum, the median of
                 them is taken (the middle of the plateau generalises better than its edge).
                 A category without dev positives keeps `default_threshold` (F1 is undefined).
- max_f1_floor:  max_f1, but never below `threshold_floor` (a tiny threshold fitted on a handful of
                 positives floods production with false positives), and categories with fewer than
                 MIN_POSITIVES dev positives keep `default_threshold`.

Per-language calibration (`classifier.language_calibration`, global rule only): the frozen encoder
scores French, Spanish and German unsafe requests lower than English ones, so one threshold fitted on
all languages together misses many of them. Each language then gets its own threshold, fitted the
same way on its own calibration rows, but never above the global one: a language can only be scored
more sensitively, so writing in another language gains an attacker nothing. It travels as a logit
offset per language (language_offsets), which the scoring loop adds to each unit's logits once it
has identified the unit's language (duelguard.classifier.units.shift_by_language): every consumer
keeps comparing scores with the one global threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from duelguard.classifier.units import logit

GRID: np.ndarray = np.round(np.arange(0.05, 0.9501, 0.01), 2)
MIN_POSITIVES = 5
RULES = ("fixed", "global", "max_f1", "max_f1_floor")


def f1_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Binary F1 (duelguard.metrics) with the undefined case (nothing to find or flag) as 0.0."""
    from duelguard.metrics import binary_metrics

    return binary_metrics(np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool))["f1"] or 0.0


def best_f1_threshold(
    probs: np.ndarray, truth: np.ndarray, grid: np.ndarray = GRID, max_fpr: float | None = None
) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `probs > threshold` over `grid`; ties -> median tied point.

    With `max_fpr`, only grid points whose false-positive rate on the negatives is <= max_fpr
    compete (a guardrail that blocks every sensitive-but-safe question scores a fine F1 on a set that
    is mostly unsafe, and is useless); if none qualifies, the point with the lowest FPR is taken."""
    probs, truth = np.asarray(probs), np.asarray(truth, dtype=bool)
    candidates = grid
    if max_fpr is not None and (~truth).any():
        fpr = np.array([float(np.mean(probs[~truth] > t)) for t in grid])
        candidates = grid[fpr <= max_fpr + 1e-12] if (fpr <= max_fpr + 1e-12).any() else grid[fpr == fpr.min()]
    scores = np.array([f1_score(probs > t, truth) for t in candidates])
    best = scores.max()
    tied = candidates[np.isclose(scores, best)]
    return float(tied[(len(tied) - 1) // 2]), float(best)


def calibrate(
    probs: np.ndarray,
    labels: np.ndarray,
    rule: str,
    default_threshold: float = 0.5,
    threshold_floor: float = 0.2,
    max_fpr: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Thresholds (C,) for `rule` from dev probabilities and labels (both (n, C)), plus a report.

    The report holds, per category, the dev positives, the chosen threshold, the dev F1 at it and
    why it was chosen (rule / no_positives / few_positives / floor), for the training metrics.
    """
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; expected one of {RULES}")
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.shape != labels.shape or probs.ndim != 2:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must both be (n, categories)")
    n_cat = probs.shape[1]
    thresholds = np.full(n_cat, default_threshold, dtype=np.float64)
    if rule == "global":
        return _calibrate_global(probs, labels, threshold_floor, max_fpr)
    per_category = []
    for c in range(n_cat):
        positives = int(labels[:, c].sum())
        reason = rule
        if rule != "fixed":
            min_pos = MIN_POSITIVES if rule == "max_f1_floor" else 1
            if positives == 0:
                reason = "no_positives"
            elif positives < min_pos:
                reason = "few_positives"
            else:
                thresholds[c], _ = best_f1_threshold(probs[:, c], labels[:, c])
                if rule == "max_f1_floor" and thresholds[c] < threshold_floor:
                    thresholds[c], reason = threshold_floor, "floor"
        per_category.append(
            {
                "dev_positives": positives,
                "threshold": float(thresholds[c]),
                "dev_f1": f1_score(probs[:, c] > thresholds[c], labels[:, c]),
                "reason": reason,
            }
        )
    return thresholds.astype(np.float32), {"rule": rule, "categories": per_category}


def language_offsets(scores: np.ndarray, truth: np.ndarray, langs: Sequence[str], threshold: float,
                     languages: Sequence[str], floor: float, max_fpr: float | None,
                     context: tuple[np.ndarray, Sequence[str], float] | None = None,
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    """Per language of `languages`: the threshold best_f1_threshold picks on that language's
    calibration rows (unsafe score `scores`, truth, the same FPR ceiling, never below `floor`), capped
    at the global `threshold`, as the offset logit(threshold) - logit(own) >= 0 (0 = the global
    threshold). A language without both safe and unsafe calibration rows keeps 0.

    `context` = (unsafe scores of benign calibration prompts inside benign text, their languages, FPR
    ceiling): a language's own threshold is also kept at or above the lowest grid point that flags no
    more than that share of its benign in-context prompts. Why: an offset raises every scoring unit of
    a text, and a long text has dozens of units, so an offset fitted on short rows alone flagged most
    long benign texts of its language (measured: es in-context FPR 61% with its offset, 12% without).

    Returns the offsets and a report per language (rows, unsafe rows, threshold, offset, why,
    calibration F1 at the global and at its own threshold, and with `context` its bound and the
    in-context FPR at its own threshold)."""
    scores, truth, langs = np.asarray(scores), np.asarray(truth, dtype=bool), np.asarray(langs)
    offsets: dict[str, float] = {}
    report: dict[str, Any] = {}
    for lang in languages:
        rows = langs == lang
        s, y = scores[rows], truth[rows]
        ctx = None if context is None else np.asarray(context[0])[np.asarray(context[1]) == lang]
        bound = context_bound(ctx, context[2]) if ctx is not None and len(ctx) else None
        own, reason = threshold, "no_safe_and_unsafe_rows"
        if y.any() and not y.all():
            fitted, _ = best_f1_threshold(s, y, max_fpr=max_fpr)
            own, reason = max(fitted, floor), "fitted"
            if bound is not None and bound > own:
                own, reason = bound, "context_bound"
            if own >= threshold:
                own, reason = threshold, "global_is_lower"
        offsets[lang] = round(max(0.0, float(logit(threshold) - logit(own))), 6)
        report[lang] = {"rows": int(rows.sum()), "unsafe": int(y.sum()), "threshold": float(own), "offset": offsets[lang],
                        "reason": reason,
                        "calib_f1_global": f1_score(s > threshold, y) if rows.any() else None,
                        "calib_f1_own": f1_score(s > own, y) if rows.any() else None}
        if ctx is not None:
            report[lang]["context_rows"] = int(len(ctx))
            report[lang]["context_bound"] = bound
            report[lang]["context_fpr_own"] = float(np.mean(ctx > own)) if len(ctx) else None
    return offsets, report


def context_bound(benign_scores: np.ndarray, max_fpr: float) -> float:
    """The lowest grid threshold at which at most `max_fpr` of `benign_scores` lie above it."""
    fpr = np.array([float(np.mean(benign_scores > t)) for t in GRID])
    return float(GRID[np.argmax(fpr <= max_fpr + 1e-12)]) if (fpr <= max_fpr + 1e-12).any() else float(GRID[-1])


def _calibrate_global(probs: np.ndarray, labels: np.ndarray, floor: float,
                      max_fpr: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """One threshold on the unsafe score (max probability) for every category."""
    truth = labels.any(axis=1)
    if truth.all() or not truth.any():
        raise ValueError("global calibration needs both safe and unsafe calibration rows")
    score = probs.max(axis=1)
    threshold, f1 = best_f1_threshold(score, truth, max_fpr=max_fpr)
    reason = "global"
    if threshold < floor:
        threshold, reason = floor, "floor"
    f1 = f1_score(score > threshold, truth)
    report = {"rule": "global", "threshold": threshold, "calib_f1": f1, "reason": reason, "max_fpr": max_fpr,
              "calib_fpr": float(np.mean(score[~truth] > threshold)),
              "calib_rows": int(len(truth)), "calib_unsafe": int(truth.sum())}
    return np.full(probs.shape[1], threshold, dtype=np.float32), report


def recall_floor_offsets(offsets: dict[str, float], threshold: float,
                         unsafe: dict[str, tuple[np.ndarray, Sequence[str]]], floor: dict[str, dict[str, float]],
                         threshold_floor: float) -> tuple[dict[str, float], dict[str, Any]]:
    """The fail-open rule enforced where thresholds are set: each language of `floor`'s sets keeps its
    own threshold (from `offsets` under the global `threshold`) if that already finds at least
    floor[set][lang] of its unsafe prompts in every set, else takes the highest grid point that does,
    never under `threshold_floor` (the offset can only grow: a language is only ever scored more
    sensitively). `unsafe` = set -> (raw unsafe scores of the calibration side's unsafe prompts in that
    set, their languages). A language no grid point lifts to its floor gets `threshold_floor`
    ("unreachable"): it finds as many as this model can above the floor.

    Why: promotion refuses a candidate that finds fewer unsafe prompts inside long text than the
    champion (promotion.max_guard_recall_drop), and language_offsets fits on short rows, so a loop model
    that ranks better could still be calibrated into failing open in long text and never promoted.

    Returns the new offsets and a report per language (threshold before and after, the floor and the
    recall reached per set, why)."""
    from duelguard.classifier.units import logit

    out, report = dict(offsets), {}
    languages = sorted({lang for per_set in floor.values() for lang in per_set})
    for lang in languages:
        own = float(1 / (1 + np.exp(-(logit(threshold) - offsets.get(lang, 0.0)))))
        scores = {name: np.asarray(s)[np.asarray(langs) == lang] for name, (s, langs) in unsafe.items()}
        need = {name: floor[name][lang] for name in unsafe if lang in floor.get(name, {}) and len(scores[name])}

        def reaches(t: float) -> bool:
            return all(float(np.mean(scores[name] > t)) >= need[name] - 1e-12 for name in need)

        new, reason = own, "kept"
        if not reaches(own):
            keeps = [float(t) for t in GRID if threshold_floor <= t < own and reaches(float(t))]
            new, reason = (max(keeps), "lowered") if keeps else (min(threshold_floor, own), "unreachable")
        out[lang] = round(max(offsets.get(lang, 0.0), float(logit(threshold) - logit(new))), 6)
        report[lang] = {"threshold_before": round(own, 4), "threshold": round(new, 4), "offset": out[lang], "reason": reason,
                        "floor": {name: round(v, 4) for name, v in need.items()},
                        "recall": {name: round(float(np.mean(scores[name] > new)), 4) for name in need}}
    return out, report
