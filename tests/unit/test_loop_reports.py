"""The loop's reports (per-iteration game metrics, plots, ablation), built from the stages' outputs."""

from __future__ import annotations

import json

import pytest
from loop_fixtures import seed_records, synthetic

from duelguard.fsio import DataError, atomic_write_json
from duelguard.records import write_records


def _eval_metrics(f1: dict[str, float], cell_f1: float) -> dict:
    """Evaluate-stage metrics in its shape: a summary per set, per-language detail, suite cells."""
    detail = {"overall": {"per_category_f1": {"hate": 0.5}},
              "by_language": {k: {"f1": v, "auroc": v + 0.1, "auprc": v + 0.05, "category_accuracy": v - 0.1}
                              for k, v in f1.items()}}
    summary = {"avg_f1": sum(f1.values()) / len(f1), "f1": 0.6, **{f"f1_{k}": v for k, v in f1.items()}}
    cells = {lang: {"C1": {"f1": cell_f1}, "C9": {"f1": cell_f1}} for lang in ("fr", "es", "de")}
    return {"test": summary, "suite": {**summary, "fpr_lookalike": 0.2},
            "detail": {"test": detail, "suite": detail}, "cells": {"suite": cells}}


def test_reports_gather_metrics_plot_and_write_the_ablation(tmp_layout, tiny_params):
    from duelguard.classifier.data import composition
    from duelguard.reports import write_reports

    layout = tmp_layout
    write_records(layout.seed_split("train"), seed_records())
    gen = [synthetic("s1", "fr", n, f"Texte numéro {n}", True) for n in range(4)]
    write_records(layout.generated(1), gen)
    write_records(layout.curated(1), gen[:3])
    write_records(layout.game_set(1), gen[3:])
    steering = {"steer": 0.5, "strata": {"safe": {"scored": 0, "wrong": 0, "seeds": 1},
                                         "hate": {"scored": 4, "wrong": 3, "seeds": 1}}}
    atomic_write_json(layout.generate_summary(1), {"requested": 4, "records": 4, "empty": 0, "steering": steering})
    atomic_write_json(layout.eval_metrics(0), _eval_metrics({"en": 0.80, "fr": 0.50, "es": 0.60, "de": 0.40}, 0.4))
    atomic_write_json(layout.eval_metrics(1), _eval_metrics({"en": 0.795, "fr": 0.62, "es": 0.66, "de": 0.52}, 0.5))
    atomic_write_json(layout.train_metrics(1), {"composition": composition(seed_records() + gen[:3])})
    game_set = {"classifier_iteration": 0, "n": 1, "mean_loss": 2.0, "error_rate": 1.0}
    atomic_write_json(layout.score_metrics(1), {"n": 3, "mean_loss": 1.5, "error_rate": 0.33, "per_language": {},
                                                "per_class": {}, "game_set": game_set})
    atomic_write_json(layout.dpo_metrics(1), {"updated": True, "reward_margin": 0.02, "reward_accuracy": 0.75,
                                              "steps": 2, "logp_margin": {"before": -1.0, "after": -0.5},
                                              "adapter_effect": {"prompts": 6, "changed": 2}})
    # Classifier 1 was never anyone's opponent: the report scores it on the game set itself (a real tiny one).
    from duelguard.backbones import resolve_backbone
    from duelguard.classifier.model import GuardClassifier

    cfg = tiny_params.classifier
    backbone = resolve_backbone(cfg.backbone, str(layout.weights_cache), [r["text"] for r in seed_records()])
    GuardClassifier.from_backbone(backbone, cfg.max_length, cfg.chunk_overlap, pooling=cfg.pooling).save(
        layout.classifier_dir(1))

    out = write_reports(tiny_params, layout, log_to_mlflow=False)
    assert out["iterations"] == [0, 1]
    game0 = json.loads(layout.game_metrics(0).read_text())
    game1 = json.loads(layout.game_metrics(1).read_text())
    assert game0["game_set"]["mean_loss"] == 2.0 and game0["game_set"]["source"] == "score stage"
    assert game1["game_set"]["source"] == "report" and game1["game_set"]["n"] == 1
    assert game1["game_set"]["mean_loss"] > 0 and game1["game_set"]["error_rate"] in (0.0, 1.0)
    assert game1["curation"]["survival_rate"] == pytest.approx(0.75)
    assert game1["game_value"]["mean_loss"] == 1.5 and game1["dpo"]["reward_accuracy"] == 0.75
    assert game1["dpo"]["logp_margin"]["after"] == -0.5 and game1["dpo"]["adapter_effect"]["changed"] == 2
    assert game1["composition"]["fr"]["categories"]["hate"] == {"seed": 3, "synthetic": 3}
    # by kind of text: the synthetic rows are the kind of their (advbench: instruction) seed
    assert game1["composition"]["fr"]["kinds"]["instruction"] == {"synthetic_unsafe": 3}
    assert game1["composition"]["fr"]["kinds"]["unknown"] == {"seed_safe": 3, "seed_unsafe": 3}  # "handmade": no known source
    assert game1["suite"]["fr_es_de_cell_f1"] == pytest.approx(0.5) and game0["suite"]["fr_es_de_cell_f1"] == 0.4
    share = game1["language_share"]
    assert share["synthetic_available"] == 3 and share["available_counts"]["fr"] == 6 + 3
    assert sum(share["share"].values()) == pytest.approx(1.0)

    rows = {r["iteration"]: r for r in out["ablation"]["rows"]}
    assert out["ablation"]["split"] == "suite"
    assert rows[1]["avg_fr_es_de"] == pytest.approx((0.62 + 0.66 + 0.52) / 3)
    assert rows[1]["delta_fr_es_de_points"] == pytest.approx(10.0) and rows[1]["delta_en_points"] == pytest.approx(-0.5)
    md = layout.ablation_markdown.read_text()
    assert "| after iteration 1 | 79.5 | 62.0 | 66.0 | 52.0 | 60.0 | +10.0 | -0.5 |" in md and "**met**" in md
    assert "| after iteration 1 | 89.5 / 84.5 | 72.0 / 67.0 | 76.0 / 71.0 | 62.0 / 57.0 |" in md  # AUROC / AUPRC
    assert "| after iteration 1 | 69.5 | 52.0 | 56.0 | 42.0 |" in md  # category accuracy
    loop_md = layout.loop_report.read_text()
    assert "| 1 | 4 | 4 | 3 |" in loop_md  # 4 asked, 4 written, 3 curated
    assert "| safe | 1 |" in loop_md and "| hate | 1 (3/4) |" in loop_md  # seeds (wrong/scored before)
    assert "-1.00 → -0.50 | 2/6 |" in loop_md
    assert "| category | en | fr | es | de |" in loop_md and "| hate | 0 | 3 + 3 | 0 | 0 |" in loop_md
    assert "| instruction | 0 | 0 + 3 / 0 + 0 | 0 | 0 |" in loop_md  # unsafe seed + synthetic / safe
    for path in out["plots"] + [out["ablation"]["plot"]]:
        assert open(path, "rb").read(4) == b"\x89PNG"


def test_report_without_evaluated_iterations_is_a_clear_error(tmp_layout, tiny_params):
    from duelguard.reports import write_reports

    with pytest.raises(DataError, match="no evaluated iteration"):
        write_reports(tiny_params, tmp_layout, log_to_mlflow=False)
