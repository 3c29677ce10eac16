"""Start and stop a real `tritonserver` (the 2.51 binary shipped in the nvidia-pytriton wheel) on CPU.

The wheel is meant to be driven by pytriton's own proxy, so running the bare binary on a plain
model repository needs a few things set up by hand; each is here for a measured reason:

- backend directory: the wheel's backends/python has libtriton_python.so but not the stub
  executable it forks per model instance; we assemble build/triton/backends/python from the
  library, triton_python_backend_utils.py and python_backend_stubs/<py-version>/ stub.
- PATH: the stub ignores PYTHONPATH and imports packages through the first `python3` on PATH, so
  the venv's bin goes first (that is how model.py can import duelguard, onnxruntime, transformers).
- LD_LIBRARY_PATH: the wheel's bundled libs (nvidia_pytriton.libs: libtritonserver, libcudart...)
  and THIS interpreter's libpython directory; the stub otherwise binds the system libpython3.11,
  and the mismatch fails with "'_thread.RLock' object has no attribute '_recursion_count'".
- --allow-gpu-metrics=false: no GPU/DCGM here; --pinned-memory-pool-byte-size=0 and
  --cuda-memory-pool-byte-size=0:0: pinned/CUDA pools need the CUDA driver and fail without it.
- 127.0.0.1 for HTTP, gRPC and metrics: a local development server is not exposed to the network.
- --model-control-mode=explicit with --load-model per model: a new version is switched in with
  a gRPC `load` (Triton loads it, then retires the old one, serving throughout), never by
  restarting or by swapping directories under a running server (duelguard.serving.release).

`triton_command` is the one place the command line is built: the serving image
(duelguard.serving.container) runs the same flags, minus the CPU-only ones on NVIDIA's image.
The server runs in its own session (it outlives `duelguard serve`); its PID and ports are written
to <state_dir>/server.json and its output to <state_dir>/tritonserver.log. Before signalling a
recorded PID, stop_server checks that it still is a tritonserver (PIDs are reused).

Readiness is version-checked and identity-checked (wait_ready): a server answering on our port is
ours only if its ServerMetadata name is the random `--id` we started it with (an orphan from an
earlier run, or another user's server, answers the same health calls but not with our id), and it
is ready only when the version we exported is READY, not merely "a version of the model".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from duelguard.errors import ServingError
from duelguard.fsio import atomic_write_json

STATE_FILE = "server.json"
LOG_FILE = "tritonserver.log"


@dataclass(frozen=True)
class ServerInfo:
    """A running server: what `serve` prints, what `serve --stop` and the tests read back."""

    pid: int
    repository: str
    model_name: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log: str
    server_id: str = ""  # the --id it was started with ("" for a server we did not start: identity unchecked)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"


def _pytriton_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServingError("nvidia-pytriton is not installed (pip install 'duelguard[serving]')")
    return Path(next(iter(spec.submodule_search_locations)))


def prepare_backends(state_dir: Path) -> Path:
    """<state_dir>/backends with a complete python backend (library + utils + this Python's stub)."""
    wheel = _pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServingError(f"{stub}: the pytriton wheel has no Python backend stub for Python {version}")
    target = state_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in (wheel / "backends" / "python" / "libtriton_python.so",
                   wheel / "backends" / "python" / "triton_python_backend_utils.py", stub):
        dest = target / source.name
        if not dest.exists() or dest.stat().st_size != source.stat().st_size:
            shutil.copy2(source, dest)
    return target.parent


def server_env() -> dict[str, str]:
    """The environment the server and its Python-backend stubs need (see the module docstring)."""
    env = dict(os.environ)
    bundled = _pytriton_dir().parent / "nvidia_pytriton.libs"
    libpython = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(bundled), libpython, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env.pop("PYTHONHOME", None)
    return env


def read_state(state_dir: Path) -> ServerInfo | None:
    """The server recorded in state_dir, if that process is still alive and still a tritonserver."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    info = ServerInfo(**json.loads(path.read_text(encoding="utf-8")))
    return info if _alive(info.pid) and is_tritonserver(info.pid) else None


def is_tritonserver(pid: int) -> bool:
    """Whether process `pid` runs the tritonserver binary (its argv[0]), per /proc/PID/cmdline."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return Path(argv0.decode(errors="replace")).name == "tritonserver"


def repository_models(repository: Path) -> list[str]:
    """The models of a repository (directories with a config.pbtxt), native network models first."""
    names = sorted(p.parent.name for p in Path(repository).glob("*/config.pbtxt"))
    return sorted(names, key=lambda n: n != "duelguard_network")


def triton_command(
    binary: str | Path,
    repository: Path,
    models: list[str],
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    address: str = "127.0.0.1",
    backends: Path | None = None,
    cpu_only: bool = True,
    control_key: str | None = None,
) -> list[str]:
    """The tritonserver command line: explicit model control, `models` loaded at start.

    With `control_key`, every protocol but inference's (RESTRICTED_PROTOCOLS) answers only requests
    carrying the header CONTROL_HEADER with that key, over gRPC and HTTP alike (control_flags).
    """
    command = [
        str(binary),
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in models),
        f"--http-address={address}", f"--http-port={http_port}",
        f"--grpc-address={address}", f"--grpc-port={grpc_port}",
        f"--metrics-address={address}", f"--metrics-port={metrics_port}",
        "--exit-on-error=true",
        "--strict-readiness=true",
    ]
    if backends is not None:
        command.append(f"--backend-directory={backends}")
    if cpu_only:  # no GPU / CUDA driver: these pools and DCGM metrics fail without one
        command += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
    if control_key is not None:
        command += control_flags(control_key)
    return command


# Model control locked behind a key (issue 13): a server reachable from other pods would otherwise let
# any of them load, unload or list models. Restricted: every protocol an inference client does not need.
# Left open: health (probes), metadata, inference, model-config (`classify` reads the served version's
# thresholds from it). The key travels as an HTTP header; over gRPC Triton expects the metadata key
# `triton-grpc-protocol-<header>` (measured on 2.51: the bare name is refused). control_headers gives both.
CONTROL_KEY_ENV = "DUELGUARD_TRITON_CONTROL_KEY"
CONTROL_HEADER = "duelguard-control-key"
RESTRICTED_PROTOCOLS = ("model-repository", "shared-memory", "statistics", "trace", "logging")
CONTROL_KEY_MIN_CHARS = 32


def control_key(env: Mapping[str, str]) -> str:
    """The model-control key from CONTROL_KEY_ENV, checked; a fresh random one when it is unset.

    Random when unset, so a container started without its Secret still serves inference but nobody
    outside it can control models: never unrestricted. A set key must be >= 32 characters of
    [A-Za-z0-9_-] (`openssl rand -hex 32`): short keys are guessable, and ':', ',' or '=' would break
    Triton's `<protocols>:<header>=<key>` flag syntax.
    """
    import re
    import secrets

    from duelguard.config import ConfigError

    key = env.get(CONTROL_KEY_ENV)
    if key is None:
        return secrets.token_hex(32)
    if "change_me" in key.lower():
        raise ConfigError(f"{CONTROL_KEY_ENV} is still the template's placeholder: make a key with `openssl rand -hex 32`")
    if not re.fullmatch(rf"[A-Za-z0-9_-]{{{CONTROL_KEY_MIN_CHARS},}}", key):
        raise ConfigError(f"{CONTROL_KEY_ENV} must be at least {CONTROL_KEY_MIN_CHARS} characters of A-Z a-z 0-9 _ - "
                          f"(got {len(key)} characters); make one with `openssl rand -hex 32`")
    return key


def control_flags(key: str) -> list[str]:
    """tritonserver flags restricting RESTRICTED_PROTOCOLS to requests whose CONTROL_HEADER equals `key`."""
    protocols = ",".join(RESTRICTED_PROTOCOLS)
    return [f"--grpc-restricted-protocol={protocols}:{CONTROL_HEADER}={key}",
            f"--http-restricted-api={protocols}:{CONTROL_HEADER}={key}"]


def control_headers(key: str, protocol: str = "grpc") -> dict[str, str]:
    """The headers a model-control request needs (`headers=` of tritonclient's grpc/http clients)."""
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol {protocol!r}: expected 'grpc' or 'http'")
    return {("triton-grpc-protocol-" if protocol == "grpc" else "") + CONTROL_HEADER: key}


def redact_command(command: list[str], key: str | None) -> list[str]:
    """`command` with the control key masked, for logging it."""
    return [arg.replace(key, "***") for arg in command] if key else list(command)


def bundled_binary() -> Path:
    """The tritonserver shipped in the nvidia-pytriton wheel."""
    return _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one we may not signal exists too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _log_tail(log: Path, lines: int = 40) -> str:
    if not log.exists():
        return "(no log written)"
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _answering_id(client: object) -> str | None:
    """The ServerMetadata name (tritonserver --id) of whatever answers, or None when nothing does yet."""
    try:
        return str(client.get_server_metadata().name)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not listening yet
        return None


def wait_ready(info: ServerInfo, timeout: float, version: int | None = None) -> None:
    """Block until OUR server (info.server_id, process info.pid) has `version` of the model READY
    (any version when None); ServingError with the log tail otherwise.

    Why both checks: health calls are answered by whatever listens on the port, e.g. an orphan
    tritonserver serving another version; accepting it reports a switch that never happened.
    """
    import tritonclient.grpc as grpcclient

    deadline = time.monotonic() + timeout
    client = grpcclient.InferenceServerClient(info.grpc_url)
    other = None
    try:
        while time.monotonic() < deadline:
            if not _alive(info.pid):
                held = f" (port {info.grpc_port} is answered by another server, id {other!r})" if other else ""
                raise ServingError(f"tritonserver (pid {info.pid}) exited during startup{held}; log {info.log}:\n"
                                   f"{_log_tail(Path(info.log))}")
            answering = _answering_id(client)
            if answering is not None and info.server_id and answering != info.server_id:
                other = answering  # someone else's server: wait for ours (it fails to bind and exits)
            elif answering is not None and _model_ready(client, info.model_name, version):
                return
            time.sleep(0.5)
    finally:
        client.close()
    who = f"; port {info.grpc_port} is answered by another server (id {other!r}), not ours ({info.server_id!r})" if other else ""
    raise ServingError(
        f"tritonserver (pid {info.pid}) not ready with model {info.model_name!r}"
        f"{f' version {version}' if version is not None else ''} after {timeout:.0f}s{who}; "
        f"log {info.log}:\n{_log_tail(Path(info.log))}"
    )


def _model_ready(client: object, name: str, version: int | None) -> bool:
    """Whether `name` (at `version`, when given) is READY on the server `client` talks to."""
    try:
        return bool(client.is_model_ready(name, "" if version is None else str(version)))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not ready to answer yet
        return False


def start_server(
    repository: Path,
    state_dir: Path,
    model_name: str = "duelguard",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    timeout: float = 180.0,
    version: int | None = None,
) -> ServerInfo:
    """Start tritonserver on `repository` in the background and wait until OUR process has `model_name`
    (at `version`, when given) ready; a random --id tells our server from any other on the port."""
    state_dir = Path(state_dir).resolve()
    existing = read_state(state_dir)
    if existing is not None:
        raise ServingError(f"a server started from {state_dir} is already running (pid {existing.pid}); stop it first")
    repository = Path(repository).resolve()
    if not (repository / model_name / "config.pbtxt").exists():
        raise ServingError(f"{repository}: no model {model_name!r} (run `duelguard export-triton`)")
    backends = prepare_backends(state_dir)
    log = state_dir / LOG_FILE
    command = triton_command(bundled_binary(), repository, repository_models(repository), http_port, grpc_port,
                             metrics_port, backends=backends)
    server_id = f"duelguard-{uuid.uuid4().hex[:16]}"
    command.append(f"--id={server_id}")
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=server_env(), cwd=state_dir, start_new_session=True
        )
    info = ServerInfo(process.pid, str(repository), model_name, http_port, grpc_port, metrics_port, str(log), server_id)
    atomic_write_json(state_dir / STATE_FILE, asdict(info))
    try:
        wait_ready(info, timeout, version)
    except BaseException:
        stop_server(state_dir)
        raise
    return info


def stop_server(state_dir: Path, timeout: float = 30.0) -> ServerInfo | None:
    """Stop the server recorded in state_dir (SIGTERM, then SIGKILL after `timeout`); None if none ran.

    A recorded PID that is gone or now belongs to another program (PIDs are reused) is not
    signalled: the stale record is removed and None returned.
    """
    state_dir = Path(state_dir).resolve()
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    info = ServerInfo(**json.loads(path.read_text(encoding="utf-8")))
    if not (_alive(info.pid) and is_tritonserver(info.pid)):
        path.unlink(missing_ok=True)
        return None
    os.killpg(info.pid, signal.SIGTERM)  # its own session: stubs go with it
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(info.pid):
        os.killpg(info.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return info


def load_models(info: ServerInfo, names: list[str], timeout: float, headers: dict[str, str] | None = None) -> None:
    """Ask the running server to (re)load `names` from its repository, in order.

    On an explicit `load` of a model that is already loaded, Triton loads the version(s) the new
    config names, switches requests to them, then unloads the old ones; if the load fails the old
    version stays loaded and serving (Triton's model management documentation; measured by
    tests/integration/test_release_faults.py with a client querying throughout). `headers` carry the
    model-control key of a restricted server (CONTROL_HEADER).
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(info.grpc_url)
    try:
        for name in names:
            try:
                client.load_model(name, headers=headers, client_timeout=timeout)
            except InferenceServerException as exc:
                raise ServingError(
                    f"tritonserver at {info.grpc_url} could not load {name!r} (the version loaded before keeps "
                    f"serving): {exc.message()}; log {info.log}:\n{_log_tail(Path(info.log))}"
                ) from None
    finally:
        client.close()


def ready_versions(info: ServerInfo, name: str, headers: dict[str, str] | None = None) -> set[int]:
    """The versions of model `name` the running server has READY."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(info.grpc_url)
    try:
        index = client.get_model_repository_index(headers=headers, as_json=True).get("models", [])
    finally:
        client.close()
    return {int(m["version"]) for m in index if m.get("name") == name and m.get("state") == "READY" and m.get("version")}


def served_config(info: ServerInfo, name: str, headers: dict[str, str] | None = None) -> str | None:
    """The config.pbtxt text of model `name` as the running server has it loaded, or None if not loaded.

    Why from the server: after a failed switch the repository must describe what is being served,
    and the files on disk may already have been changed by an earlier export that never loaded.
    """
    import tritonclient.grpc as grpcclient
    from google.protobuf import text_format
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(info.grpc_url)
    try:
        if not client.is_model_ready(name, headers=headers):
            return None
        config = client.get_model_config(name, headers=headers).config
    except InferenceServerException as exc:
        raise ServingError(f"tritonserver at {info.grpc_url}: reading the loaded config of {name!r} failed: "
                           f"{exc.message()}") from None
    finally:
        client.close()
    return "# Loaded by the running server (restored after a failed switch); regenerated by the next export.\n" + \
        text_format.MessageToString(config)
