"""The serving image's entrypoint (`duelguard serve-container`): a model URI and the environment in,
a running tritonserver out. No params.yaml, no checkout: the image carries only the library.

Environment (docker/serving/Dockerfile sets the image's defaults; infra/base/platform/triton.yaml the pod's):
  DUELGUARD_MODEL_URI          required: models:/NAME@ALIAS, models:/NAME/N, runs:/..., or a classifier directory
  MLFLOW_TRACKING_URI          the registry an MLflow URI is resolved in (plus MLflow's own S3/auth variables)
  DUELGUARD_MODEL_REPOSITORY   where the Triton repository is written (default /models)
  DUELGUARD_SERVING_TARGET     nvidia: the network runs in Triton's native ONNX Runtime backend (GPU,
                               TensorRT) of NVIDIA's image; local: ONNX Runtime inside the Python
                               backend of the tritonserver shipped in the nvidia-pytriton wheel (CPU)
  DUELGUARD_SERVING_<FIELD>    any field of duelguard.config.Serving (max_batch_size, instance_count,
                               grpc_port, ...): the defaults are that schema's, the same that
                               params.yaml's `serving:` section is validated against; lists as JSON
  DUELGUARD_WATCH_INTERVAL_S   seconds between two re-resolutions of an alias URI (models:/NAME@ALIAS or
                               .../latest) by the champion watcher (default 30; 0 turns it off). When the
                               alias names another version, the watcher switches the local tritonserver
                               to it with `duelguard serve`'s switch (duelguard.serving.release), so every
                               pod converges on the current champion within one interval plus the switch

The repository is written by export_triton and the command built by triton_command: the same code as
`duelguard export-triton` / `duelguard serve`, so the CPU and NVIDIA variants differ only in the target.
A repository that already holds the resolved version (a restarted container) is not exported again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from duelguard.config import ConfigError, Serving
from duelguard.serving.triton_repository import TARGETS, Target

MODEL_URI_ENV = "DUELGUARD_MODEL_URI"
REPOSITORY_ENV = "DUELGUARD_MODEL_REPOSITORY"
TARGET_ENV = "DUELGUARD_SERVING_TARGET"
SERVING_PREFIX = "DUELGUARD_SERVING_"
DEFAULT_REPOSITORY = "/models"


@dataclass(frozen=True)
class ContainerSettings:
    model_uri: str
    repository: Path
    target: Target
    serving: Serving


def serving_from_env(env: Mapping[str, str]) -> Serving:
    """duelguard.config.Serving with DUELGUARD_SERVING_<FIELD> overrides (validated: a bad value names its variable)."""
    from pydantic import ValidationError

    overrides = {}
    for field, info in Serving.model_fields.items():
        raw = env.get(SERVING_PREFIX + field.upper())
        if raw is None:
            continue
        is_list = getattr(info.annotation, "__origin__", None) is list
        try:
            overrides[field] = json.loads(raw) if is_list else raw
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{SERVING_PREFIX + field.upper()}={raw!r}: expected a JSON list ({exc.msg})") from None
    try:
        return Serving(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{SERVING_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"serving settings from the environment: {problems}") from None


def settings_from_env(env: Mapping[str, str]) -> ContainerSettings:
    model_uri = env.get(MODEL_URI_ENV, "").strip()
    if not model_uri:
        raise ConfigError(f"{MODEL_URI_ENV} is not set: give the model to serve, e.g. models:/duelguard-classifier@champion "
                          "(with MLFLOW_TRACKING_URI), or a classifier directory")
    target = env.get(TARGET_ENV, "nvidia")
    if target not in TARGETS:
        raise ConfigError(f"{TARGET_ENV}={target!r}: expected one of {', '.join(TARGETS)}")
    repository = Path(env.get(REPOSITORY_ENV) or DEFAULT_REPOSITORY)
    return ContainerSettings(model_uri, repository, target, serving_from_env(env))  # type: ignore[arg-type]


def prepare(settings: ContainerSettings, state_dir: Path,
            env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Export the model (unless the repository already holds it); the tritonserver command and environment.

    The container serves inference only: model control (load/unload/index, ...) needs the key from
    DUELGUARD_TRITON_CONTROL_KEY (`env`, default os.environ; a Kubernetes Secret in infra/), or a
    random key nobody else holds when it is unset. The returned environment carries the key, so a
    helper started from it in the same container can still switch models (server.CONTROL_HEADER).
    """
    from duelguard.serving.server import (CONTROL_KEY_ENV, bundled_binary, control_key, prepare_backends,
                                          repository_models, server_env, triton_command)
    from duelguard.serving.triton_repository import export_triton, holds, resolve_ref

    key = control_key(os.environ if env is None else env)  # before the export: a bad key fails fast
    ref = resolve_ref(settings.model_uri)
    if holds(settings.repository, settings.serving.model_name, ref):
        print(f"duelguard-serve: {settings.repository} already holds {ref.concrete} (v{ref.version})", flush=True)
    else:
        print(f"duelguard-serve: exporting {settings.model_uri} = {ref.concrete} ({settings.target}) "
              f"into {settings.repository}", flush=True)
        export_triton(ref.concrete if ref.store else settings.model_uri, settings.repository, settings.serving,
                      settings.target)
    serving = settings.serving
    ports = (serving.http_port, serving.grpc_port, serving.metrics_port)
    models = repository_models(settings.repository)
    if settings.target == "local":
        backends = prepare_backends(state_dir)
        command = triton_command(bundled_binary(), settings.repository, models, *ports, address="0.0.0.0",
                                 backends=backends, cpu_only=True, control_key=key)
        return command, {**server_env(), CONTROL_KEY_ENV: key}
    native = shutil.which("tritonserver") or "/opt/tritonserver/bin/tritonserver"
    command = triton_command(native, settings.repository, models, *ports, address="0.0.0.0", cpu_only=False,
                             control_key=key)
    return command, {**os.environ, CONTROL_KEY_ENV: key}


def main(state_dir: Path | None = None) -> None:
    """Export, then replace this process with tritonserver (it becomes the container's main process)."""
    settings = settings_from_env(os.environ)
    state = state_dir or Path(os.environ.get("HOME", "/tmp")) / ".duelguard-triton"
    command, env = prepare(settings, state)
    start_watcher(settings, env)
    from duelguard.serving.server import CONTROL_KEY_ENV, redact_command

    print("duelguard-serve: exec " + " ".join(redact_command(command, env.get(CONTROL_KEY_ENV))), flush=True)
    os.execvpe(command[0], command, env)


# The champion watcher's settings and start (its loop: duelguard.serving.watcher) -----------------------
# Pods resolved `@champion` only at start, so after a promotion old and new pods served different
# versions until someone restarted them. The watcher is a separate process beside tritonserver (a
# fresh interpreter, not a fork: the parent ran torch for the export, and forking a process with
# OpenMP threads deadlocks), started by main() just before it execs tritonserver, so the server's PID
# is main's. It exits when that process is gone.
WATCH_INTERVAL_ENV = "DUELGUARD_WATCH_INTERVAL_S"
DEFAULT_WATCH_INTERVAL_S = 30.0
WATCH_SERVER_PID_ENV = "DUELGUARD_WATCH_SERVER_PID"


def watch_interval(env: Mapping[str, str]) -> float:
    """Seconds between polls from DUELGUARD_WATCH_INTERVAL_S (0: no watcher); a bad value names the variable."""
    raw = env.get(WATCH_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_WATCH_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0 or value != value:
        raise ConfigError(f"{WATCH_INTERVAL_ENV}={raw!r}: expected seconds >= 0 (0 turns the champion watcher off)")
    return value


def follows_alias(model_uri: str) -> bool:
    """Whether `model_uri` can move under a running server (an alias or 'latest'); pinned versions,
    runs and directories cannot, so they need no watcher."""
    return model_uri.startswith("models:/") and ("@" in model_uri or model_uri.lower().endswith("/latest"))


def start_watcher(settings: ContainerSettings, env: Mapping[str, str]) -> subprocess.Popen | None:
    """Start the watcher process (duelguard.serving.watcher.watch_main, by name: the watcher imports
    this module, and the release code it runs sits above it) for the server this process is about to exec; None when
    the URI is pinned or the interval is 0. `env` is the server's (it carries the control key)."""
    if not follows_alias(settings.model_uri) or watch_interval(os.environ) == 0:
        return None
    code = "from duelguard.serving.watcher import watch_main; watch_main()"
    return subprocess.Popen([sys.executable, "-c", code],
                            env={**os.environ, **env, WATCH_SERVER_PID_ENV: str(os.getpid())})
