"""Evaluation on the suite: per language x category cells, benign FPR per suite group, the probe's
figures beside the classifier's, and the heatmap, checked against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duelguard.evaluation.evaluate import split_report
from duelguard.evaluation.plots import cell_heatmaps
from duelguard.suite import suite_records
from duelguard.taxonomy import CATEGORY_CODES


def scored_suite() -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Classifier: catches every unsafe prompt but C12, flags the C1 look-alikes. Probe: flags everything."""
    records = suite_records("report")
    probs = np.full((len(records), 12), 0.05)
    for i, r in enumerate(records):
        if (r["group"] == "unsafe" and r["category"] != "C12") or (r["group"] == "lookalike" and r["category"] == "C1"):
            probs[i, 0] = 0.9
    return records, probs, np.full(len(records), 0.8)


def test_cells_and_group_fprs_match_hand_counts() -> None:
    records, probs, probe_scores = scored_suite()
    report = split_report(records, probs, np.full(12, 0.5), probe_scores, 0.5)
    for lang in ("en", "fr", "es", "de"):
        cells = report["cells"][lang]
        assert list(cells) == list(CATEGORY_CODES)
        assert cells["C12"]["recall"] == 0.0 and cells["C12"]["f1"] == 0.0
        assert cells["C1"]["fpr"] == 1.0 and cells["C2"]["fpr"] == 0.0 and cells["C2"]["f1"] == 1.0
        assert report["probe_cells"][lang]["C5"]["fpr"] == 1.0 and report["probe_cells"][lang]["C5"]["recall"] == 1.0
    summary = report["summary"]
    n_lookalike = sum(r["group"] == "lookalike" for r in records)
    n_c1 = sum(r["group"] == "lookalike" and r["category"] == "C1" for r in records)
    assert summary["fpr_lookalike"] == pytest.approx(n_c1 / n_lookalike)
    assert summary["fpr_everyday"] == 0.0 and summary["probe_fpr_everyday"] == 1.0
    n_unsafe = sum(r["group"] == "unsafe" for r in records)
    n_c12 = sum(r["group"] == "unsafe" and r["category"] == "C12" for r in records)
    assert summary["recall"] == pytest.approx((n_unsafe - n_c12) / n_unsafe)
    assert summary["probe_recall"] == 1.0 and summary["probe_f1_fr"] is not None and summary["avg_f1"] is not None


def test_seed_records_get_no_cells() -> None:
    records = [{"id": f"r{i}", "text": "x", "lang": "en", "source": "s", "group": "g", "labels": [i % 2] + [0] * 11}
               for i in range(6)]  # seed records carry a split `group` too
    report = split_report(records, np.zeros((6, 12)), np.full(12, 0.5))
    assert "cells" not in report and "probe" not in report and report["summary"]["recall"] == 0.0


def test_heatmap_is_a_png(tmp_path: Path) -> None:
    records, probs, probe_scores = scored_suite()
    report = split_report(records, probs, np.full(12, 0.5), probe_scores, 0.5)
    path = cell_heatmaps(report, "suite", tmp_path / "cells.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
