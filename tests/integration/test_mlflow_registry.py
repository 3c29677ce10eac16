"""evaluate -> register -> promote / refuse / dry-run / rollback -> download the champion, against a
REAL `mlflow server` started by the test and against the embedded sqlite store.

The classifiers are tiny random-init models whose behaviour is pinned by their thresholds, so the
metrics (and therefore the decisions) are known in advance:
  "never":  thresholds 1.0 -> nothing flagged: F1 0, benign FPR 0 (promotable as the first model);
  "always": thresholds 0.0 -> everything flagged: F1 0.8 on the toy set, benign FPR 1.0.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from classifier_toy import write_toy_seed  # noqa: E402
from serving_toy import SAMPLE_TEXTS, free_port  # noqa: E402

pytestmark = pytest.mark.integration
MODEL = "duelguard-classifier"


def _with(params, section: str, **changes):
    return params.model_copy(update={section: getattr(params, section).model_copy(update=changes)})


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (sqlite backend + proxied artifacts) on a free port, stopped afterwards."""
    from duelguard.registry import server

    base = tmp_path_factory.mktemp("mlflow-server")
    cfg = server.ServerConfig(port=free_port(), backend_store=base / "server.db",
                              artifacts_destination=base / "artifacts", state_dir=base, start_timeout_s=180)
    info = server.start(cfg)
    assert info["started"] and server.healthy(cfg.url) and cfg.pid_file.exists()
    yield cfg
    assert server.stop(cfg)
    assert not server.healthy(cfg.url) and not cfg.pid_file.exists()


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory) -> Path:
    """One tiny backbone (tokenizer trained once) shared by the module's tests."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture()
def registry_env(tmp_path, tiny_params, weights_cache, monkeypatch):
    """Params + Layout in tmp_path with a toy seed; model downloads cached in tmp_path."""
    from duelguard.layout import Layout

    monkeypatch.setenv("DUELGUARD_MODEL_CACHE", str(tmp_path / "model-cache"))
    layout = dataclasses.replace(Layout.from_params(tiny_params, root=tmp_path), weights_cache=weights_cache)
    write_toy_seed(layout.seed_dir, per_template=10)
    # The production FPR gate (the tiny profile relaxes it so that its pipeline always has a champion),
    # judged on the seed test sample, whose toy rows the thresholds below make all-safe or all-unsafe.
    return _with(tiny_params, "promotion", max_benign_fpr=0.2, eval_split="test"), layout


def _save_classifier(params, layout, iteration: int, threshold: float) -> Path:
    from duelguard.backbones import build_tiny
    from duelguard.classifier.model import GuardClassifier
    from duelguard.encoder import ENCODER_DIM
    from duelguard.probe import Probe

    backbone = build_tiny(params.classifier.backbone, [t for t in SAMPLE_TEXTS if t.strip()] * 5, layout.weights_cache)
    clf = GuardClassifier.from_backbone(backbone, params.classifier.max_length, params.classifier.chunk_overlap,
                                       pooling=params.classifier.pooling)
    clf.thresholds[:] = threshold
    clf.training = {"iteration": iteration, "data_hash": f"hash-{iteration}", "git_commit": "abc123", "profile": "tiny"}
    # Its probe, saved inside it as train_classifier does: a constant scorer that flags nothing (the
    # registry flow is under test here, not the probe).
    saved = clf.save(layout.classifier_dir(iteration))
    Probe(np.zeros(ENCODER_DIM), 0.0, threshold=0.5).save(layout.probe_dir(iteration))
    return saved


def _evaluate_and_register(params, layout, iteration: int, threshold: float) -> dict:
    from duelguard.evaluation.evaluate import evaluate_classifier
    from duelguard.registry.registry import register_classifier

    _save_classifier(params, layout, iteration, threshold)
    summary = evaluate_classifier(params, layout, iteration)
    assert summary["mlflow_run_id"]
    return register_classifier(params, layout, iteration)


def _aliases(client) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(MODEL).aliases.items()}


def _registry_flow(params, layout) -> None:
    from mlflow import MlflowClient

    from duelguard.classifier.loader import load_classifier
    from duelguard.errors import ModelNotFoundError
    from duelguard.registry.models import local_model_dir
    from duelguard.registry.registry import promote, promote_stage, register_classifier, rollback

    # v1 "never": evaluate writes metrics + plots and an MLflow run; register tags the version.
    reg1 = _evaluate_and_register(params, layout, 0, threshold=1.0)
    metrics = json.loads(layout.eval_metrics(0).read_text())
    assert metrics["test"]["f1"] == 0.0 and metrics["test"]["fpr"] == 0.0
    assert set(metrics["eval_set"]) == set(params.evaluate.sets)
    assert {"en", "fr", "es", "de"} <= set(metrics["detail"]["test"]["by_language"])
    assert sorted(p.name for p in layout.plots_dir("eval", 0).glob("test_*.png")) == [
        "test_by_language.png", "test_per_category_f1.png", "test_pr_curve.png"]
    client = MlflowClient()
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.data.metrics["test_fpr"] == 0.0 and run.data.tags["duelguard.stage"] == "evaluate"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/test_pr_curve.png" in artifacts
    v1 = client.get_model_version(MODEL, str(reg1["version"]))
    assert v1.tags["duelguard.iteration"] == "0" and v1.tags["duelguard.data_hash"] == "hash-0"
    assert v1.tags["duelguard.git_commit"] == "abc123" and v1.tags["duelguard.profile"] == "tiny"
    assert float(v1.tags["duelguard.metric.test.benign_fpr"]) == 0.0 and "duelguard.metric.test.f1_fr" in v1.tags

    # Registering the same evaluated run again does not create a second version.
    assert register_classifier(params, layout, 0)["skipped"] is True

    # First model: only the FPR rule applies -> promoted by the DVC stage function.
    first = promote_stage(params, layout, 0)
    assert first["promoted"] is True
    assert _aliases(client) == {"champion": str(reg1["version"])}
    assert json.loads((layout.metrics / "promotion" / "iter_0.json").read_text())["promote"] is True

    # v2 "always": F1 rises but benign FPR 1.0 > 0.2 (and > the champion's 0.0 x ratio + slack) -> refused,
    # reasons recorded on the version.
    reg2 = _evaluate_and_register(params, layout, 1, threshold=0.0)
    v2 = str(reg2["version"])
    refused = promote(params, layout=layout)
    assert refused.candidate_version == v2 and not refused.promote
    assert [c.rule for c in refused.checks if not c.passed] == ["max_benign_fpr", "max_fpr_ratio"]
    tags = client.get_model_version(MODEL, v2).tags
    assert tags["duelguard.promotion"] == "refused" and "benign FPR 1.0000" in tags["duelguard.promotion_reasons"]
    assert _aliases(client) == {"champion": str(reg1["version"])}

    # With relaxed FPR limits it would pass (it also exports and loads): --dry-run says so and changes nothing.
    relaxed = _with(params, "promotion", max_benign_fpr=1.0, max_fpr_ratio=1.0, fpr_slack=1.0)
    dry = promote(relaxed, v2, dry_run=True, layout=layout)
    assert dry.promote and dry.dry_run and not dry.applied
    assert [c.rule for c in dry.checks][-1] == "loads" and "network exported to ONNX" in dry.checks[-1].detail
    assert _aliases(client) == {"champion": str(reg1["version"])}
    assert client.get_model_version(MODEL, v2).tags["duelguard.promotion"] == "refused"

    # A min F1 delta the candidate cannot reach refuses it too.
    strict = _with(relaxed, "promotion", min_f1_delta=0.95)
    assert [c.rule for c in promote(strict, v2, dry_run=True, layout=layout).checks if not c.passed] == ["min_f1_delta"]

    # Promote for real: champion -> v2, previous -> v1.
    done = promote(relaxed, v2, layout=layout)
    assert done.promote and done.applied
    assert _aliases(client) == {"champion": v2, "previous": str(reg1["version"])}
    assert client.get_model_version(MODEL, v2).tags["duelguard.promotion"] == "promoted"

    # The champion downloads to a loadable classifier directory (cached; the alias is resolved first).
    champion_dir = local_model_dir(f"models:/{MODEL}@champion", params, layout.root)
    clf = load_classifier(champion_dir)
    np.testing.assert_allclose(clf.thresholds, 0.0)
    assert local_model_dir(f"models:/{MODEL}/{v2}", params, layout.root) == champion_dir

    # Rollback restores v1 as champion.
    result = rollback(params, layout)
    assert result["champion"] == str(reg1["version"]) and result["demoted"] == v2
    assert _aliases(client) == {"champion": str(reg1["version"])}
    np.testing.assert_allclose(load_classifier(local_model_dir(f"models:/{MODEL}@champion", params, layout.root)).thresholds, 1.0)
    with pytest.raises(ModelNotFoundError, match="previous"):
        rollback(params, layout)

    # A changed eval set (other sample size) -> both versions are re-evaluated on the new frozen set.
    resampled = _with(relaxed, "evaluate", max_examples_per_lang=9)
    redo = promote(resampled, v2, dry_run=True, layout=layout)
    assert "re-evaluated" in redo.note and redo.promote
    assert redo.candidate_metrics.eval_set_hash != v1.tags["duelguard.eval_set_hash.test"]

    # Missing models give a clear ModelNotFoundError naming what is missing.
    with pytest.raises(ModelNotFoundError, match="@nosuchalias"):
        local_model_dir(f"models:/{MODEL}@nosuchalias", params, layout.root)
    with pytest.raises(ModelNotFoundError, match="/99"):
        local_model_dir(f"models:/{MODEL}/99", params, layout.root)


def test_registry_flow_against_real_mlflow_server(mlflow_server, registry_env, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    params, layout = registry_env
    _registry_flow(params, layout)
    # Everything went to the server: its artifact store holds the logged model and plots.
    assert any(mlflow_server.artifacts_destination.rglob("duelguard.json"))
    assert not (layout.root / "mlflow").exists()


def test_registry_flow_against_embedded_sqlite(registry_env, monkeypatch, repo_root) -> None:
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from duelguard.cli import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, layout = registry_env
    _registry_flow(params, layout)
    assert (layout.root / "mlflow" / "mlflow.db").exists()

    # The CLI: `promote --dry-run` prints the decision (v2's benign FPR fails the tiny rules) and
    # changes nothing; `rollback` with no `previous` alias is a clear error.
    client = MlflowClient()
    before = _aliases(client)
    # The repository's params with the production FPR gate (the tiny profile relaxes it).
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["profiles"]["tiny"]["promotion"] = {"max_benign_fpr": 0.2, "guard_sets": []}
    params_file = layout.root / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    cli = ["--params", str(params_file), "--profile", "tiny", "--root", str(layout.root)]
    result = CliRunner().invoke(app, [*cli, "promote", "--dry-run", "--version", "2"])
    assert result.exit_code == 0, result.output
    assert "REFUSE (dry run: nothing changed)" in result.output and "[FAIL] max_benign_fpr" in result.output
    assert _aliases(client) == before
    result = CliRunner().invoke(app, [*cli, "rollback"])
    assert result.exit_code != 0 and "no 'previous' alias" in str(result.exception)


def test_pyfunc_model_predicts_the_predict_schema(registry_env, monkeypatch) -> None:
    """mlflow.pyfunc.load_model of a registered version returns the same probabilities as GuardClassifier."""
    import mlflow.pyfunc
    import pandas as pd

    from duelguard.classifier.loader import load_classifier
    from duelguard.taxonomy import CATEGORIES

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, layout = registry_env
    reg = _evaluate_and_register(params, layout, 0, threshold=0.5)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{reg['version']}")
    texts = [t for t in SAMPLE_TEXTS if t.strip()][:4]
    out = model.predict(pd.DataFrame({"text": texts}))
    assert list(out.columns) == [*CATEGORIES, "unsafe_score", "unsafe", "truncated", "reason"]
    expected = load_classifier(layout.classifier_dir(0)).predict_proba(texts)
    np.testing.assert_allclose(out[list(CATEGORIES)].to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out["unsafe_score"].to_numpy(), expected.max(axis=1), atol=1e-5)


def test_registered_weights_must_be_the_evaluated_ones(mlflow_server, registry_env, monkeypatch) -> None:
    """The model digest `evaluate` records is checked at register (weights changed since: refused) and
    every download (predict, promotion, export/serve) is checked against the version's digest tag (an
    artifact changed in the store: refused), against a real mlflow server's artifact store."""
    from mlflow import MlflowClient

    from duelguard.evaluation.evaluate import evaluate_classifier
    from duelguard.digest import ModelDigestError, model_digest
    from duelguard.registry.models import DIGEST_TAG, local_model_dir
    from duelguard.registry.registry import register_classifier
    from duelguard.serving.triton_repository import export_triton

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    params, layout = registry_env
    params = _with(_with(params, "evaluate", sets=["test"]), "tracking", registered_model="dg-digest")
    _save_classifier(params, layout, 0, threshold=1.0)
    evaluate_classifier(params, layout, 0)
    evaluated = json.loads(layout.eval_metrics(0).read_text())["model_digest"]
    assert evaluated == model_digest(layout.classifier_dir(0))
    shutil.copytree(layout.classifier_dir(0), layout.root / "evaluated-copy")

    # Retrained (other thresholds, same path) after evaluation: register refuses and registers nothing.
    _save_classifier(params, layout, 0, threshold=0.5)
    with pytest.raises(ModelDigestError, match=f"{evaluated}.*not the evaluated weights"):
        register_classifier(params, layout, 0)
    client = MlflowClient()
    assert client.search_model_versions("name='dg-digest'") == []

    # The evaluated weights (put back) register, tagged with their digest.
    shutil.rmtree(layout.classifier_dir(0))
    shutil.copytree(layout.root / "evaluated-copy", layout.classifier_dir(0))
    version = str(register_classifier(params, layout, 0)["version"])
    assert client.get_model_version("dg-digest", version).tags[DIGEST_TAG] == evaluated

    # The artifact is altered in the server's store after registration: no download or export serves it.
    source = client.get_model_version("dg-digest", version).source  # models:/m-<logged model id> in MLflow 3
    stored = sorted((p for p in mlflow_server.artifacts_destination.rglob("duelguard.json")
                     if source.rsplit("/", 1)[-1] in str(p)), key=lambda p: len(p.parts))
    assert stored and model_digest(stored[0].parent) == evaluated, f"{source} not found in the server's artifact store"
    stored[0].write_text(stored[0].read_text() + " ")  # one byte more: same JSON, other files
    with pytest.raises(ModelDigestError, match=f"models:/dg-digest/{version}.*not the evaluated weights"):
        local_model_dir(f"models:/dg-digest/{version}", params, layout.root)
    with pytest.raises(ModelDigestError, match="not the evaluated weights"):
        export_triton(f"models:/dg-digest/{version}", layout.root / "repo", params.serving, params=params,
                      root=layout.root)
    assert not (layout.root / "repo" / "duelguard").exists()


def test_a_guard_set_fpr_regression_refuses_promotion(registry_env, monkeypatch) -> None:
    """promotion.guard_sets wiring: each version's figures on the guard set are read from its registry
    tags (frozen-set hash checked) and the candidate is refused when it flags that set's benign rows
    more than champion x max_fpr_ratio + fpr_slack, or finds fewer of its unsafe rows than the
    champion less max_guard_recall_drop (plus guard_recall_per_fpr per point of that language's benign
    FPR given back), even with every other rule passing. The guard
    figures are set as tags (scoring suite_context with a token model takes minutes); the rest is the
    real evaluate -> register -> promote flow."""
    from mlflow import MlflowClient

    from duelguard.evalset import CONTEXT_SET, eval_set_hash, evaluation_records
    from duelguard.registry.registry import promote
    from duelguard.registry.rules import VersionMetrics

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, layout = registry_env
    params = _with(_with(params, "tracking", registered_model="dg-guard"), "promotion", max_benign_fpr=1.0,
                   max_fpr_ratio=1.0, fpr_slack=1.0, guard_sets=[CONTEXT_SET], load_check=False)
    v1 = str(_evaluate_and_register(_with(params, "evaluate", sets=["test"]), layout, 0, threshold=1.0)["version"])
    assert promote(params, v1, layout=layout).promote  # first model: the guard needs a champion to compare with
    v2 = str(_evaluate_and_register(_with(params, "evaluate", sets=["test"]), layout, 1, threshold=0.0)["version"])
    client = MlflowClient()
    context_hash = eval_set_hash(evaluation_records(CONTEXT_SET, params, layout))

    def tag_context_fpr(version: str, fpr: float, recall: float = 0.9) -> None:
        tags = VersionMetrics(0.5, {"en": 0.5}, fpr, context_hash, probe_avg_f1=0.4,
                              recall_by_lang={"en": recall}, fpr_by_lang={"en": fpr}).to_tags(CONTEXT_SET)
        for key, value in tags.items():
            client.set_model_version_tag("dg-guard", version, key, value)

    tag_context_fpr(v1, 0.17)
    tag_context_fpr(v2, 0.42)
    tight = _with(params, "promotion", fpr_slack=0.02, max_fpr_ratio=1.5)
    # the test split's own relative rule would refuse too (FPR 0 -> 1): lift it by the champion's test tag
    client.set_model_version_tag("dg-guard", v1, "duelguard.metric.test.benign_fpr", "1.0")
    refused = promote(tight, v2, dry_run=True, layout=layout)
    assert [c.rule for c in refused.checks if not c.passed] == [f"max_fpr_ratio[{CONTEXT_SET}]"]
    assert "0.1700 -> 0.4200 (limit champion x 1.5 + 0.02 = 0.2750)" in refused.reasons[0]
    tag_context_fpr(v2, 0.27)
    assert promote(tight, v2, dry_run=True, layout=layout).promote
    # fail-open: fewer unsafe requests found in context than the champion found
    tag_context_fpr(v2, 0.27, recall=0.85)
    refused = promote(tight, v2, dry_run=True, layout=layout)
    assert [c.rule for c in refused.checks if not c.passed] == [f"max_guard_recall_drop[{CONTEXT_SET}][en]"]
    assert "unsafe recall 0.9000 -> 0.8500" in refused.reasons[0]
    # ... unless it pays for them with false positives given back: 0.5 x (0.17 - 0.05) + 0.02 >= 0.05
    assert tight.promotion.guard_recall_per_fpr == 0.5
    tag_context_fpr(v2, 0.05, recall=0.85)
    assert promote(tight, v2, dry_run=True, layout=layout).promote
