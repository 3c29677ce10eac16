"""The train_classifier stage on a toy separable dataset (tiny profile, real torch, real MLflow store)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
from classifier_toy import toy_records, write_toy_seed

from duelguard.classifier.model import GuardClassifier
from duelguard.classifier.train import cap_examples, length_grouped_batches, train_classifier
from duelguard.config import load_params
from duelguard.fsio import DataError
from duelguard.layout import Layout
from duelguard.records import write_records
from duelguard.taxonomy import CATEGORIES

REPO_ROOT = Path(__file__).resolve().parents[2]


def _params(**classifier):
    params = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    return params.model_copy(update={"classifier": params.classifier.model_copy(update=classifier)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run shared by the module: 120 toy records x 6 epochs (~15 s on 2 cores)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # runs go to the temp root's sqlite store
        root = tmp_path_factory.mktemp("clf")
        params = _params(epochs=6.0)
        layout = dataclasses.replace(Layout.from_params(params, root=root), weights_cache=root / "weights")
        write_toy_seed(layout.seed_dir, per_template=10)
        yield params, layout, train_classifier(params, layout, 0)


def test_training_loss_falls_and_artefacts_are_written(trained) -> None:
    params, layout, summary = trained
    assert summary["steps"] == 6 * 8  # 120 examples / batch 16 = 8 per epoch
    assert summary["final_loss"] < 0.75 * summary["first_loss"]
    assert summary["examples_per_language"] == {"de": 30, "en": 30, "es": 30, "fr": 30}
    model_dir = layout.classifier_dir(0)
    meta = json.loads((model_dir / "duelguard.json").read_text())
    assert meta["taxonomy"] == list(CATEGORIES) and len(meta["thresholds"]) == 12
    assert meta["threshold_rule"] == "max_f1_floor" and meta["training"]["iteration"] == 0
    assert meta["training"]["steps"] == summary["steps"] and meta["training"]["data_hash"]
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    metrics = json.loads(layout.train_metrics(0).read_text())
    assert metrics["steps"] == summary["steps"] and metrics["steps_per_s"] > 0
    assert (layout.plots_dir("train", 0) / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_run_is_logged_to_mlflow(trained) -> None:
    import mlflow

    from duelguard.tracking import tracking_uri

    params, layout, summary = trained
    client = mlflow.MlflowClient(tracking_uri(params, layout.root))
    exp = client.get_experiment_by_name(params.tracking.experiment)
    (run,) = client.search_runs([exp.experiment_id], "tags.`duelguard.stage` = 'train_classifier'")
    assert run.data.params["classifier.loss"] == "zlpr"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == summary["steps"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/loss.png"}


def test_saved_model_separates_the_toy_classes(trained) -> None:
    _, layout, _ = trained
    clf = GuardClassifier.load(layout.classifier_dir(0))
    test = toy_records("test", 5)
    probs = clf.predict_proba([r["text"] for r in test])
    assert probs.shape == (len(test), 12) and probs.dtype == np.float32
    assert ((probs >= 0) & (probs <= 1)).all()
    labels = np.array([r["labels"] for r in test])
    for c in (CATEGORIES.index("violent_crimes"), CATEGORIES.index("hate")):
        assert probs[labels[:, c] == 1, c].min() > probs[labels[:, c] == 0, c].max() - 0.05
    safe = ~labels.any(axis=1)
    assert probs[~safe].max(axis=1).mean() > probs[safe].max(axis=1).mean() + 0.1


def test_iteration_without_curated_data_names_the_missing_file(trained) -> None:
    params, layout, _ = trained
    with pytest.raises(DataError, match=r"synthetic/iter_1/curated\.jsonl"):
        train_classifier(params, layout, 1)


def test_iteration_one_continues_from_previous_with_synthetic_data(trained) -> None:
    params, layout, _ = trained
    synthetic = [
        dict(r, id=f"syn-{r['id']}", origin="synthetic", iteration=1, parent_id=r["id"], source="synthetic")
        for r in toy_records("train", 2)
        if r["lang"] != "en"
    ]
    write_records(layout.curated(1), synthetic)
    params1 = params.model_copy(update={"classifier": params.classifier.model_copy(update={"init_from": "previous", "epochs": 1.0})})
    summary = train_classifier(params1, layout, 1)
    assert summary["examples_per_origin"] == {"seed": 120, "synthetic": len(synthetic)}
    meta = json.loads((layout.classifier_dir(1) / "duelguard.json").read_text())
    assert meta["training"]["init_from"] == "previous"
    # continuing from a trained model: the first loss is already far below an untrained head's
    assert summary["first_loss"] < trained[2]["first_loss"] * 0.8


def _rec(i: int, lang: str, origin: str, unsafe: bool) -> dict:
    return {"id": f"{origin}-{lang}-{i}", "lang": lang, "origin": origin, "labels": [int(unsafe)] + [0] * 11}


def test_cap_keeps_synthetic_first_and_the_language_mix() -> None:
    records = [_rec(i, "en", "seed", i % 2 == 0) for i in range(800)]
    records += [_rec(i, lang, "seed", i % 2 == 0) for lang in ("fr", "es", "de") for i in range(60)]
    records += [_rec(i, "fr", "synthetic", True) for i in range(40)]
    kept = cap_examples(records, 200, seed=1)
    assert len(kept) == 200 and len({r["id"] for r in kept}) == 200
    assert sum(r["origin"] == "synthetic" for r in kept) == 40
    seed_langs = {lang: sum(r["lang"] == lang and r["origin"] == "seed" for r in kept) for lang in ("en", "fr", "es", "de")}
    assert seed_langs["en"] == pytest.approx(160 * 800 / 980, abs=2)
    assert all(seed_langs[lang] == pytest.approx(160 * 60 / 980, abs=2) for lang in ("fr", "es", "de"))
    unsafe_en = sum(r["lang"] == "en" and r["labels"][0] == 1 for r in kept)
    assert unsafe_en == pytest.approx(seed_langs["en"] / 2, abs=1)
    assert [r["id"] for r in cap_examples(records, 200, seed=1)] == [r["id"] for r in kept]
    assert cap_examples(records, None, seed=1) == records


def test_cap_limits_synthetic_to_half_when_it_dominates() -> None:
    records = [_rec(i, "en", "seed", False) for i in range(100)] + [_rec(i, "de", "synthetic", True) for i in range(500)]
    kept = cap_examples(records, 100, seed=0)
    assert sum(r["origin"] == "synthetic" for r in kept) == 50 and len(kept) == 100


def test_length_grouped_batches_cover_each_example_once_with_little_padding() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(1000)]
    batches = length_grouped_batches(lengths, 8, random.Random(3))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.15 * sum(lengths)  # random batches would pad ~1.6x
    assert batches == length_grouped_batches(lengths, 8, random.Random(3))
    assert batches != length_grouped_batches(lengths, 8, random.Random(4))
