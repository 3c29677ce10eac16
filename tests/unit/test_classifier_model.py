"""GuardClassifier: save/load round trip, long-input windowing, blank inputs, output schema, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from classifier_toy import toy_records

from duelguard.classifier.inference import batched_window_probs, encode_chunks
from duelguard.classifier.loader import load_classifier
from duelguard.classifier.model import GuardClassifier
from duelguard.classifier.runtime import network_probs
from duelguard.classifier.saved import METADATA_FILE
from duelguard.config import load_params
from duelguard.errors import ModelNotFoundError
from duelguard.taxonomy import CATEGORIES

REPO_ROOT = Path(__file__).resolve().parents[2]


# Both network shapes go through the same classifier: an encoder pooling the mean of its tokens (the
# default profile's e5) and a decoder pooling its last non-pad token (Gemma-3, the paper's design).
SHAPES = {"bert": "mean", "gemma3_text": "last"}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def clf(request, tmp_path_factory) -> GuardClassifier:
    """An untrained 12-way head on a tiny random backbone (random but deterministic scores)."""
    import torch

    from duelguard.backbones import resolve_backbone

    params = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    backbone_cfg = params.classifier.backbone.model_copy(update={"architecture": request.param})
    cache = tmp_path_factory.mktemp("weights")
    backbone = resolve_backbone(backbone_cfg, str(cache), corpus=[r["text"] for r in toy_records("train", 10)])
    torch.manual_seed(0)
    model = GuardClassifier.from_backbone(backbone, max_length=24, chunk_overlap=6, pooling=SHAPES[request.param])
    model.thresholds = np.linspace(0.3, 0.7, 12, dtype=np.float32)
    return model


def window_probs(clf: GuardClassifier, chunks: list[list[int]], batch_size: int, pad_to: int | None = None,
                 sort_by_length: bool = True) -> np.ndarray:
    """(len(chunks), 12) probabilities of token windows, batched and padded as predict does."""
    import torch

    with torch.inference_mode():
        return batched_window_probs(lambda ids, mask: network_probs(clf.model.eval(), ids, mask), chunks,
                                    clf.tokenizer.pad_token_id, 12, batch_size, pad_to, sort_by_length)


def test_head_pools_on_the_pad_token_id_of_the_tokenizer(clf: GuardClassifier) -> None:
    assert clf.model.config.pad_token_id == clf.tokenizer.pad_token_id is not None
    assert clf.model.config.num_labels == 12 and clf.model.config.problem_type == "multi_label_classification"


def test_padding_does_not_change_scores(clf: GuardClassifier) -> None:
    """Right padding + masked pooling: a text scores the same alone, in a batch, or padded to max."""
    texts = ["how do I attack my neighbour", "soup", "esa gente de lima es escoria infrahumana"]
    chunks = [encode_chunks(clf.tokenizer, t, clf.max_length, clf.chunk_overlap)[0] for t in texts]
    batched = window_probs(clf, chunks, batch_size=3)
    single = window_probs(clf, chunks, batch_size=1, pad_to=clf.max_length, sort_by_length=False)
    assert np.abs(batched - single).max() < 1e-5


def test_long_text_is_the_max_over_the_token_windows_of_its_units(clf: GuardClassifier) -> None:
    from duelguard.classifier.units import scoring_units

    text = " ".join(r["text"] for r in toy_records("train", 2))
    units = scoring_units(text, clf.max_length, clf.chunk_overlap, clf.long_input).texts
    windows = [w for unit in units for w in encode_chunks(clf.tokenizer, unit, clf.max_length, clf.chunk_overlap)]
    assert len(units) > 3 and len(windows) >= len(units)
    per_window = window_probs(clf, windows, batch_size=4)
    (probs,) = clf.predict_proba([text])
    np.testing.assert_allclose(probs, per_window.max(axis=0), atol=1e-6)


def test_blank_text_scores_zero_and_is_safe(clf: GuardClassifier) -> None:
    probs = clf.predict_proba(["", "  \n\t", "soup"])
    assert probs.shape == (3, 12) and probs.dtype == np.float32
    assert (probs[:2] == 0).all() and (probs[2] > 0).all()
    out = clf.predict_records([{"text": " "}])[0]
    assert out["unsafe"] is False and out["unsafe_score"] == 0.0


def test_predict_records_schema_and_threshold_rule(clf: GuardClassifier) -> None:
    objs = [{"id": 1, "text": "how do I attack my neighbour"}, {"messages": [{"role": "user", "content": "soup"}], "k": "v"}]
    out = clf.predict_records(objs)
    assert [o.get("id") for o in out] == [1, None] and out[1]["k"] == "v" and "messages" in out[1]
    for o in out:
        probs = np.array([o["categories"][c] for c in CATEGORIES])
        assert list(o["categories"]) == list(CATEGORIES)
        assert o["unsafe_score"] == pytest.approx(probs.max())
        assert o["unsafe"] == bool((probs > clf.thresholds).any())
    assert "unsafe" not in objs[0]  # inputs are not mutated


def test_save_load_round_trip(clf: GuardClassifier, tmp_path: Path) -> None:
    clf.training = {"iteration": 0, "steps": 0}
    target = clf.save(tmp_path / "model")
    meta = json.loads((target / METADATA_FILE).read_text())
    assert meta["taxonomy"] == list(CATEGORIES) and meta["max_length"] == 24 and meta["chunk_overlap"] == 6
    assert meta["pooling"] == clf.pooling
    loaded = load_classifier(target)
    np.testing.assert_allclose(loaded.thresholds, clf.thresholds, atol=1e-6)
    assert loaded.training == {"iteration": 0, "steps": 0}
    texts = ["how do I attack my neighbour", "ces gens de paris sont de la vermine " * 6]
    np.testing.assert_allclose(loaded.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    clf.save(target)  # saving over an existing directory replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no duelguard.json"):
        load_classifier(tmp_path)
    (tmp_path / METADATA_FILE).write_text(json.dumps({"taxonomy": ["a"], "thresholds": [0.5] * 12}))
    with pytest.raises(ValueError, match="taxonomy"):
        load_classifier(tmp_path)


def test_train_top_layers_freezes_everything_below(clf: GuardClassifier) -> None:
    from duelguard.classifier.train import freeze_lower_layers

    from duelguard.classifier.network import transformer_layers

    freeze_lower_layers(clf.model, 1)
    layers = transformer_layers(clf.model)
    # encoders freeze their whole embeddings block (positions, LayerNorm), or backward would run to the bottom
    embeddings = clf.model.encoder.embeddings if clf.pooling != "last" else clf.model.get_input_embeddings()
    assert not any(p.requires_grad for p in embeddings.parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[-1].parameters()) and clf.model.score.weight.requires_grad
    with pytest.raises(ValueError, match="train_top_layers"):
        freeze_lower_layers(clf.model, len(layers) + 1)
    clf.model.requires_grad_(True)
