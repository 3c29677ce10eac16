"""The serving container's champion watcher: a process beside tritonserver that keeps the pod on the
current champion (started by duelguard.serving.container.start_watcher, settings from the same
environment; see that module's docstring and DUELGUARD_WATCH_INTERVAL_S).

Every interval it re-resolves the container's model URI and, when the alias names another version
than the repository holds, switches the local tritonserver to it with the very switch `duelguard
serve` runs (duelguard.serving.release.switch_version), so every pod converges on the champion.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from duelguard.serving.container import (WATCH_SERVER_PID_ENV, ContainerSettings, settings_from_env,
                                         watch_interval)

if TYPE_CHECKING:
    from duelguard.serving.server import ServerInfo


def watch_main() -> None:
    """The watcher process: settings from the environment, the server's PID from WATCH_SERVER_PID_ENV;
    waits for the server, then watch_champion until the server process is gone."""
    from duelguard.serving.server import _alive, wait_ready

    settings = settings_from_env(os.environ)
    server = _container_server(settings, int(os.environ[WATCH_SERVER_PID_ENV]))
    wait_ready(server, timeout=3600.0)
    watch_champion(settings, server, watch_interval(os.environ), should_stop=lambda: not _alive(server.pid),
                   headers=_control_headers(os.environ))


def _container_server(settings: ContainerSettings, pid: int) -> ServerInfo:
    """The ServerInfo of the container's tritonserver (it listens on every address, so 127.0.0.1 reaches it)."""
    from duelguard.serving.server import ServerInfo

    serving = settings.serving
    return ServerInfo(pid, str(settings.repository), serving.model_name, serving.http_port, serving.grpc_port,
                      serving.metrics_port, log="(the container's stdout)")


def _control_headers(env: Mapping[str, str]) -> dict[str, str] | None:
    """The gRPC model-control headers for a restricted server (the key prepare() put in the server's environment)."""
    from duelguard.serving.server import CONTROL_KEY_ENV, control_headers

    key = env.get(CONTROL_KEY_ENV, "")
    return control_headers(key, "grpc") if key else None


def watch_champion(settings: ContainerSettings, server: ServerInfo, interval: float,
                   should_stop: Callable[[], bool] = lambda: False, headers: dict[str, str] | None = None,
                   timeout: float = 600.0) -> None:
    """Every `interval` s: re-resolve settings.model_uri and, when it names another version than the
    repository holds, switch `server` to it (duelguard.serving.release.switch_version, the switch
    `duelguard serve` runs). A failed poll or switch is logged and retried at the next poll: the
    version being served keeps serving (the switch restores what the server has loaded)."""
    import time

    from duelguard.errors import UserError

    while not should_stop():
        started = time.monotonic()
        try:
            done = watch_once(settings, server, headers, timeout)
            if done is not None:
                print(f"duelguard-watch: {settings.model_uri} -> v{done['version']} ({done['action']}, was "
                      f"{done['previous']})", flush=True)
        except UserError as exc:
            print(f"duelguard-watch: {settings.model_uri}: {exc} (keeps serving what it serves; retry in {interval:g} s)",
                  flush=True)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def watch_once(settings: ContainerSettings, server: ServerInfo, headers: dict[str, str] | None = None,
               timeout: float = 600.0) -> dict | None:
    """One poll: None when the repository already holds what the URI resolves to, else the switch's result."""
    from duelguard.serving.release import switch_version
    from duelguard.serving.triton_repository import holds, resolve_ref

    ref = resolve_ref(settings.model_uri)
    if holds(settings.repository, settings.serving.model_name, ref):
        return None
    return switch_version(ref, settings.repository, settings.serving, server, target=settings.target, timeout=timeout, headers=headers)
