"""The loop's reports (per-iteration game metrics, plots, ablation), built from the stages' outputs."""

from __future__ import annotations

import json

import pytest
from loop_fixtures import seed_records, synthetic

from duelguard.fsio import DataError, atomic_write_json
from duelguard.records import write_records


def _eval_metrics(f1: dict[str, float]) -> dict:
    detail = {"overall": {"per_category_f1": {"hate": 0.5}}, "by_language": {k: {"f1": v} for k, v in f1.items()}}
    summary = {"avg_f1": sum(f1.values()) / len(f1), "f1": 0.6, **{f"f1_{k}": v for k, v in f1.items()}}
    return {"suite": summary, "test": summary, "detail": {"suite": detail, "test": detail}}


def test_reports_gather_metrics_plot_and_write_the_ablation(tmp_layout, tiny_params):
    from duelguard.reports import write_reports

    layout = tmp_layout
    write_records(layout.seed_split("train"), seed_records())
    gen = [synthetic("s1", "fr", n, f"Texte numéro {n}", True) for n in range(4)]
    write_records(layout.generated(1), gen)
    write_records(layout.curated(1), gen[:3])
    atomic_write_json(layout.eval_metrics(0), _eval_metrics({"en": 0.80, "fr": 0.50, "es": 0.60, "de": 0.40}))
    atomic_write_json(layout.eval_metrics(1), _eval_metrics({"en": 0.795, "fr": 0.62, "es": 0.66, "de": 0.52}))
    atomic_write_json(layout.score_metrics(1), {"n": 3, "mean_loss": 1.5, "error_rate": 0.33,
                                                               "per_language": {}, "per_class": {}})
    atomic_write_json(layout.dpo_metrics(1), {"updated": True, "reward_margin": 0.02,
                                                             "reward_accuracy": 0.75})

    out = write_reports(tiny_params, layout, log_to_mlflow=False)
    assert out["iterations"] == [0, 1]
    game1 = json.loads(layout.game_metrics(1).read_text())
    assert game1["curation"]["survival_rate"] == pytest.approx(0.75)
    assert game1["game_value"]["mean_loss"] == 1.5 and game1["dpo"]["reward_accuracy"] == 0.75
    share = game1["language_share"]
    assert share["synthetic_available"] == 3 and share["available_counts"]["fr"] == 6 + 3
    assert sum(share["share"].values()) == pytest.approx(1.0)

    rows = {r["iteration"]: r for r in out["ablation"]["rows"]}
    assert rows[1]["avg_fr_es_de"] == pytest.approx((0.62 + 0.66 + 0.52) / 3)
    assert rows[1]["delta_fr_es_de_points"] == pytest.approx(10.0) and rows[1]["delta_en_points"] == pytest.approx(-0.5)
    md = layout.ablation_markdown.read_text()
    assert "| after iteration 1 | 79.5 | 62.0 | 66.0 | 52.0 | 60.0 | +10.0 | -0.5 |" in md and "**met**" in md
    for path in out["plots"] + [out["ablation"]["plot"]]:
        assert open(path, "rb").read(4) == b"\x89PNG"


def test_report_without_evaluated_iterations_is_a_clear_error(tmp_layout, tiny_params):
    from duelguard.reports import write_reports

    with pytest.raises(DataError, match="no evaluated iteration"):
        write_reports(tiny_params, tmp_layout, log_to_mlflow=False)
