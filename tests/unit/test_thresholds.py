"""Per-category threshold calibration rules."""

from __future__ import annotations

import numpy as np
import pytest

from duelguard.classifier.thresholds import best_f1_threshold, calibrate, f1_score


def test_f1_score() -> None:
    assert f1_score(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    assert f1_score(np.zeros(3, bool), np.zeros(3)) == 0.0


def test_max_f1_picks_the_known_threshold() -> None:
    # Positives score 0.30-0.40, negatives up to 0.25 except one at 0.35: the best cut is just
    # below the lowest positive with that one negative unavoidable -> F1-optimal plateau is
    # (0.25, 0.30) on the grid: 0.25..0.29 give F1 = 2*4/(5+4) ; median of 0.25..0.29 is 0.27.
    probs = np.array([0.30, 0.33, 0.36, 0.40, 0.35, 0.25, 0.10, 0.05, 0.20])
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    threshold, f1 = best_f1_threshold(probs, truth)
    assert threshold == pytest.approx(0.27)
    assert f1 == pytest.approx(8 / 9)


def _dev_set() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 200
    labels = np.zeros((n, 12), dtype=int)
    probs = rng.uniform(0.0, 0.1, size=(n, 12))
    labels[:40, 0] = 1
    probs[:40, 0] = 0.15  # category 0: positives at 0.15, negatives < 0.1 -> max_f1 below the floor
    labels[:3, 1] = 1
    probs[:3, 1] = 0.9  # category 1: only 3 positives
    labels[50:80, 2] = 1
    probs[50:80, 2] = 0.7
    probs[80:90, 2] = 0.5  # category 2: negatives at 0.5 -> optimal cut in [0.5, 0.7)
    return probs, labels


def test_fixed_rule_uses_default() -> None:
    probs, labels = _dev_set()
    thresholds, report = calibrate(probs, labels, "fixed", default_threshold=0.5)
    assert thresholds.tolist() == [0.5] * 12 and report["rule"] == "fixed"


def test_max_f1_and_floor_rules() -> None:
    probs, labels = _dev_set()
    t_max, _ = calibrate(probs, labels, "max_f1", 0.5, 0.2)
    assert 0.1 <= t_max[0] < 0.15
    assert 0.5 <= t_max[2] < 0.7
    assert t_max[1] < 0.9  # 3 positives are enough for plain max_f1
    assert t_max[5] == pytest.approx(0.5)  # no positives -> default

    t_floor, report = calibrate(probs, labels, "max_f1_floor", 0.5, 0.2)
    cats = report["categories"]
    assert t_floor[0] == pytest.approx(0.2) and cats[0]["reason"] == "floor"
    assert t_floor[1] == pytest.approx(0.5) and cats[1]["reason"] == "few_positives"
    assert t_floor[2] == pytest.approx(t_max[2]) and cats[2]["dev_f1"] == pytest.approx(1.0)
    assert cats[5]["reason"] == "no_positives" and cats[0]["dev_positives"] == 40


def test_calibrate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown threshold rule"):
        calibrate(np.zeros((2, 12)), np.zeros((2, 12)), "magic")
    with pytest.raises(ValueError, match="must both be"):
        calibrate(np.zeros((2, 12)), np.zeros((3, 12)), "max_f1")


def test_fpr_ceiling_trades_recall_for_fewer_false_positives() -> None:
    """Mostly-unsafe rows: plain max-F1 flags everything; under an FPR ceiling the threshold rises."""
    truth = np.array([True] * 8 + [False] * 4)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.35, 0.3, 0.25, 0.2, 0.4, 0.3, 0.1, 0.05])
    free, _ = best_f1_threshold(scores, truth)
    capped, f1 = best_f1_threshold(scores, truth, max_fpr=0.0)
    assert free < 0.2 and 0.4 <= capped < 0.6  # flags 0.6..0.9 and none of the safe rows
    assert f1 == pytest.approx(2 * 4 / (2 * 4 + 4))
    assert np.mean(scores[~truth] > capped) == 0.0
    # a safe row above every unsafe one: only thresholds over it meet the ceiling, whatever the recall
    worst = np.array([0.1, 0.2, 0.9])
    threshold, f1 = best_f1_threshold(worst, np.array([True, True, False]), max_fpr=0.0)
    assert threshold >= 0.9 and f1 == 0.0


def test_global_rule_reports_its_calibration_fpr() -> None:
    probs = np.zeros((12, 12))
    probs[:, 3] = [0.9, 0.8, 0.7, 0.6, 0.35, 0.3, 0.25, 0.2, 0.4, 0.3, 0.1, 0.05]
    labels = np.zeros((12, 12), dtype=int)
    labels[:8, 3] = 1
    thresholds, report = calibrate(probs, labels, "global", threshold_floor=0.2, max_fpr=0.0)
    assert len(set(thresholds.tolist())) == 1 and report["calib_fpr"] == 0.0 and report["max_fpr"] == 0.0


def test_language_offsets_lower_a_language_threshold_and_never_raise_one() -> None:
    from duelguard.classifier.thresholds import language_offsets, logit

    rng = np.random.default_rng(0)
    # English rows need a threshold above the global one, French unsafe rows score lower: one threshold misses them.
    en_u, en_s = rng.uniform(0.87, 1.0, 40), rng.uniform(0.0, 0.85, 40)
    fr_u, fr_s = rng.uniform(0.45, 0.7, 40), rng.uniform(0.0, 0.35, 40)
    de_s = rng.uniform(0.0, 0.9, 20)  # German: safe rows only
    scores = np.concatenate([en_u, en_s, fr_u, fr_s, de_s])
    truth = np.array([True] * 40 + [False] * 40 + [True] * 40 + [False] * 60)
    langs = ["en"] * 80 + ["fr"] * 80 + ["de"] * 20
    offsets, report = language_offsets(scores, truth, langs, threshold=0.75, languages=["en", "fr", "de", "es"],
                                       floor=0.2, max_fpr=0.1)
    assert offsets["en"] == 0.0 and report["en"]["reason"] == "global_is_lower"  # never less sensitive
    assert offsets["fr"] > 0 and report["fr"]["threshold"] < 0.75
    assert offsets["fr"] == pytest.approx(logit(0.75) - logit(report["fr"]["threshold"]), abs=1e-6)
    assert report["fr"]["calib_f1_own"] > report["fr"]["calib_f1_global"]
    assert offsets["de"] == 0.0 and report["de"]["reason"] == "no_safe_and_unsafe_rows"
    assert offsets["es"] == 0.0 and report["es"]["rows"] == 0
    # The floor holds: a language whose rows would want a threshold under it gets the floor.
    low, rep = language_offsets(np.array([0.05, 0.06, 0.01, 0.0]), np.array([True, True, False, False]),
                                ["fr"] * 4, threshold=0.5, languages=["fr"], floor=0.2, max_fpr=0.0)
    assert rep["fr"]["threshold"] == 0.2 and low["fr"] == pytest.approx(logit(0.5) - logit(0.2), abs=1e-6)


def test_benign_prompts_in_context_bound_a_language_offset() -> None:
    """French short rows want a threshold of ~0.4, but 30% of French benign prompts inside long text score
    0.5-0.6: at 0.4 they would all be flagged. With a 10% in-context ceiling the French threshold rises to
    the lowest grid point that flags at most 10% of them; without the context, the short rows decide."""
    from duelguard.classifier.thresholds import language_offsets

    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.uniform(0.45, 0.7, 40), rng.uniform(0.0, 0.35, 40)])
    truth = np.array([True] * 40 + [False] * 40)
    langs = ["fr"] * 80
    plain, plain_report = language_offsets(scores, truth, langs, 0.8, ["fr"], floor=0.2, max_fpr=0.1)
    ctx = np.concatenate([rng.uniform(0.5, 0.6, 30), rng.uniform(0.0, 0.3, 70)])
    ctx_langs = ["fr"] * 100 + ["en"] * 5
    ctx_scores = np.concatenate([ctx, np.full(5, 0.99)])  # other languages' rows do not bind French
    bound, report = language_offsets(scores, truth, langs, 0.8, ["fr"], floor=0.2, max_fpr=0.1,
                                     context=(ctx_scores, ctx_langs, 0.1))
    assert plain_report["fr"]["reason"] == "fitted" and plain_report["fr"]["threshold"] < 0.45
    assert report["fr"]["reason"] == "context_bound" and 0.5 <= report["fr"]["threshold"] <= 0.6
    assert report["fr"]["context_rows"] == 100 and report["fr"]["context_fpr_own"] <= 0.1
    assert report["fr"]["context_bound"] == report["fr"]["threshold"]
    assert float(np.mean(ctx > report["fr"]["threshold"] - 0.01)) > 0.1  # the lowest such grid point
    assert 0 < bound["fr"] < plain["fr"]
    # a bound above the global threshold leaves the language at the global one (offset 0), never above
    capped, rep = language_offsets(scores, truth, langs, 0.52, ["fr"], floor=0.2, max_fpr=0.1,
                                   context=(ctx_scores, ctx_langs, 0.1))
    assert capped["fr"] == 0.0 and rep["fr"]["reason"] == "global_is_lower"


def test_recall_floor_lowers_a_language_until_it_finds_its_share_in_every_set() -> None:
    """French finds 50% of its unsafe prompts in context at its own threshold (0.6) where the floor asks
    70%: its threshold drops to the highest grid point that finds 70% in both sets. English already finds
    its share and keeps its threshold; German cannot reach its floor above threshold_floor and gets it."""
    from duelguard.classifier.thresholds import logit, recall_floor_offsets

    ctx = np.array([0.9, 0.8, 0.7, 0.65, 0.55, 0.5, 0.45, 0.4, 0.3, 0.2] + [0.95] * 4 + [0.1, 0.12, 0.15, 0.05])
    cut = np.array([0.9, 0.8, 0.7, 0.62, 0.52, 0.48, 0.42, 0.35, 0.3, 0.2] + [0.95] * 4 + [0.1, 0.12, 0.15, 0.05])
    langs = ["fr"] * 10 + ["en"] * 4 + ["de"] * 4
    offsets = {"en": 0.0, "fr": round(float(logit(0.8) - logit(0.6)), 6), "de": 0.5}
    floor = {"ctx": {"fr": 0.7, "en": 1.0, "de": 0.5}, "cut": {"fr": 0.7, "en": 1.0, "de": 0.5}}
    out, report = recall_floor_offsets(offsets, 0.8, {"ctx": (ctx, langs), "cut": (cut, langs)}, floor, threshold_floor=0.2)
    # 7 of 10 French scores above t needs t < 0.45 (ctx) and t < 0.42 (cut): the highest grid point is 0.41
    assert report["fr"]["threshold_before"] == pytest.approx(0.6, abs=1e-4)
    assert report["fr"]["reason"] == "lowered" and report["fr"]["threshold"] == 0.41
    assert report["fr"]["recall"] == {"ctx": 0.7, "cut": 0.7} and report["fr"]["floor"] == {"ctx": 0.7, "cut": 0.7}
    assert out["fr"] == pytest.approx(logit(0.8) - logit(0.41), abs=1e-5) and out["fr"] > offsets["fr"]
    assert report["en"]["reason"] == "kept" and out["en"] == 0.0
    assert report["de"]["reason"] == "unreachable" and report["de"]["threshold"] == 0.2
    assert out["de"] == pytest.approx(logit(0.8) - logit(0.2), abs=1e-5)
    # never less sensitive than before: a floor met at the own threshold leaves the offset as it was
    same, _ = recall_floor_offsets(offsets, 0.8, {"ctx": (ctx, langs)}, {"ctx": {"fr": 0.1}}, 0.2)
    assert same["fr"] == offsets["fr"] and same["de"] == offsets["de"]
