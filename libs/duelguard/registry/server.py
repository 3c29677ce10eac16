"""Start and stop a real local `mlflow server` (sqlite backend, proxied local artifact store).

Settings come from services/mlflow/server.env (host, port, backend db, artifact destination,
workers, start timeout; paths relative to the repository root); arguments override them. The
server runs in the background in its own process group, with its PID in mlflow/server.pid and its
output in mlflow/server.log; `start` returns once GET /health answers, `stop` ends exactly that
process group. Clients then use MLFLOW_TRACKING_URI=http://HOST:PORT (duelguard.tracking honours it).

Authentication (MLflow's own basic-auth app, `mlflow server --app-name basic-auth`) is off by default
locally (a 127.0.0.1 server for one developer) and always on in the cluster (docker/mlflow,
infra/base/platform/mlflow.yaml). `ServerConfig(auth_username=..., auth_password=...)`, or
MLFLOW_AUTH=basic-auth in services/mlflow/server.env with the admin credentials taken from the same
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD variables the clients send, turns it on: the server
then creates that admin user on first start and answers 401 to any request without valid credentials
(except /health). Its users live in <state_dir>/basic_auth-PORT.db, its settings in basic_auth-PORT.ini.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from duelguard.errors import ServingError

SERVER_ENV = Path("services/mlflow/server.env")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    backend_store: Path = Path("mlflow/server.db")
    artifacts_destination: Path = Path("mlflow/server-artifacts")
    state_dir: Path = Path("mlflow")
    workers: int = 1
    start_timeout_s: float = 120.0
    # basic-auth admin; both None: no authentication (the local default, see the module docstring)
    auth_username: str | None = None
    auth_password: str | None = field(default=None, repr=False)
    # what an authenticated user without an explicit grant may do (READ, EDIT, MANAGE, NO_PERMISSIONS)
    auth_default_permission: str = "READ"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth(self) -> bool:
        if (self.auth_username is None) != (self.auth_password is None) or self.auth_username == "" \
                or self.auth_password == "":
            raise ServingError("mlflow server authentication needs both an admin user name and a password")
        return self.auth_username is not None

    @property
    def auth_config_file(self) -> Path:
        return self.state_dir / f"basic_auth-{self.port}.ini"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"server-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"server-{self.port}.log"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks ignored); a malformed line is an error naming it."""
    from duelguard.fsio import DataError

    values: dict[str, str] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise DataError(f"{path}:{line_no}: expected KEY=VALUE, got {line!r}")
        values[key.strip()] = value.strip()
    return values


def load_config(root: str | Path = ".", port: int | None = None, host: str | None = None) -> ServerConfig:
    """The server settings: services/mlflow/server.env under `root`, then explicit overrides."""
    root = Path(root).resolve()
    env_path = root / SERVER_ENV
    env = read_env_file(env_path) if env_path.exists() else {}

    def under(value: str | None, default: Path) -> Path:
        path = Path(value) if value else default
        return path if path.is_absolute() else root / path

    defaults = ServerConfig()
    auth = env.get("MLFLOW_AUTH", "off")
    if auth not in ("off", "basic-auth"):
        raise ServingError(f"{env_path}: MLFLOW_AUTH={auth!r}: expected off or basic-auth")
    credentials: dict[str, str | None] = {"auth_username": None, "auth_password": None}
    if auth == "basic-auth":
        missing = [k for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD") if not os.environ.get(k)]
        if missing:
            raise ServingError(f"{env_path}: MLFLOW_AUTH=basic-auth needs the admin credentials in "
                               f"{' and '.join(missing)} (the variables MLflow clients send)")
        credentials = {"auth_username": os.environ["MLFLOW_TRACKING_USERNAME"],
                       "auth_password": os.environ["MLFLOW_TRACKING_PASSWORD"]}
    return ServerConfig(
        **credentials,
        host=host or env.get("MLFLOW_HOST", defaults.host),
        port=int(port or env.get("MLFLOW_PORT", defaults.port)),
        backend_store=under(env.get("MLFLOW_BACKEND_STORE"), defaults.backend_store),
        artifacts_destination=under(env.get("MLFLOW_ARTIFACTS_DESTINATION"), defaults.artifacts_destination),
        state_dir=root / defaults.state_dir,
        workers=int(env.get("MLFLOW_WORKERS", defaults.workers)),
        start_timeout_s=float(env.get("MLFLOW_START_TIMEOUT_S", defaults.start_timeout_s)),
    )


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _read_pid(cfg: ServerConfig) -> int | None:
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # A stale PID file may name a reused PID: only ever signal a process that is an mlflow server.
    return pid if b"mlflow" in cmdline else None


def start(cfg: ServerConfig) -> dict[str, object]:
    """Start the server in the background (no-op if ours is already up) and wait for /health."""
    pid = _read_pid(cfg)
    if pid is not None and healthy(cfg.url):
        return {"url": cfg.url, "pid": pid, "started": False, "log": str(cfg.log_file)}
    if healthy(cfg.url):
        raise ServingError(f"{cfg.url} already answers /health but was not started by duelguard (no PID file); "
                           "stop it or choose another port")
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.backend_store.parent.mkdir(parents=True, exist_ok=True)
    cfg.artifacts_destination.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{cfg.backend_store}",
        "--artifacts-destination", str(cfg.artifacts_destination),
        "--serve-artifacts",
        "--host", cfg.host,
        "--port", str(cfg.port),
        "--workers", str(cfg.workers),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if cfg.auth:
        cmd += ["--app-name", "basic-auth"]
        env.update(_auth_env(cfg))
    with cfg.log_file.open("ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    cfg.pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + cfg.start_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            cfg.pid_file.unlink(missing_ok=True)
            tail = cfg.log_file.read_text(errors="replace")[-2000:]
            raise ServingError(f"mlflow server exited with code {process.returncode}; log {cfg.log_file}:\n{tail}")
        if healthy(cfg.url):
            return {"url": cfg.url, "pid": process.pid, "started": True, "log": str(cfg.log_file)}
        time.sleep(0.5)
    stop(cfg)
    raise ServingError(f"mlflow server did not answer {cfg.url}/health within {cfg.start_timeout_s:.0f} s; see {cfg.log_file}")


def _auth_env(cfg: ServerConfig) -> dict[str, str]:
    """Write the basic-auth app's ini (its user store, default permission) and return the server's auth variables.

    The admin credentials go through MLFLOW_AUTH_ADMIN_* rather than the ini, so the password is never
    written to disk; MLflow uses them only to create the admin in an empty user store. The Flask secret
    (CSRF of the sign-up form) is random per start: one server, so every worker shares it.
    """
    import secrets

    cfg.auth_config_file.write_text(
        "[mlflow]\n"
        f"default_permission = {cfg.auth_default_permission}\n"
        f"database_uri = sqlite:///{cfg.state_dir / f'basic_auth-{cfg.port}.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        encoding="utf-8",
    )
    return {"MLFLOW_AUTH_CONFIG_PATH": str(cfg.auth_config_file),
            "MLFLOW_AUTH_ADMIN_USERNAME": str(cfg.auth_username),
            "MLFLOW_AUTH_ADMIN_PASSWORD": str(cfg.auth_password),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}


def stop(cfg: ServerConfig, timeout_s: float = 20.0) -> bool:
    """Stop the server recorded in the PID file (its whole process group); False if none was running."""
    pid = _read_pid(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.2)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(pid)
    cfg.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (else it lingers as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
