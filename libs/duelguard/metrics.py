"""Guardrail metrics in plain numpy, so every figure can be checked by hand in a unit test.

Conventions (the paper's): the positive class is "unsafe". A record is truly unsafe when any of its
12 labels is on; the model calls it unsafe when any category probability exceeds that category's
threshold, and its `unsafe_score` (for ranking metrics such as AUPRC) is the maximum probability.

A metric that is undefined on the given data is None, never a made-up 0 or NaN: recall and AUPRC
need at least one positive, FPR at least one negative, F1 needs a positive or a predicted positive.
None keeps JSON valid and makes averages skip the slice instead of being dragged down by it.
Precision with no predicted positives is 0.0 when positives exist (nothing was caught), as in
scikit-learn's zero_division=0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from duelguard.taxonomy import CATEGORIES


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def binary_metrics(y_true: Sequence[bool] | np.ndarray, y_pred: Sequence[bool] | np.ndarray) -> dict[str, Any]:
    """Counts plus precision, recall, F1 and false-positive rate of the positive class."""
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d of equal length, got {t.shape} and {p.shape}")
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    fn = int(np.sum(t & ~p))
    tn = int(np.sum(~t & ~p))
    n_pos, n_neg = tp + fn, fp + tn
    if tp + fp > 0:
        precision: float | None = tp / (tp + fp)
    else:
        precision = 0.0 if n_pos > 0 else None
    return {
        "n": n_pos + n_neg,
        "n_pos": n_pos,
        "n_neg": n_neg,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": _ratio(tp, n_pos),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fpr": _ratio(fp, n_neg),
    }


def precision_recall_curve(
    y_true: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest threshold first.

    Point k predicts positive every example with score >= thresholds[k]; tied scores enter together
    (one point per distinct score), so the curve does not depend on the order of ties.
    """
    t = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if t.shape != s.shape or t.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-d of equal length, got {t.shape} and {s.shape}")
    if t.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(t_sorted)[last_of_tie]
    predicted = last_of_tie + 1
    n_pos = int(t.sum())
    precision = tps / predicted
    recall = tps / n_pos if n_pos > 0 else np.zeros_like(tps, dtype=np.float64)
    return precision.astype(np.float64), recall.astype(np.float64), s_sorted[last_of_tie]


def average_precision(y_true: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    """AUPRC as step-wise average precision: sum over thresholds of (R_k - R_{k-1}) * P_k.

    No interpolation (the trapezoid over-states PR area); None when there is no positive.
    """
    t = np.asarray(y_true, dtype=bool)
    if t.sum() == 0:
        return None
    precision, recall, _ = precision_recall_curve(t, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(y_true: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random unsafe row outscores a random safe one (ties
    count half), from average ranks. Threshold-free, so a gain in ranking is told apart from a moved
    threshold. None when either class is absent."""
    t = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = int(t.sum()), int((~t).sum())
    if pos == 0 or neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based ranks, ties sharing their average
    return float((ranks[t].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def unsafe_predictions(probs: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unsafe: bool (n,), unsafe_score: float (n,)) from (n, 12) probabilities and 12 thresholds."""
    probs = np.asarray(probs, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != thr.shape[0]:
        raise ValueError(f"probabilities {probs.shape} do not match {thr.shape[0]} thresholds")
    if probs.shape[0] == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    return (probs > thr).any(axis=1), probs.max(axis=1)


def per_category_f1(labels: np.ndarray, probs: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """F1 of each category's own decision (prob > its threshold) against its own label."""
    labels = np.asarray(labels, dtype=bool)
    decisions = np.asarray(probs, dtype=np.float64) > np.asarray(thresholds, dtype=np.float64)
    return {cat: binary_metrics(labels[:, i], decisions[:, i])["f1"] for i, cat in enumerate(CATEGORIES)}


def _flagged_unsafe_tops(labels: np.ndarray, probs: np.ndarray, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label rows of the unsafe rows the guard flags, and each one's highest-scoring category."""
    labels = np.asarray(labels, dtype=bool).reshape(-1, len(CATEGORIES))
    rows = np.asarray(flagged, dtype=bool) & labels.any(axis=1)
    return labels[rows], np.asarray(probs, dtype=np.float64).reshape(-1, len(CATEGORIES))[rows].argmax(axis=1)


def category_accuracy(labels: np.ndarray, probs: np.ndarray, flagged: np.ndarray) -> float | None:
    """Of the unsafe rows the guard flags, the share whose highest-scoring category is one they carry:
    whether the category a guard reports names what the prompt is. Per-category F1 mixes that with
    each category's own threshold; a gateway acts on the flag and shows its top category. None when
    no unsafe row is flagged."""
    own, tops = _flagged_unsafe_tops(labels, probs, flagged)
    return float(own[np.arange(len(tops)), tops].mean()) if len(tops) else None


def category_confusion_counts(labels: np.ndarray, probs: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """(12, 12) counts over the unsafe rows the guard flags: row = the row's own category (its first
    label), column = its highest-scoring category. The diagonal over the total is close to
    category_accuracy, which also counts a top category that is any of a row's labels."""
    own, tops = _flagged_unsafe_tops(labels, probs, flagged)
    counts = np.zeros((len(CATEGORIES), len(CATEGORIES)), dtype=np.int64)
    np.add.at(counts, (own.argmax(axis=1), tops), 1)
    return counts


def guard_metrics(labels: np.ndarray, probs: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Every metric of one slice: unsafe-class counts, P/R/F1/FPR, AUPRC, per-category F1 and the
    category accuracy of the unsafe rows it flags."""
    labels = np.asarray(labels, dtype=bool).reshape(-1, len(CATEGORIES))
    truth = labels.any(axis=1)
    unsafe, score = unsafe_predictions(np.asarray(probs).reshape(-1, len(CATEGORIES)), thresholds)
    out = binary_metrics(truth, unsafe)
    out["auprc"] = average_precision(truth, score)
    out["auroc"] = auroc(truth, score)
    out["per_category_f1"] = per_category_f1(labels, probs, thresholds)
    out["category_accuracy"] = category_accuracy(labels, probs, unsafe)
    return out


def mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are defined (not None); None when none are."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _f1_resampled(weights: np.ndarray, truth: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """F1 of the positive class under each row of `weights` (resample counts, shape (B, n)); nan if undefined."""
    tp = weights @ (truth & flagged).astype(np.float64)
    errors = weights @ (truth != flagged).astype(np.float64)  # fp + fn
    return np.where(2 * tp + errors > 0, 2 * tp / np.maximum(2 * tp + errors, 1.0), np.nan)


def paired_bootstrap_f1(truth: np.ndarray, groups: np.ndarray, baseline: np.ndarray, candidate: np.ndarray,
                        resamples: int = 4000, seed: int = 0,
                        clusters: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Candidate - baseline F1 per group (language), resampling each group's rows with replacement, the same
    resample for both decisions (paired). Why: the suite's report half holds 126 prompts per language, where
    one prompt moves F1 by 1-2 points; a gain is only worth reporting with how much the draw of prompts
    could move it.

    Per group: both point F1s and their difference (fractions), the difference's 95% percentile interval,
    and `share_not_better`, the share of resamples where the candidate's F1 is not above the baseline's.
    `deltas` holds each group's resampled differences (same resample index across groups: average them
    for a mean over groups). `clusters`: rows that are one item (a prompt at several context lengths) are
    drawn together, so that three copies of a prompt do not count as three pieces of evidence."""
    truth, groups = np.asarray(truth, dtype=bool), np.asarray(groups)
    clusters = np.arange(len(truth)) if clusters is None else np.asarray(clusters)
    baseline, candidate = np.asarray(baseline, dtype=bool), np.asarray(candidate, dtype=bool)
    if not truth.shape == groups.shape == baseline.shape == candidate.shape == clusters.shape or truth.ndim != 1:
        raise ValueError(f"truth, groups, decisions and clusters must be 1-d of equal length, got {truth.shape}, "
                         f"{groups.shape}, {baseline.shape}, {candidate.shape}, {clusters.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(groups.tolist()):
        idx = np.flatnonzero(groups == group)
        t, b, c = truth[idx], baseline[idx], candidate[idx]
        _, item = np.unique(clusters[idx], return_inverse=True)
        k = int(item.max()) + 1
        weights = rng.multinomial(k, np.full(k, 1.0 / k), size=resamples)[:, item].astype(np.float64)
        deltas = _f1_resampled(weights, t, c) - _f1_resampled(weights, t, b)
        point_b, point_c = binary_metrics(t, b)["f1"], binary_metrics(t, c)["f1"]
        lo, hi = np.nanpercentile(deltas, [2.5, 97.5]) if np.isfinite(deltas).any() else (np.nan, np.nan)
        out[str(group)] = {
            "n": len(idx), "items": k, "positives": int(t.sum()), "baseline_f1": point_b, "candidate_f1": point_c,
            "delta": None if point_b is None or point_c is None else point_c - point_b,
            "delta_ci95": (float(lo), float(hi)), "share_not_better": float(np.mean(~(deltas > 0))),
            "decided_differently": int((b != c).sum()), "deltas": deltas,
        }
    return out
