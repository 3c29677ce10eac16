"""The release path under faults, with the real parts: a real `mlflow server` subprocess (stopped at
chosen moments), a real tritonserver queried over gRPC throughout a version switch.

- the registry server stopped in the middle of `promote` (at the commit point) -> a RegistryError
  naming the server; the store still has the old champion and nothing is marked promoted; a
  registry that cannot be read is never "no champion";
- stopped just after the commit point -> the rerun finishes the promotion; rollback is right either way;
- `register` killed (SIGKILL) between creating the version and writing its record -> the rerun
  finds that version instead of creating a second one;
- promote -> serve -> rollback -> serve: every gRPC answer comes from the champion of the moment
  (checked against each model's own scores), with a client querying throughout and no failed request.

The store is inspected after a stop through the embedded sqlite client on the server's own
database: the same rows the server would answer from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving_toy import SAMPLE_TEXTS, build_tiny_classifier, free_port

pytestmark = pytest.mark.integration
MODEL = "duelguard-classifier"
REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = SAMPLE_TEXTS[:2]


def _start_registry(base: Path):
    from duelguard.registry import server

    cfg = server.ServerConfig(port=free_port(), backend_store=base / "server.db",
                              artifacts_destination=base / "artifacts", state_dir=base, start_timeout_s=180)
    server.start(cfg)
    return cfg


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A real mlflow server of this test alone (the test may stop it); clients fail fast when it is gone."""
    from duelguard.registry import server

    cfg = _start_registry(tmp_path / "mlflow-server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    yield cfg
    server.stop(cfg)


@pytest.fixture(scope="module")
def shared_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One real mlflow server for the tests that do not stop it."""
    from duelguard.registry import server

    cfg = _start_registry(tmp_path_factory.mktemp("mlflow-shared"))
    yield cfg
    server.stop(cfg)


@pytest.fixture()
def env(tmp_path: Path, tiny_params, monkeypatch: pytest.MonkeyPatch):
    """Params + Layout rooted in tmp_path (no seed: promotion reads the metrics from the version tags).
    No load check: these versions carry metric tags only (tests/integration/test_release_races.py checks it)."""
    from duelguard.layout import Layout

    monkeypatch.setenv("DUELGUARD_MODEL_CACHE", str(tmp_path / "model-cache"))
    params = tiny_params.model_copy(update={"promotion": tiny_params.promotion.model_copy(update={"load_check": False})})
    return params, Layout.from_params(params, root=tmp_path)


def _metric_tags(params, avg_f1: float, fpr: float = 0.0) -> dict[str, str]:
    """Tags as `register` writes them, measured on the promotion set itself (so nothing is re-evaluated);
    the probe's F1 is 0, so the beats-probe rule holds."""
    from duelguard.evalset import eval_set_hash, evaluation_records
    from duelguard.layout import Layout
    from duelguard.registry.rules import VersionMetrics
    from duelguard.taxonomy import TARGET_LANGUAGES

    split = params.promotion.eval_split
    frozen = eval_set_hash(evaluation_records(split, params, Layout.from_params(params)))
    metrics = VersionMetrics(avg_f1, {lang: avg_f1 for lang in TARGET_LANGUAGES}, fpr, frozen, probe_avg_f1=0.0)
    return metrics.to_tags(split)


def _bare_versions(params, layout, scores: list[float]) -> list[str]:
    """Registered versions with metric tags only (promotion needs nothing else)."""
    from mlflow import MlflowClient

    from duelguard.tracking import configure

    configure(params, layout.root)
    client = MlflowClient()
    client.create_registered_model(MODEL)
    run = client.create_run(client.get_experiment_by_name(params.tracking.experiment).experiment_id).info.run_id
    return [client.create_model_version(MODEL, f"runs:/{run}/classifier", run_id=run,
                                        tags=_metric_tags(params, f1)).version for f1 in scores]


def _store(cfg):
    """An embedded client on the stopped server's own database."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{cfg.backend_store}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _aliases(client) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(MODEL).aliases.items()}


def _short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """A promotion lease that expires in 2 s: a promotion cut off by a stopped registry cannot release its
    lease, and the rerun waits for it to expire (LEASE_S in production)."""
    import duelguard.registry.registry as registry

    monkeypatch.setattr(registry, "LEASE_S", 2.0)


def _stop_server_on(monkeypatch: pytest.MonkeyPatch, cfg, alias: str) -> list[str]:
    """Stop the real server just before the client's first write of `alias`; the write then goes out."""
    from mlflow import MlflowClient

    from duelguard.registry import server

    original, stopped = MlflowClient.set_registered_model_alias, []

    def set_alias(self, name, which, version):  # noqa: ANN001 - same signature as MlflowClient's
        if which == alias and not stopped:
            assert server.stop(cfg) and not server.healthy(cfg.url)
            stopped.append(f"{which}->{version}")
        return original(self, name, which, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", set_alias)
    return stopped


def test_registry_stopped_at_the_commit_point_changes_nothing(registry, env, monkeypatch) -> None:
    from duelguard.errors import RegistryError
    from duelguard.registry.models import local_model_dir
    from duelguard.registry.registry import LOCK_SUFFIX, PROMOTION_TAG, promote, rollback
    from duelguard.registry.lookup import champion_uri

    params, layout = env
    v1, v2 = _bare_versions(params, layout, [0.50, 0.70])
    assert promote(params, v1, layout=layout).applied  # first model: champion v1
    _short_lease(monkeypatch)
    stopped = _stop_server_on(monkeypatch, registry, "champion")
    with pytest.raises(RegistryError, match=rf"{registry.url}.*promoting {MODEL} v{v2}") as err:
        promote(params, v2, layout=layout)
    assert stopped == [f"champion->{v2}"]
    print(f"error shown: {err.value}")

    store = _store(registry)
    assert _aliases(store) == {"champion": v1}
    assert store.get_model_version(MODEL, v2).tags.get(PROMOTION_TAG) is None  # nothing promoted, nor refused
    assert store.get_registered_model(MODEL + LOCK_SUFFIX)  # its lease could not be released: it will expire

    # A registry that cannot be read is an error, never "no champion" (which would make v2 a first model).
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("DUELGUARD_MODEL_CACHE", str(layout.root / "model-cache"))
    with pytest.raises(RegistryError, match=f"{registry.url}.*{MODEL}@champion"):
        champion_uri(params, layout.root)
    with pytest.raises(RegistryError, match=registry.url):
        promote(params, v2, layout=layout)
    with pytest.raises(RegistryError, match=registry.url):
        rollback(params, layout)
    with pytest.raises(RegistryError, match=f"{MODEL}@champion.*could not be read"):
        local_model_dir(f"models:/{MODEL}@champion", params, layout.root)
    assert _aliases(store) == {"champion": v1}

    # The rerun (here on the same database through the embedded store) breaks the expired lease and
    # promotes v2 normally.
    _short_lease(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registry.backend_store}")
    done = promote(params, v2, layout=layout)
    assert done.promote and done.applied and _aliases(store) == {"champion": v2, "previous": v1}
    assert store.search_registered_models(f"name = '{MODEL}{LOCK_SUFFIX}'") == []


def test_registry_stopped_after_the_commit_point_rerun_finishes(registry, env, monkeypatch) -> None:
    from duelguard.errors import RegistryError
    from duelguard.registry.registry import PROMOTION_TAG, promote, rollback

    params, layout = env
    v1, v2, v3 = _bare_versions(params, layout, [0.50, 0.70, 0.90])
    promote(params, v1, layout=layout)
    promote(params, v2, layout=layout)
    store = _store(registry)
    assert _aliases(store) == {"champion": v2, "previous": v1}
    _short_lease(monkeypatch)

    _stop_server_on(monkeypatch, registry, "previous")  # the champion alias has moved to v3 already
    with pytest.raises(RegistryError, match=rf"v{v3} \(it IS the champion now; rerun.*{registry.url}"):
        promote(params, v3, layout=layout)
    assert _aliases(store) == {"champion": v3, "previous": v1}  # `previous` is stale for now
    assert store.get_model_version(MODEL, v3).tags.get(PROMOTION_TAG) is None

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registry.backend_store}")
    rerun = promote(params, v3, layout=layout)
    assert "finished its interrupted promotion" in rerun.note
    assert _aliases(store) == {"champion": v3, "previous": v2}
    assert store.get_model_version(MODEL, v3).tags[PROMOTION_TAG] == "promoted"
    assert "nothing to do" in promote(params, v3, layout=layout).note  # and now it is idempotent
    # Rollback follows what v3 replaced (v2), then what v2 replaced (v1).
    assert rollback(params, layout)["champion"] == v2 and _aliases(store) == {"champion": v2, "previous": v1}
    assert rollback(params, layout)["champion"] == v1 and _aliases(store) == {"champion": v1}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny backbone (its tokenizer trained once) for the module's classifiers."""
    return tmp_path_factory.mktemp("weights")


def _evaluated(params, layout, weights: Path) -> str:
    """A classifier of iteration 0 plus what the evaluate stage leaves for register: its MLflow run
    and the metrics JSON naming it (written here in that stage's format; the stage itself is tested
    in test_mlflow_registry.py)."""
    import mlflow

    from duelguard.fsio import atomic_write_json
    from duelguard.digest import model_digest
    from duelguard.tracking import configure

    model_dir = build_tiny_classifier(params, layout.classifier_dir(0), weights)
    configure(params, layout.root)
    with mlflow.start_run() as run:
        mlflow.log_metric("test_avg_f1", 0.5)
    split = params.promotion.eval_split
    atomic_write_json(layout.eval_metrics(0), {
        "mlflow_run_id": run.info.run_id, "model_dir": str(model_dir), "model_digest": model_digest(model_dir),
        "eval_set": {split: {"hash": "frozen-eval-set"}},
        split: {"avg_f1": 0.5, "f1_en": 0.5, "f1_fr": 0.5, "f1_es": 0.5, "f1_de": 0.5, "fpr": 0.0},
    })
    return run.info.run_id


def test_register_killed_before_its_record_does_not_duplicate(shared_registry, env, weights, monkeypatch) -> None:
    from mlflow import MlflowClient

    from duelguard.registry.registry import EVAL_RUN_TAG, register_classifier

    params, layout = env
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_registry.url)
    run_id = _evaluated(params, layout, weights)

    # `duelguard register` in a real process, SIGKILLed the moment it would write its record.
    kill = ("import os, signal, sys; import duelguard.registry.registry as r; "
            "r.atomic_write_json = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL); "
            "from duelguard.cli import main; sys.argv[0] = 'duelguard'; main()")
    done = subprocess.run([sys.executable, "-c", kill, "--profile", "tiny", "--root", str(layout.root), "register", "-i", "0"],
                          cwd=REPO_ROOT, env={**os.environ, "DUELGUARD_PROFILE": "tiny"}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    client = MlflowClient()
    created = client.search_model_versions(f"name='{MODEL}'")
    assert len(created) == 1 and created[0].tags[EVAL_RUN_TAG] == run_id and not layout.registry_record(0).exists()

    rerun = register_classifier(params, layout, 0)
    assert rerun["recovered"] and rerun["version"] == int(created[0].version)
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    assert json.loads(layout.registry_record(0).read_text())["version"] == rerun["version"]
    assert register_classifier(params, layout, 0)["skipped"] is True


def _register_model(params, layout, model_dir: Path, avg_f1: float) -> str:
    import mlflow

    from duelguard.registry.models import log_classifier
    from duelguard.tracking import configure

    configure(params, layout.root)
    with mlflow.start_run():
        info = log_classifier(model_dir)
    return mlflow.register_model(info.model_uri, MODEL, tags=_metric_tags(params, avg_f1)).version


class _Prober(threading.Thread):
    """Queries the served model without pause; records (time sent, version that answered, scores) or the error."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.halt, self.answers, self.errors = url, threading.Event(), [], []

    def run(self) -> None:
        from duelguard.serving.client import GuardServingClient

        with GuardServingClient(self.url, retries=0) as client:
            while not self.halt.is_set():
                sent = time.monotonic()
                try:
                    scores, version = client.infer_with_version(PROBE)
                    scores = scores.probs
                    self.answers.append((sent, version, scores))
                except Exception as exc:  # noqa: BLE001 - every failure is recorded, none hidden
                    self.errors.append(repr(exc))
                time.sleep(0.02)  # ~30 requests/s: continuous, without starving the switch of the 2 cores

    def wait_for(self, t: float, timeout: float = 10.0) -> None:
        """Until an answer to a request sent after `t` has come back."""
        deadline = time.monotonic() + timeout
        while not self.since(t) and time.monotonic() < deadline:
            time.sleep(0.05)

    def since(self, t: float) -> list[tuple[float, str, np.ndarray]]:
        return [a for a in self.answers if a[0] >= t]


def test_promote_serve_rollback_serve_switches_without_a_failed_request(shared_registry, env, weights, monkeypatch,
                                                                         tmp_path) -> None:
    from duelguard.classifier.loader import load_classifier
    from duelguard.registry.registry import promote, rollback
    from duelguard.serving.client import GuardServingClient
    from duelguard.serving.release import serve_champion
    from duelguard.serving.server import stop_server

    params, layout = env
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_registry.url)
    monkeypatch.setenv("DUELGUARD_MODEL_CACHE", str(tmp_path / "model-cache"))
    dirs = [build_tiny_classifier(params, tmp_path / f"clf{k}", weights, variant=k) for k in (0, 1)]
    expected = {}
    for k, (model_dir, f1) in enumerate(zip(dirs, (0.5, 0.8))):
        version = _register_model(params, layout, model_dir, f1)
        expected[version] = load_classifier(model_dir).predict_proba(PROBE)
    v1, v2 = sorted(expected, key=int)
    assert np.abs(expected[v1] - expected[v2]).max() > 0.05  # the two versions are told apart by their answers
    ports = (free_port(), free_port(), free_port())
    state_dir = layout.root / params.serving.state_dir
    prober = None
    try:
        promote(params, v1, layout=layout)
        first = serve_champion(params, layout, ports=ports, timeout=120)
        assert (first["action"], str(first["version"])) == ("started", v1)
        prober = _Prober(first["server"].grpc_url)
        prober.start()
        steps = [("promote", v2), ("rollback", v1)]
        for step, target in steps:
            (promote(params, target, layout=layout) if step == "promote" else rollback(params, layout))
            switched_at = time.monotonic()
            done = serve_champion(params, layout, timeout=120)
            settled = time.monotonic()
            assert (done["action"], str(done["version"])) == ("switched", target), done
            prober.wait_for(settled)
            versions = [a[1] for a in prober.since(switched_at)]
            assert versions and versions[-1] == target, f"{step}: answers from {sorted(set(versions))}"
            assert all(a[1] == target for a in prober.since(settled)), f"{step}: an old version answered after the switch"
            repo_versions = sorted(p.name for p in (layout.root / params.serving.repository / "duelguard").iterdir()
                                   if p.name.isdigit())
            assert repo_versions == [target]  # the old version's files are gone once it is unloaded
            print(f"{step} -> v{target}: switch took {settled - switched_at:.1f} s")
        prober.halt.set()
        prober.join(timeout=30)
        # Every answer, before, during and after both switches, is exactly one version's own scores.
        assert prober.errors == []
        for _, version, scores in prober.answers:
            np.testing.assert_allclose(scores, expected[version], atol=1e-4)
        print(f"prober: {len(prober.answers)} answers, {len(prober.errors)} errors, versions seen "
              f"{[v for v in dict.fromkeys(a[1] for a in prober.answers)]}")
        # A long-lived client follows the switch: its thresholds belong to the version that answered.
        with GuardServingClient(first["server"].grpc_url) as client:
            assert client.served_version() == v1
        assert serve_champion(params, layout, timeout=120)["action"] == "unchanged"
    finally:
        if prober is not None:
            prober.halt.set()
        stop_server(state_dir)


def test_no_champion_is_an_error_never_the_latest_version(env, monkeypatch) -> None:
    """A registry whose every candidate was refused serves nothing (export, serve) rather than the newest version."""
    from duelguard.errors import ModelNotFoundError
    from duelguard.registry.registry import promote
    from duelguard.registry.lookup import champion_uri
    from duelguard.serving.export import export_stage
    from duelguard.serving.release import serve_champion

    params, layout = env
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the embedded sqlite store under tmp_path
    strict = params.model_copy(update={"promotion": params.promotion.model_copy(update={"max_benign_fpr": 0.1})})
    (version,) = _bare_versions(strict, layout, [0.9])
    from mlflow import MlflowClient

    MlflowClient().set_model_version_tag(MODEL, version, f"duelguard.metric.{strict.promotion.eval_split}.benign_fpr", "0.5")
    assert not promote(strict, version, layout=layout).promote  # refused: no champion
    for attempt in (lambda: champion_uri(strict, layout.root), lambda: export_stage(strict, layout, 0),
                    lambda: serve_champion(strict, layout)):
        with pytest.raises(ModelNotFoundError, match=f"{MODEL} has no 'champion'"):
            attempt()
    assert not (layout.root / strict.serving.repository).exists()
