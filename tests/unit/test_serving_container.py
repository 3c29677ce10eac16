"""The serving image's entrypoint logic without Docker: settings from the environment (defaults from
the one Serving schema), the CPU and NVIDIA variants produced by the same export and command code,
the NVIDIA variant's configs parsed with Triton's own protobuf schema; and stop_server's PID check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from duelguard.config import ConfigError, Serving
from serving_toy import build_tiny_classifier

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from duelguard.config import load_params

    base = tmp_path_factory.mktemp("clf")
    return build_tiny_classifier(load_params(REPO_PARAMS, profile="tiny"), base / "model", base / "cache")


def _parse(path: Path):
    from duelguard.serving.triton_repository import parse_config

    return parse_config(path)


def test_settings_come_from_the_environment_with_schema_defaults() -> None:
    from duelguard.config import load_params
    from duelguard.serving.container import settings_from_env

    settings = settings_from_env({"DUELGUARD_MODEL_URI": "models:/duelguard-classifier@champion"})
    assert settings.serving == Serving() and settings.target == "nvidia" and settings.repository == Path("/models")
    # params.yaml's default profile serves with the same values the image uses when nothing is set.
    assert load_params(REPO_PARAMS, profile="default").serving == settings.serving
    tuned = settings_from_env({"DUELGUARD_MODEL_URI": "/m", "DUELGUARD_SERVING_TARGET": "local",
                               "DUELGUARD_MODEL_REPOSITORY": "/srv/repo", "DUELGUARD_SERVING_MAX_BATCH_SIZE": "8",
                               "DUELGUARD_SERVING_PREFERRED_BATCH_SIZES": "[2, 4]"})
    assert (tuned.target, tuned.repository) == ("local", Path("/srv/repo"))
    assert tuned.serving.max_batch_size == 8 and tuned.serving.preferred_batch_sizes == [2, 4]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "DUELGUARD_MODEL_URI is not set"),
        ({"DUELGUARD_MODEL_URI": "/m", "DUELGUARD_SERVING_TARGET": "gpu"}, "DUELGUARD_SERVING_TARGET='gpu'"),
        ({"DUELGUARD_MODEL_URI": "/m", "DUELGUARD_SERVING_MAX_BATCH_SIZE": "lots"}, "DUELGUARD_SERVING_MAX_BATCH_SIZE"),
        ({"DUELGUARD_MODEL_URI": "/m", "DUELGUARD_SERVING_PREFERRED_BATCH_SIZES": "8,16"}, "expected a JSON list"),
    ],
    ids=["no-uri", "bad-target", "bad-int", "bad-list"],
)
def test_bad_environment_is_a_clear_error(env: dict, message: str) -> None:
    from duelguard.serving.container import settings_from_env

    with pytest.raises(ConfigError, match=message):
        settings_from_env(env)


def test_nvidia_and_cpu_variants_come_from_the_same_code(classifier_dir: Path, tmp_path: Path) -> None:
    from duelguard.serving.container import prepare, settings_from_env
    from duelguard.serving.server import bundled_binary
    from duelguard.serving.triton_repository import NETWORK_MODEL

    made, key = {}, "0123456789abcdef" * 4
    for target in ("nvidia", "local"):
        env = {"DUELGUARD_MODEL_URI": str(classifier_dir), "DUELGUARD_SERVING_TARGET": target,
               "DUELGUARD_MODEL_REPOSITORY": str(tmp_path / target), "DUELGUARD_TRITON_CONTROL_KEY": key}
        made[target], server_env = prepare(settings_from_env(env), tmp_path / f"state-{target}", env)
        assert server_env["DUELGUARD_TRITON_CONTROL_KEY"] == key  # for a helper in the container that switches models

    nvidia, local = made["nvidia"], made["local"]
    # Both variants lock model control (and every other non-inference protocol) behind the key.
    for command in (nvidia, local):
        restricted = "model-repository,shared-memory,statistics,trace,logging"
        assert f"--grpc-restricted-protocol={restricted}:duelguard-control-key={key}" in command
        assert f"--http-restricted-api={restricted}:duelguard-control-key={key}" in command
    # NVIDIA: the image's native tritonserver, GPU pools left on, both models loaded (network first).
    assert Path(nvidia[0]).name == "tritonserver" and Path(nvidia[0]) != bundled_binary()
    assert [a for a in nvidia if a.startswith("--load-model")] == [f"--load-model={NETWORK_MODEL}", "--load-model=duelguard"]
    assert "--model-control-mode=explicit" in nvidia and "--grpc-address=0.0.0.0" in nvidia
    assert not any(a.startswith(("--allow-gpu-metrics", "--cuda-memory-pool", "--backend-directory")) for a in nvidia)
    network = _parse(tmp_path / "nvidia" / NETWORK_MODEL / "config.pbtxt")
    assert network.platform == "onnxruntime_onnx" and network.instance_group[0].kind == network.instance_group[0].KIND_GPU
    assert network.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    assert network.max_batch_size == Serving().chunk_batch_size
    assert list(network.version_policy.specific.versions) == [1]
    assert (tmp_path / "nvidia" / NETWORK_MODEL / "1" / "model.onnx").is_file()
    # CPU: the wheel's binary with its assembled Python backend and the CPU-only flags.
    assert local[0] == str(bundled_binary()) and [a for a in local if a.startswith("--load-model")] == ["--load-model=duelguard"]
    assert f"--backend-directory={tmp_path / 'state-local' / 'backends'}" in local
    assert "--allow-gpu-metrics=false" in local
    assert (tmp_path / "local" / "duelguard" / "1" / "model.onnx").is_file()
    # The `duelguard` model's config is the same in both but for the native network it calls.
    main = {t: _parse(tmp_path / t / "duelguard" / "config.pbtxt") for t in ("nvidia", "local")}
    assert main["nvidia"].parameters["network_model"].string_value == NETWORK_MODEL
    del main["nvidia"].parameters["network_model"]
    assert main["nvidia"] == main["local"]
    meta = json.loads((tmp_path / "local" / "duelguard" / "1" / "duelguard.json").read_text())
    assert meta["concrete"] == str(classifier_dir.resolve()) and meta["store"] == ""


def test_model_control_key_comes_from_the_environment_and_is_never_absent() -> None:
    """A set key is checked; an unset one is random (control locked, never open); the log line masks it."""
    from duelguard.serving.server import CONTROL_KEY_ENV, control_key, redact_command, triton_command

    good = "A1b2_C3d4-" * 4
    assert control_key({CONTROL_KEY_ENV: good}) == good
    first, second = control_key({}), control_key({})
    assert first != second and len(first) == 64  # 256 random bits each time
    for bad in ("", "x" * 31, "a" * 40 + ":b", "a" * 40 + "=b", "a" * 40 + ",b"):
        with pytest.raises(ConfigError, match=f"{CONTROL_KEY_ENV} must be at least 32 characters"):
            control_key({CONTROL_KEY_ENV: bad})
    for template in ("CHANGE_ME", "CHANGE_ME_TRITON_CONTROL_KEY_" + "0" * 32):  # infra/secrets.example's, even padded
        with pytest.raises(ConfigError, match="placeholder"):
            control_key({CONTROL_KEY_ENV: template})
    command = triton_command("tritonserver", Path("/models"), ["duelguard"], 1, 2, 3, control_key=good)
    assert any(good in a for a in command) and not any(good in a for a in redact_command(command, good))
    # Without a key (the local `duelguard serve` on 127.0.0.1) no restriction flag is added.
    assert not any("restricted" in a for a in triton_command("tritonserver", Path("/m"), ["duelguard"], 1, 2, 3))


def test_export_keeps_the_served_version_until_told_and_replaces_a_target(classifier_dir: Path, tmp_path: Path) -> None:
    from duelguard.serving.triton_repository import NETWORK_MODEL, export_triton, prune_versions

    repo = tmp_path / "repo"
    export_triton(classifier_dir, repo, Serving(), "nvidia")
    (repo / "duelguard" / "1").rename(repo / "duelguard" / "7")  # as if v7 were being served
    export_triton(classifier_dir, repo, Serving(), "local", keep_versions=(7,))
    assert sorted(p.name for p in (repo / "duelguard").iterdir() if p.is_dir()) == ["1", "7"]
    assert list(_parse(repo / "duelguard" / "config.pbtxt").version_policy.specific.versions) == [1]
    assert not (repo / NETWORK_MODEL).exists()  # the other target's network model is not left behind
    assert prune_versions(repo / "duelguard", {1}) == [7]
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_stop_server_never_signals_a_pid_that_is_not_tritonserver(tmp_path: Path) -> None:
    from duelguard.fsio import atomic_write_json
    from duelguard.serving.server import STATE_FILE, is_tritonserver, read_state, stop_server

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = {"pid": other.pid, "repository": str(tmp_path), "model_name": "duelguard", "http_port": 1,
                 "grpc_port": 2, "metrics_port": 3, "log": str(tmp_path / "log")}
        atomic_write_json(tmp_path / STATE_FILE, state)  # a stale record whose PID now belongs to another program
        assert not is_tritonserver(other.pid) and read_state(tmp_path) is None
        assert stop_server(tmp_path, timeout=1) is None
        assert other.poll() is None  # still running: not signalled
        assert not (tmp_path / STATE_FILE).exists()  # the stale record is gone
    finally:
        other.kill()
        other.wait()
