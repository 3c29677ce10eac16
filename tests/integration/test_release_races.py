"""Release races and stale caches (issue 13, Build 5), each against the real parts: a real `mlflow server`
(one per module, each test on its own registered model) and, for serving, the real tritonserver of
the nvidia-pytriton wheel queried over gRPC.

- two promotions at once: both decide against the same champion, then write; compare-and-set under
  the registry lease makes the second one decide again against the new champion;
- a re-created registered model hands out v1 again for other weights: the download cache and the
  Triton repository must not answer with the old v1;
- a candidate whose registered artifact does not load is refused before the alias moves;
- an orphan tritonserver on our port is not "our server ready", nor is a server serving another version;
- a failed switch leaves the repository describing what the server has loaded, not what was on disk;
- the serving container's champion watcher switches a running server to a newly promoted champion.
"""

from __future__ import annotations

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
PROBE = SAMPLE_TEXTS[:2]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One real mlflow server for the module (tests keep apart by registered model name)."""
    from duelguard.registry import server

    base = tmp_path_factory.mktemp("mlflow-races")
    cfg = server.ServerConfig(port=free_port(), backend_store=base / "server.db",
                              artifacts_destination=base / "artifacts", state_dir=base, start_timeout_s=180)
    server.start(cfg)
    yield cfg
    server.stop(cfg)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny backbone (its tokenizer trained once) for the module's classifiers."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture()
def env(request: pytest.FixtureRequest, tmp_path: Path, tiny_params, mlflow_server, monkeypatch: pytest.MonkeyPatch):
    """Params (a registered model of this test alone, no load check unless a test turns it on) + a Layout in
    tmp_path; the module's mlflow server; downloads cached in tmp_path."""
    from duelguard.layout import Layout

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("DUELGUARD_MODEL_CACHE", str(tmp_path / "model-cache"))
    name = "dg-" + request.node.name.replace("_", "-")[:60]
    params = tiny_params.model_copy(update={
        "tracking": tiny_params.tracking.model_copy(update={"registered_model": name}),
        "promotion": tiny_params.promotion.model_copy(update={"load_check": False}),
    })
    return params, Layout.from_params(params, root=tmp_path)


def _client():
    """A client of this module's server, named explicitly: an earlier test in the same process may have
    set mlflow's global tracking URI, which a bare MlflowClient() would prefer to the environment."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"], registry_uri=os.environ["MLFLOW_TRACKING_URI"])


def _metric_tags(params, avg_f1: float, fpr: float = 0.0) -> dict[str, str]:
    """Tags as `register` writes them, on the promotion set itself (nothing is re-evaluated); probe F1 0."""
    from duelguard.evalset import eval_set_hash, evaluation_records
    from duelguard.layout import Layout
    from duelguard.registry.rules import VersionMetrics
    from duelguard.taxonomy import TARGET_LANGUAGES

    split = params.promotion.eval_split
    frozen = eval_set_hash(evaluation_records(split, params, Layout.from_params(params)))
    metrics = VersionMetrics(avg_f1, {lang: avg_f1 for lang in TARGET_LANGUAGES}, fpr, frozen, probe_avg_f1=0.0)
    return metrics.to_tags(split)


def _bare_versions(params, scores: list[float]) -> list[str]:
    """Registered versions with metric tags only (promotion without the load check needs nothing else)."""
    client = _client()
    name = params.tracking.registered_model
    client.create_registered_model(name)
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(params.tracking.experiment)
    run = client.create_run(experiment_id).info.run_id
    return [client.create_model_version(name, f"runs:/{run}/classifier", run_id=run,
                                        tags=_metric_tags(params, f1)).version for f1 in scores]


def _register_model(params, layout, model_dir: Path, avg_f1: float) -> str:
    """Log `model_dir` as a pyfunc model and register it with metric tags (what `register` does)."""
    import mlflow

    from duelguard.registry.models import log_classifier
    from duelguard.tracking import configure

    configure(params, layout.root)
    with mlflow.start_run():
        info = log_classifier(model_dir)
    return mlflow.register_model(info.model_uri, params.tracking.registered_model,
                                 tags=_metric_tags(params, avg_f1)).version


def _aliases(name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in _client().get_registered_model(name).aliases.items()}


# compare-and-set promotion -------------------------------------------------------------------------
def test_concurrent_promotions_compare_and_set(env, monkeypatch) -> None:
    """v2 (F1 0.7) and v3 (F1 0.6) promoted at the same moment against champion v1 (0.5). Both first
    decide against v1 (a barrier holds each until the other has decided too). Last-writer-wins would
    write both decisions made against v1 and leave whichever wrote last (v3: a worse champion).
    Compare-and-set: whichever commits second finds the champion moved and is judged against the first;
    either way v2 ends as champion. (v3 is held back a moment, so usually v2 commits first and v3 is refused.)"""
    import duelguard.registry.registry as registry
    from duelguard.registry.registry import PROMOTION_TAG, promote

    params, layout = env
    name = params.tracking.registered_model
    v1, v2, v3 = _bare_versions(params, [0.5, 0.7, 0.6])
    assert promote(params, v1, layout=layout).applied

    barrier, seen = threading.Barrier(2, timeout=60), threading.local()
    original = registry.check_rules

    def check_rules_after_both_decided(*args, **kwargs):  # noqa: ANN002, ANN003 - check_rules' signature
        checks = original(*args, **kwargs)
        if not getattr(seen, "waited", False):  # only each thread's first decision waits for the other's
            seen.waited = True
            barrier.wait()
            if threading.current_thread().name == "promote-v3":
                time.sleep(0.5)
        return checks

    monkeypatch.setattr(registry, "check_rules", check_rules_after_both_decided)
    decisions, errors = {}, []

    def run(version: str) -> None:
        try:
            decisions[version] = promote(params, version, layout=layout)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(v,), name=f"promote-v{v}") for v in (v2, v3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and set(decisions) == {v2, v3}
    first, second = (v2, v3) if decisions[v3].champion_version == v2 else (v3, v2)  # the order they committed in
    assert decisions[first].champion_version == v1 and decisions[first].promote
    assert decisions[second].champion_version == first  # judged against the champion of its commit, not v1
    client = _client()
    assert _aliases(name) == {"champion": v2, "previous": decisions[v2].champion_version}
    assert client.get_model_version(name, v2).tags[PROMOTION_TAG] == "promoted"
    # v3 judged against v2 (the usual order) is refused for its F1; judged against v1 it was rightly promoted.
    assert decisions[v3].promote == (first == v3)
    assert client.get_model_version(name, v3).tags[PROMOTION_TAG] == ("promoted" if first == v3 else "refused")
    print(f"committed first: v{first}; v{second} judged against v{decisions[second].champion_version}")
    assert client.search_registered_models(f"name = '{name}.promotion-lock'") == []  # the lease is released


def test_an_expired_lease_is_broken_and_a_live_one_waited_for(env, monkeypatch) -> None:
    """A promotion whose holder died (its lease expired) does not block the registry forever; a live
    lease makes a rollback wait for it, then the rollback sees the promotion's result."""
    import duelguard.registry.registry as registry
    from duelguard.registry.registry import LOCK_EXPIRES_TAG, LOCK_HOLDER_TAG, LOCK_SUFFIX, promote, rollback

    params, layout = env
    name = params.tracking.registered_model
    v1, v2 = _bare_versions(params, [0.5, 0.7])
    client = _client()
    client.create_registered_model(name + LOCK_SUFFIX, tags={LOCK_HOLDER_TAG: "dead-holder",
                                                             LOCK_EXPIRES_TAG: f"{time.time() - 1:.3f}"})
    assert promote(params, v1, layout=layout).applied and _aliases(name) == {"champion": v1}

    live = {LOCK_HOLDER_TAG: "live-holder", LOCK_EXPIRES_TAG: f"{time.time() + 60:.3f}"}
    client.create_registered_model(name + LOCK_SUFFIX, tags=live)
    monkeypatch.setattr(registry, "LEASE_WAIT_S", 1.0)
    from duelguard.errors import RegistryError

    with pytest.raises(RegistryError, match=r"lease .* is held by holder live-holder"):
        rollback(params, layout)
    client.delete_registered_model(name + LOCK_SUFFIX)
    assert promote(params, v2, layout=layout).applied
    assert rollback(params, layout)["champion"] == v1


# content-addressed model cache ---------------------------------------------------------------------
def test_recreated_registry_v1_is_not_answered_from_the_old_v1(env, weights, tmp_path) -> None:
    """The registered model is deleted and registered again: its new v1 holds other weights. The
    download cache and the Triton repository's "already holds it" check must both see new weights."""
    from duelguard.classifier.loader import load_classifier
    from duelguard.registry.models import local_model_dir
    from duelguard.serving.triton_repository import export_triton, holds, resolve_ref

    params, layout = env
    name = params.tracking.registered_model
    dirs = [build_tiny_classifier(params, tmp_path / f"clf{k}", weights, variant=k) for k in (0, 1)]
    expected = [load_classifier(d).predict_proba(PROBE) for d in dirs]
    assert np.abs(expected[0] - expected[1]).max() > 0.05

    assert _register_model(params, layout, dirs[0], 0.5) == "1"
    first = local_model_dir(f"models:/{name}/1", params, layout.root)
    np.testing.assert_allclose(load_classifier(first).predict_proba(PROBE), expected[0], atol=1e-5)
    repo = tmp_path / "repo"
    export_triton(f"models:/{name}/1", repo, params.serving, params=params, root=layout.root)
    assert holds(repo, params.serving.model_name, resolve_ref(f"models:/{name}/1", params, layout.root))

    _client().delete_registered_model(name)
    assert _register_model(params, layout, dirs[1], 0.5) == "1"  # the same number, other weights
    second = local_model_dir(f"models:/{name}/1", params, layout.root)
    np.testing.assert_allclose(load_classifier(second).predict_proba(PROBE), expected[1], atol=1e-5)
    assert second != first
    assert not holds(repo, params.serving.model_name, resolve_ref(f"models:/{name}/1", params, layout.root))


# load check before the alias moves -----------------------------------------------------------------
def test_a_candidate_that_does_not_load_is_refused_before_the_alias_moves(env, weights, tmp_path) -> None:
    """Its metric tags are excellent and its digest matches (it was registered broken), but its weights
    file is truncated: serving could never load it, so promotion must not make it the champion."""
    from duelguard.registry.registry import PROMOTION_TAG, promote

    params, layout = env
    params = params.model_copy(update={"promotion": params.promotion.model_copy(update={"load_check": True})})
    name = params.tracking.registered_model
    good = build_tiny_classifier(params, tmp_path / "good", weights)
    broken = build_tiny_classifier(params, tmp_path / "broken", weights, variant=2)
    weights_file = max((p for p in broken.rglob("*.safetensors")), key=lambda p: p.stat().st_size)
    weights_file.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 3])
    v1 = _register_model(params, layout, good, 0.5)
    v2 = _register_model(params, layout, broken, 0.9)

    started = time.perf_counter()
    first = promote(params, v1, layout=layout)
    cost = time.perf_counter() - started
    assert first.applied and first.promote, first.describe()

    refused = promote(params, v2, layout=layout)
    assert _aliases(name) == {"champion": v1}
    assert not refused.promote and [c.rule for c in refused.checks if not c.passed] == ["loads"]
    assert "does not load/export/serve" in refused.reasons[0] and f"models:/{name}/{v2}" in refused.reasons[0]
    assert _client().get_model_version(name, v2).tags[PROMOTION_TAG] == "refused"
    loads = next(c for c in first.checks if c.rule == "loads")
    print(f"load check on a good candidate: {loads.detail}; its whole promotion {cost:.1f} s")


# serving: version- and identity-checked readiness, truthful restore, the champion watcher ---------
def _served(url: str, texts: list[str] = PROBE) -> tuple[str, np.ndarray]:
    """(model version that answered, SCORES) from a raw gRPC request to the served `duelguard` model."""
    import tritonclient.grpc as grpcclient

    rows = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
    client = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput("TEXT", list(rows.shape), "BYTES")
        tensor.set_data_from_numpy(rows)
        result = client.infer("duelguard", [tensor], outputs=[grpcclient.InferRequestedOutput("SCORES")])
        return str(result.get_response().model_version), result.as_numpy("SCORES")
    finally:
        client.close()


def test_an_orphan_server_on_our_port_is_not_our_server_ready(env, weights, tmp_path) -> None:
    """An earlier tritonserver (v1 of another repository) still holds the ports. Starting ours must fail
    (ours cannot bind and exits), not report ready because the orphan answers; and a server that serves
    another version than the one expected is not ready either."""
    from duelguard.errors import ServingError
    from duelguard.serving.server import start_server, stop_server, wait_ready
    from duelguard.serving.triton_repository import export_triton

    params, _ = env
    model_dir = build_tiny_classifier(params, tmp_path / "clf", weights)
    for repo in ("orphan-repo", "our-repo"):
        export_triton(model_dir, tmp_path / repo, params.serving)
    ports = (free_port(), free_port(), free_port())
    orphan = start_server(tmp_path / "orphan-repo", tmp_path / "orphan-state", params.serving.model_name, *ports,
                          timeout=120)
    try:
        assert _served(orphan.grpc_url)[0] == "1"
        started = time.monotonic()
        with pytest.raises(ServingError, match=r"exited during startup.*another server") as err:
            start_server(tmp_path / "our-repo", tmp_path / "our-state", params.serving.model_name, *ports, timeout=120)
        print(f"refused after {time.monotonic() - started:.1f} s: {str(err.value).splitlines()[0]}")
        with pytest.raises(ServingError, match="version 2"):
            wait_ready(orphan, timeout=3, version=2)  # the orphan is live and ready, but with v1 only
        wait_ready(orphan, timeout=10, version=1)
    finally:
        stop_server(tmp_path / "orphan-state")
        stop_server(tmp_path / "our-state")


def _serving_champion(params, layout, versions: dict[str, Path]) -> dict:
    """Promote the first version and start a real tritonserver on it through `duelguard serve`'s code."""
    from duelguard.registry.registry import promote
    from duelguard.serving.release import serve_champion

    first = next(iter(versions))
    assert promote(params, first, layout=layout).applied
    done = serve_champion(params, layout, ports=(free_port(), free_port(), free_port()), timeout=120)
    assert (done["action"], str(done["version"])) == ("started", first)
    return done


def test_a_failed_switch_restores_the_config_the_server_has_loaded(env, weights, tmp_path, monkeypatch) -> None:
    """The server serves v1. An export of v2 reached the disk and never loaded (its config names v2).
    Then the champion becomes v3, whose load fails. The repository must be put back to v1, what the
    server runs (v2's directory is gone by then), and be loadable as such."""
    import duelguard.serving.triton_repository as triton_repository
    from duelguard.errors import ServingError
    from duelguard.registry.registry import promote
    from duelguard.serving.release import serve_champion
    from duelguard.serving.server import load_models, ready_versions, stop_server
    from duelguard.serving.triton_repository import export_triton, served_ref

    params, layout = env
    name = params.tracking.registered_model
    versions = {_register_model(params, layout, build_tiny_classifier(params, tmp_path / f"c{k}", weights, variant=k),
                                0.5 + 0.1 * k): tmp_path / f"c{k}" for k in range(3)}
    v1, v2, v3 = versions
    repo = layout.root / params.serving.repository
    try:
        info = _serving_champion(params, layout, versions)["server"]
        export_triton(f"models:/{name}/{v2}", repo, params.serving, params=params, root=layout.root, keep_versions=(1,))
        assert served_ref(repo, "duelguard").version == int(v2)  # disk and server disagree from here on

        original = triton_repository.export_triton

        def export_unloadable(model, out, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - export_triton's
            model_dir = original(model, out, *args, **kwargs)
            if str(model).endswith(f"/{v3}"):  # the ONNX file the Python backend opens at load: corrupt
                (model_dir / v3 / "model.onnx").write_bytes(b"not an onnx model")
            return model_dir

        monkeypatch.setattr(triton_repository, "export_triton", export_unloadable)
        assert promote(params, v3, layout=layout).applied
        with pytest.raises(ServingError, match="could not load 'duelguard'"):
            serve_champion(params, layout, timeout=120)
        restored = served_ref(repo, "duelguard")  # None: the config names a version whose files are gone
        assert restored is not None and restored.version == int(v1)  # what the server has loaded
        assert sorted(p.name for p in (repo / "duelguard").iterdir() if p.name.isdigit()) == [v1]
        assert _served(info.grpc_url)[0] == v1
        load_models(info, ["duelguard"], timeout=120)  # the restored config loads: disk and server agree
        assert ready_versions(info, "duelguard") == {int(v1)} and _served(info.grpc_url)[0] == v1
    finally:
        stop_server(layout.serving_state)


def _loopback(command: list[str]) -> list[str]:
    """The container binds 0.0.0.0; the test listens on 127.0.0.1 only (the only change to its command)."""
    return [a.replace("=0.0.0.0", "=127.0.0.1") if a.startswith(("--http-address", "--grpc-address", "--metrics-address"))
            else a for a in command]


def test_the_container_watcher_switches_to_a_newly_promoted_champion(env, weights, tmp_path) -> None:
    """The serving container as the image runs it: prepare() exports models:/NAME@champion (v1) and gives
    the tritonserver command, model control locked behind a key; the watcher process (watch_main, as
    main() starts it, with the server's environment) polls the alias every 0.5 s. After `promote v2` the
    server answers with v2 without a restart; when the server is gone, the watcher exits."""
    import secrets
    import signal

    from duelguard.registry.registry import promote
    from duelguard.serving.container import WATCH_INTERVAL_ENV, WATCH_SERVER_PID_ENV, prepare, settings_from_env
    from duelguard.serving.server import wait_ready

    params, layout = env
    name = params.tracking.registered_model
    versions = [_register_model(params, layout, build_tiny_classifier(params, tmp_path / f"c{k}", weights, variant=k),
                                0.5 + 0.2 * k) for k in range(2)]
    v1, v2 = versions
    assert promote(params, v1, layout=layout).applied
    http, grpc, metrics = free_port(), free_port(), free_port()
    container_env = {**os.environ, "DUELGUARD_MODEL_URI": f"models:/{name}@champion", "DUELGUARD_SERVING_TARGET": "local",
                     "DUELGUARD_MODEL_REPOSITORY": str(tmp_path / "models"), "DUELGUARD_SERVING_HTTP_PORT": str(http),
                     "DUELGUARD_SERVING_GRPC_PORT": str(grpc), "DUELGUARD_SERVING_METRICS_PORT": str(metrics),
                     "DUELGUARD_TRITON_CONTROL_KEY": secrets.token_hex(32), WATCH_INTERVAL_ENV: "0.5"}
    settings = settings_from_env(container_env)
    command, server_env = prepare(settings, tmp_path / "state", container_env)
    server = watcher = None
    log_path = tmp_path / "watcher.log"
    try:
        with (tmp_path / "tritonserver.log").open("wb") as handle:
            server = subprocess.Popen(_loopback(command), stdout=handle, stderr=subprocess.STDOUT, env=server_env,
                                      cwd=tmp_path, start_new_session=True)
        from duelguard.serving.watcher import _container_server

        wait_ready(_container_server(settings, server.pid), timeout=180, version=int(v1))
        assert _served(f"127.0.0.1:{grpc}")[0] == v1
        with log_path.open("w") as log_file:  # a file, not a pipe: a chatty watcher must never block on it
            watcher = subprocess.Popen([sys.executable, "-c",
                                        "from duelguard.serving.watcher import watch_main; watch_main()"],
                                       env={**container_env, **server_env, WATCH_SERVER_PID_ENV: str(server.pid)},
                                       stdout=log_file, stderr=subprocess.STDOUT)
        time.sleep(2)  # a few polls with nothing to do
        assert watcher.poll() is None and _served(f"127.0.0.1:{grpc}")[0] == v1, log_path.read_text()
        promoted_at = time.monotonic()
        assert promote(params, v2, layout=layout).applied
        deadline = time.monotonic() + 120
        while _served(f"127.0.0.1:{grpc}")[0] != v2 and time.monotonic() < deadline and watcher.poll() is None:
            time.sleep(0.5)
        assert _served(f"127.0.0.1:{grpc}")[0] == v2, log_path.read_text()
        print(f"the server answered with v{v2} {time.monotonic() - promoted_at:.1f} s after the promotion")
        assert sorted(p.name for p in (tmp_path / "models" / "duelguard").iterdir() if p.name.isdigit()) == [v2]
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        watcher.wait(timeout=30)  # the server is gone: the watcher ends
        log = log_path.read_text()
        assert f"-> v{v2} (switched" in log, log
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
