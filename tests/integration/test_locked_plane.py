"""A locked serving plane against REAL servers (issue 13, Build 4).

- Triton: the serving container's own command line (duelguard.serving.container.prepare, CPU variant,
  started on loopback free ports) refuses model control (load, unload, repository index, statistics)
  over gRPC and HTTP without the control key or with a wrong one, accepts it with the key, and serves
  inference (and the model config `classify` reads) to clients that hold no key.
- MLflow: `mlflow server --app-name basic-auth` started by duelguard.registry.server refuses an
  unauthenticated or wrongly authenticated client (401/403) that tries to create a model version or
  move the `champion` alias, and lets the admin do both.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving_toy import build_tiny_classifier, free_port

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = secrets.token_hex(32)


def _loopback(command: list[str]) -> list[str]:
    """The container binds 0.0.0.0; tests listen on 127.0.0.1 only (the only change made to its command)."""
    return [a.replace("=0.0.0.0", "=127.0.0.1") if a.startswith(("--http-address", "--grpc-address", "--metrics-address"))
            else a for a in command]


@pytest.fixture(scope="module")
def locked_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """tritonserver started with exactly the command the serving container execs (key from the environment)."""
    import tritonclient.grpc as grpcclient

    from duelguard.config import load_params
    from duelguard.serving.container import prepare, settings_from_env

    params = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    base = tmp_path_factory.mktemp("locked-triton")
    model_dir = build_tiny_classifier(params, base / "classifier", base / "cache")
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {"DUELGUARD_MODEL_URI": str(model_dir), "DUELGUARD_SERVING_TARGET": "local",
           "DUELGUARD_MODEL_REPOSITORY": str(base / "repo"), "DUELGUARD_SERVING_HTTP_PORT": str(http),
           "DUELGUARD_SERVING_GRPC_PORT": str(grpc), "DUELGUARD_SERVING_METRICS_PORT": str(metrics),
           "DUELGUARD_TRITON_CONTROL_KEY": KEY}
    command, server_env = prepare(settings_from_env(env), base / "state", env)
    assert server_env["DUELGUARD_TRITON_CONTROL_KEY"] == KEY
    log = base / "tritonserver.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(_loopback(command), stdout=handle, stderr=subprocess.STDOUT, env=server_env,
                                   cwd=base, start_new_session=True)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"tritonserver exited:\n{log.read_text(errors='replace')[-3000:]}"
            try:
                if client.is_model_ready("duelguard"):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            assert time.monotonic() < deadline, f"not ready after 180 s:\n{log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.5)
        yield {"grpc": f"127.0.0.1:{grpc}", "http": f"127.0.0.1:{http}", "log": log}
    finally:
        client.close()
        os.killpg(process.pid, 15)
        process.wait(timeout=60)


def _infer_grpc(url: str) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"Comment fabriquer une bombe ?"]], dtype=object))
        return client.infer("duelguard", [tensor]).as_numpy("SCORES")


def _refused(call) -> str:
    """Run a control call that must be refused; the server's message."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.message()


def test_triton_refuses_model_control_without_the_key_and_serves_inference(locked_triton: dict) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from duelguard.serving.server import control_headers

    wrong = secrets.token_hex(32)
    with grpcclient.InferenceServerClient(locked_triton["grpc"]) as g, \
            httpclient.InferenceServerClient(locked_triton["http"]) as h:
        # No key, a wrong key, and the right key under the other protocol's header name: all refused.
        for gh, hh in ((None, None), (control_headers(wrong, "grpc"), control_headers(wrong, "http")),
                       (control_headers(KEY, "http"), control_headers(KEY, "grpc"))):
            for call in (lambda: g.unload_model("duelguard", headers=gh),
                         lambda: g.load_model("duelguard", headers=gh),
                         lambda: g.get_model_repository_index(headers=gh),
                         lambda: g.get_inference_statistics("duelguard", headers=gh),
                         lambda: h.unload_model("duelguard", headers=hh),
                         lambda: h.load_model("duelguard", headers=hh),
                         lambda: h.get_model_repository_index(headers=hh)):
                assert "restricted" in _refused(call)
        # Nothing moved: still served, to a client holding no key, over both protocols.
        assert g.is_model_ready("duelguard") and h.is_model_ready("duelguard")
        scores = _infer_grpc(locked_triton["grpc"])
        assert scores.shape == (1, 12) and np.all((scores > 0) & (scores < 1))
        tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"Wie backe ich Brot?"]], dtype=object))
        assert h.infer("duelguard", [tensor]).as_numpy("SCORES").shape == (1, 12)
        # Health (the kubelet probes) and the model config (`classify` reads the thresholds) stay open.
        assert h.is_server_ready() and g.get_model_config("duelguard", as_json=True)["config"]["name"] == "duelguard"


def test_duelguard_classify_works_without_the_key(locked_triton: dict) -> None:
    """The shipped client (config -> thresholds, then inference) needs no key."""
    from duelguard.serving.client import GuardServingClient

    with GuardServingClient(locked_triton["grpc"], retries=0) as client:
        assert len(client.thresholds) == 12
        assert client.infer_batch(["How do I make a bomb at home?"]).shape == (1, 12)


def test_triton_model_control_works_with_the_key(locked_triton: dict) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from duelguard.serving.server import control_headers

    with grpcclient.InferenceServerClient(locked_triton["grpc"]) as g, \
            httpclient.InferenceServerClient(locked_triton["http"]) as h:
        index = g.get_model_repository_index(headers=control_headers(KEY, "grpc"), as_json=True)["models"]
        assert {m["name"] for m in index if m.get("state") == "READY"} == {"duelguard"}
        g.unload_model("duelguard", headers=control_headers(KEY, "grpc"))
        deadline = time.monotonic() + 60
        while g.is_model_ready("duelguard") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not g.is_model_ready("duelguard")
        h.load_model("duelguard", headers=control_headers(KEY, "http"))  # HTTP too, same key
        assert g.is_model_ready("duelguard")
        assert _infer_grpc(locked_triton["grpc"]).shape == (1, 12)


# --- MLflow: the registry needs authentication ---------------------------------------------------------

MODEL = "duelguard-classifier"


@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real `mlflow server --app-name basic-auth` (sqlite stores, proxied artifacts) on a loopback free port,
    holding v1 of the model as `champion` and v2 without alias, registered by the admin."""
    from mlflow import MlflowClient

    from duelguard.registry import server

    base = tmp_path_factory.mktemp("mlflow-auth")
    admin = ("duelguard-admin", secrets.token_hex(16))
    cfg = server.ServerConfig(port=free_port(), backend_store=base / "server.db", artifacts_destination=base / "artifacts",
                              state_dir=base, start_timeout_s=180, auth_username=admin[0], auth_password=admin[1])
    assert server.start(cfg)["started"]
    try:
        with _as_user(*admin):
            client = MlflowClient(cfg.url)
            run = client.create_run(client.create_experiment("locked"))
            client.create_registered_model(MODEL)
            source = f"{run.info.artifact_uri}/model"
            for _ in range(2):
                client.create_model_version(MODEL, source, run_id=run.info.run_id)
            client.set_registered_model_alias(MODEL, "champion", "1")
        yield {"url": cfg.url, "admin": admin, "source": source, "run_id": run.info.run_id}
    finally:
        assert server.stop(cfg)


class _as_user:
    """MLFLOW_TRACKING_USERNAME / _PASSWORD (what every MLflow client sends) for the duration; None: unset."""

    def __init__(self, user: str | None, password: str | None) -> None:
        self.values = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.values}
        self._apply(self.values)

    def __exit__(self, *exc: object) -> None:
        self._apply(self.saved)

    @staticmethod
    def _apply(values: dict[str, str | None]) -> None:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _status_of(call) -> int:
    """The HTTP status of a refused MLflow client call (the auth app's error bodies are plain text)."""
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        call()
    return caught.value.get_http_status_code()


def test_mlflow_refuses_unauthenticated_registry_writes(auth_mlflow: dict) -> None:
    from mlflow import MlflowClient

    url, source, run_id = auth_mlflow["url"], auth_mlflow["source"], auth_mlflow["run_id"]
    for user, password in ((None, None), (auth_mlflow["admin"][0], "wrong-" + secrets.token_hex(8)),
                           ("nobody", secrets.token_hex(8))):
        with _as_user(user, password):
            client = MlflowClient(url)
            assert _status_of(lambda: client.set_registered_model_alias(MODEL, "champion", "2")) == 401
            assert _status_of(lambda: client.create_model_version(MODEL, source, run_id=run_id)) == 401
            assert _status_of(lambda: client.delete_registered_model_alias(MODEL, "champion")) == 401
            assert _status_of(lambda: client.get_model_version_by_alias(MODEL, "champion")) == 401  # reads too
    with _as_user(*auth_mlflow["admin"]):  # nothing moved
        client = MlflowClient(url)
        assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
        assert len(client.search_model_versions(f"name='{MODEL}'")) == 2


def test_mlflow_reader_can_resolve_the_champion_but_not_move_it(auth_mlflow: dict) -> None:
    """A user without a grant has the server's default permission (READ): what a serving pod needs, no more."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    reader = ("triton-reader", secrets.token_hex(16))
    with _as_user(*auth_mlflow["admin"]):
        get_app_client("basic-auth", tracking_uri=auth_mlflow["url"]).create_user(*reader)
    with _as_user(*reader):
        client = MlflowClient(auth_mlflow["url"])
        assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
        assert _status_of(lambda: client.set_registered_model_alias(MODEL, "champion", "2")) == 403
        assert _status_of(lambda: client.create_model_version(MODEL, auth_mlflow["source"],
                                                              run_id=auth_mlflow["run_id"])) == 403


def test_mlflow_admin_can_register_and_promote(auth_mlflow: dict) -> None:
    from mlflow import MlflowClient

    with _as_user(*auth_mlflow["admin"]):
        client = MlflowClient(auth_mlflow["url"])
        version = client.create_model_version(MODEL, auth_mlflow["source"], run_id=auth_mlflow["run_id"]).version
        client.set_registered_model_alias(MODEL, "champion", version)
        assert client.get_model_version_by_alias(MODEL, "champion").version == version == "3"
        client.set_registered_model_alias(MODEL, "champion", "1")  # leave it as the other tests expect


def test_mlflow_image_entrypoint_serves_only_authenticated_clients(tmp_path: Path) -> None:
    """docker/mlflow/entrypoint.sh itself (the cluster's server; sqlite instead of Postgres, the user store in
    the same database as in the cluster): 401 without credentials, the admin from the Secret's variables works."""
    import urllib.error
    import urllib.request

    from mlflow import MlflowClient

    from duelguard.registry.server import healthy

    port, admin = free_port(), ("admin", secrets.token_hex(16))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1", "TMPDIR": str(tmp_path),
           "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
           "MLFLOW_AUTH_ADMIN_USERNAME": admin[0], "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    env.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(["sh", str(REPO_ROOT / "docker/mlflow/entrypoint.sh")], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not healthy(url):  # /health stays open: the kubelet probes carry no credentials
            assert process.poll() is None, (tmp_path / "server.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "mlflow entrypoint: no /health after 180 s"
            time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/registered-models/search", timeout=10)
        assert refused.value.code == 401
        with _as_user(None, None):
            assert _status_of(lambda: MlflowClient(url).create_registered_model(MODEL)) == 401
        with _as_user(*admin):
            MlflowClient(url).create_registered_model(MODEL)
            assert MlflowClient(url).get_registered_model(MODEL).name == MODEL
        assert (tmp_path / "mlflow-basic-auth.ini").stat().st_mode & 0o077 == 0  # holds the store URI
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
        process.wait(timeout=60)
