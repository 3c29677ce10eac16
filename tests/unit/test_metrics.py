"""Guardrail metrics against hand-computed values, including the degenerate slices."""

from __future__ import annotations

import numpy as np
import pytest

from duelguard import metrics as M
from duelguard.evalset import eval_set_hash
from duelguard.evaluation.evaluate import split_report
from duelguard.taxonomy import CATEGORIES


def test_binary_metrics_by_hand() -> None:
    # truth:  1 1 1 0 0 0 0 ; pred: 1 1 0 1 0 0 0  -> tp=2 fn=1 fp=1 tn=3
    m = M.binary_metrics([1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0])
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 3)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 4)


def test_binary_metrics_degenerate() -> None:
    no_pos = M.binary_metrics([0, 0, 0], [0, 1, 0])
    assert no_pos["recall"] is None and no_pos["precision"] == 0.0 and no_pos["f1"] == 0.0
    assert no_pos["fpr"] == pytest.approx(1 / 3)
    nothing = M.binary_metrics([0, 0], [0, 0])
    assert nothing["f1"] is None and nothing["precision"] is None and nothing["fpr"] == 0.0
    missed = M.binary_metrics([1, 1], [0, 0])
    assert missed["precision"] == 0.0 and missed["recall"] == 0.0 and missed["f1"] == 0.0 and missed["fpr"] is None
    with pytest.raises(ValueError):
        M.binary_metrics([1, 0], [1])


def test_average_precision_by_hand() -> None:
    # ranked: 0.9(+) 0.8(-) 0.7(+) 0.1(-): AP = 1/2*1 + 1/2*(2/3) = 5/6
    assert M.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    # perfect ranking
    assert M.average_precision([0, 1, 1], [0.1, 0.5, 0.6]) == pytest.approx(1.0)
    # worst ranking: positive last of 4 -> precision 1/4 at recall 1
    assert M.average_precision([1, 0, 0, 0], [0.0, 0.3, 0.2, 0.1]) == pytest.approx(0.25)


def test_auroc_by_hand_with_ties_and_degenerate_cases() -> None:
    assert M.auroc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered
    assert M.auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert M.auroc([1, 1, 0], [0.2, 0.9, 0.1]) == pytest.approx(1.0)
    assert M.auroc([0, 1], [0.9, 0.1]) == pytest.approx(0.0)
    assert M.auroc([1, 1], [0.1, 0.2]) is None and M.auroc([0, 0], [0.1, 0.2]) is None
    rng = np.random.default_rng(0)
    truth, scores = rng.random(200) < 0.3, rng.random(200)
    pairs = [(a > b) + 0.5 * (a == b) for a in scores[truth] for b in scores[~truth]]
    assert M.auroc(truth, scores) == pytest.approx(np.mean(pairs))


def test_average_precision_degenerate() -> None:
    assert M.average_precision([0, 0, 0], [0.2, 0.5, 0.9]) is None
    # all scores equal: one threshold, AP = prevalence, regardless of order
    assert M.average_precision([1, 0, 0, 1, 0], [0.5] * 5) == pytest.approx(0.4)
    assert M.average_precision([0, 0, 1, 1, 0], [0.5] * 5) == pytest.approx(0.4)
    # ties enter together: (0.9+,0.9-) then 0.1+ -> 1/2*(1/2) + 1/2*(2/3)
    assert M.average_precision([1, 0, 1], [0.9, 0.9, 0.1]) == pytest.approx(0.25 + 1 / 3)


def test_precision_recall_curve_points() -> None:
    precision, recall, thr = M.precision_recall_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(thr, [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0, 1.0])


def _probs(rows: list[dict[int, float]]) -> np.ndarray:
    out = np.zeros((len(rows), len(CATEGORIES)))
    for i, row in enumerate(rows):
        for j, v in row.items():
            out[i, j] = v
    return out


def test_unsafe_is_any_category_above_its_threshold() -> None:
    thresholds = np.full(len(CATEGORIES), 0.5)
    thresholds[8] = 0.9  # hate needs 0.9
    probs = _probs([{8: 0.8}, {8: 0.95}, {0: 0.51}, {}])
    unsafe, score = M.unsafe_predictions(probs, thresholds)
    assert unsafe.tolist() == [False, True, True, False]
    np.testing.assert_allclose(score, [0.8, 0.95, 0.51, 0.0])


def test_per_category_f1_and_split_report() -> None:
    thresholds = np.full(len(CATEGORIES), 0.5)
    labels = np.zeros((4, len(CATEGORIES)), dtype=int)
    labels[0, 8] = 1  # en hate, caught
    labels[1, 0] = 1  # fr violent, predicted as hate: unsafe caught, wrong category
    probs = _probs([{8: 0.9}, {8: 0.7}, {8: 0.6}, {}])  # row 2: fr benign flagged (FP); row 3 en benign
    per_cat = M.per_category_f1(labels, probs, thresholds)
    assert per_cat["hate"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 0))  # tp=1 fp=2 fn=0
    assert per_cat["violent_crimes"] == 0.0  # tp=0 fn=1
    assert per_cat["privacy"] is None  # never labelled, never predicted

    records = [
        {"id": "a", "lang": "en", "source": "s1", "labels": labels[0].tolist()},
        {"id": "b", "lang": "fr", "source": "s1", "labels": labels[1].tolist()},
        {"id": "c", "lang": "fr", "source": "s2", "labels": labels[2].tolist()},
        {"id": "d", "lang": "en", "source": "s2", "labels": labels[3].tolist()},
    ]
    report = split_report(records, probs, thresholds)
    s = report["summary"]
    assert s["f1"] == pytest.approx(0.8)  # tp=2 fp=1 fn=0
    assert s["fpr"] == pytest.approx(0.5)
    assert s["f1_en"] == pytest.approx(1.0) and s["f1_fr"] == pytest.approx(2 / 3)
    assert s["avg_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert s["fpr_en"] == 0.0 and s["fpr_fr"] == 1.0
    assert set(report["detail"]["by_language_source"]) == {"en/s1", "en/s2", "fr/s1", "fr/s2"}
    assert report["detail"]["by_source"]["s2"]["recall"] is None  # no positives in s2
    # category accuracy: of the flagged unsafe rows (0 and 1), row 0's top category is its own, row 1's is not
    assert s["category_accuracy"] == pytest.approx(0.5)
    assert s["category_accuracy_en"] == 1.0 and s["category_accuracy_fr"] == 0.0
    assert report["detail"]["by_source"]["s2"]["category_accuracy"] is None  # no unsafe row flagged there
    assert eval_set_hash(records) == eval_set_hash(list(reversed(records)))
    assert eval_set_hash(records) != eval_set_hash(records[:3])


def test_category_accuracy_counts_flagged_unsafe_rows_only() -> None:
    labels = np.zeros((4, len(CATEGORIES)), dtype=int)
    labels[0, [0, 8]] = 1  # violent + hate: a top category of either counts
    labels[1, 3] = 1
    labels[2, 5] = 1  # unsafe but not flagged: not counted whatever its top category
    probs = _probs([{8: 0.9, 0: 0.6}, {10: 0.8, 3: 0.7}, {5: 0.9}, {1: 0.99}])  # row 3: benign, flagged
    flagged = np.array([True, True, False, True])
    assert M.category_accuracy(labels, probs, flagged) == pytest.approx(0.5)  # row 0 right, row 1 wrong
    assert M.category_accuracy(labels, probs, np.zeros(4, dtype=bool)) is None
    counts = M.category_confusion_counts(labels, probs, flagged)
    assert counts.sum() == 2  # the flagged unsafe rows: 0 and 1
    assert counts[0, 8] == 1  # row 0: own (first) category violent_crimes, reported hate
    assert counts[3, 10] == 1  # row 1: child_sexual_exploitation reported as sexual_content


def test_category_confusion_plot_is_written(tmp_path) -> None:
    from duelguard.evaluation import plots

    labels = np.zeros((3, len(CATEGORIES)), dtype=int)
    labels[0, 8] = labels[1, 0] = 1
    probs = _probs([{8: 0.9}, {8: 0.8}, {}])
    path = plots.category_confusion(labels, probs, np.array([True, True, False]), {"en": 1.0, "fr": 0.0},
                                    "suite", tmp_path / "confusion.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mean_defined_skips_undefined() -> None:
    assert M.mean_defined([0.5, None, 1.0]) == pytest.approx(0.75)
    assert M.mean_defined([None]) is None


def test_eval_sample_is_frozen_by_id_not_file_order(tmp_path) -> None:
    from duelguard.evalset import eval_sample
    from duelguard.records import write_records

    def rec(i: int, lang: str) -> dict:
        return {"id": f"r{i}-{lang}", "text": f"text {i}", "lang": lang, "labels": [0] * len(CATEGORIES),
                "source": "s", "split": "test", "origin": "seed", "iteration": 0, "parent_id": None}

    rows = [rec(i, lang) for i in range(20) for lang in ("en", "fr")]
    write_records(tmp_path / "a.jsonl", rows)
    write_records(tmp_path / "b.jsonl", list(reversed(rows)))
    a, b = eval_sample(tmp_path / "a.jsonl", 5), eval_sample(tmp_path / "b.jsonl", 5)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert sum(r["lang"] == "en" for r in a) == 5 and sum(r["lang"] == "fr" for r in a) == 5
    assert len(eval_sample(tmp_path / "a.jsonl", None)) == 40


def _two_languages() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.45
    return truth, np.asarray(["fr"] * 100 + ["de"] * 100)


def test_paired_bootstrap_of_a_model_against_itself_is_exactly_zero() -> None:
    truth, langs = _two_languages()
    decided = truth ^ (np.random.default_rng(1).random(200) < 0.3)
    out = M.paired_bootstrap_f1(truth, langs, decided, decided, resamples=500, seed=3)
    assert set(out) == {"fr", "de"}
    for lang, idx in (("fr", slice(0, 100)), ("de", slice(100, 200))):
        assert out[lang]["baseline_f1"] == out[lang]["candidate_f1"] == M.binary_metrics(truth[idx], decided[idx])["f1"]
        assert out[lang]["delta"] == 0.0 and out[lang]["delta_ci95"] == (0.0, 0.0)
        assert out[lang]["share_not_better"] == 1.0 and out[lang]["decided_differently"] == 0


def test_paired_bootstrap_separates_a_real_gain_from_a_draw() -> None:
    truth, langs = _two_languages()
    rng = np.random.default_rng(2)
    baseline = truth ^ (rng.random(200) < 0.35)
    better = baseline.copy()
    better[:100] = truth[:100]                 # French: every row right
    de_rows = np.flatnonzero(langs == "de")[:2]  # German: two rows flipped, a small change either way
    better[de_rows] = ~better[de_rows]
    out = M.paired_bootstrap_f1(truth, langs, baseline, better, resamples=2000, seed=5)
    assert out["fr"]["delta"] > 0.2 and out["fr"]["delta_ci95"][0] > 0 and out["fr"]["share_not_better"] == 0.0
    lo, hi = out["de"]["delta_ci95"]
    assert lo < 0 < hi and lo <= out["de"]["delta"] <= hi  # two rows: the interval straddles zero
    assert 0 < out["de"]["share_not_better"] < 1 and out["de"]["decided_differently"] == 2
    assert out["fr"]["deltas"].shape == (2000,)
    # same seed, same intervals: a rerun reproduces the report
    again = M.paired_bootstrap_f1(truth, langs, baseline, better, resamples=2000, seed=5)
    assert again["de"]["delta_ci95"] == out["de"]["delta_ci95"]


def test_paired_bootstrap_rejects_mismatched_input() -> None:
    truth, langs = _two_languages()
    with pytest.raises(ValueError, match="equal length"):
        M.paired_bootstrap_f1(truth, langs[:-1], truth, truth)
    with pytest.raises(ValueError, match="resamples"):
        M.paired_bootstrap_f1(truth, langs, truth, truth, resamples=0)


def test_paired_bootstrap_draws_an_items_copies_together() -> None:
    """A prompt at three context lengths is one item: tripled rows drawn as clusters give the interval of the
    rows themselves, not one √3 narrower."""
    truth, langs = _two_languages()
    rng = np.random.default_rng(4)
    baseline, candidate = truth ^ (rng.random(200) < 0.35), truth ^ (rng.random(200) < 0.25)
    once = M.paired_bootstrap_f1(truth, langs, baseline, candidate, resamples=1000, seed=9)
    thrice = M.paired_bootstrap_f1(np.repeat(truth, 3), np.repeat(langs, 3), np.repeat(baseline, 3),
                                   np.repeat(candidate, 3), resamples=1000, seed=9, clusters=np.repeat(np.arange(200), 3))
    rows = M.paired_bootstrap_f1(np.repeat(truth, 3), np.repeat(langs, 3), np.repeat(baseline, 3),
                                 np.repeat(candidate, 3), resamples=1000, seed=9)
    for lang in ("fr", "de"):
        assert thrice[lang]["items"] == 100 and thrice[lang]["n"] == 300
        assert np.allclose(thrice[lang]["delta_ci95"], once[lang]["delta_ci95"])
        width = lambda out: out[lang]["delta_ci95"][1] - out[lang]["delta_ci95"][0]  # noqa: E731
        assert width(rows) < 0.75 * width(thrice)
