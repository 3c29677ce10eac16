"""`duelguard serve`: the local server always serves the registry's champion, switched without a gap.

Each call resolves models:/<registered>@champion to its version N (a registry that cannot be read
is an error, and so is a registry without a champion: never "serve whatever is on disk"), then:

1. no server running: exports N (unless the repository already holds exactly N: same store, same
   version AND same identity, see duelguard.registry.models) and starts one; it counts as started only
   when OUR process (its random --id) has version N ready (duelguard.serving.server.wait_ready);
2. a server running: switch_version — exports N beside the version being served, asks the server to
   load the model again (explicit model control), so Triton loads N, moves requests to it and only
   then unloads the old version (a client querying throughout sees no failed request:
   tests/integration/test_release_faults.py), then checks that N is the version READY;
3. removes the old version directory once N is ready. If the load fails, every config is put back to
   the one the server has LOADED (read from the server, not from disk: the disk may already hold an
   earlier export that never loaded) and N is removed, so disk and server agree.

switch_version is also what the serving container's champion watcher runs
(duelguard.serving.watcher.watch_champion), so pods and `duelguard serve` switch the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from duelguard.config import Params, Serving
from duelguard.errors import ServingError
from duelguard.layout import Layout
from duelguard.serving.server import ServerInfo
from duelguard.serving.triton_repository import ModelRef, Target


def serve_champion(
    params: Params,
    layout: Layout,
    repository: Path | None = None,
    ports: tuple[int, int, int] | None = None,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Make the local tritonserver serve the champion (start it, or switch it); returns what was done."""
    from duelguard.registry.lookup import champion_uri
    from duelguard.serving.server import read_state, repository_models, start_server
    from duelguard.serving.triton_repository import export_triton, holds, prune_versions, resolve_ref, served_ref

    serving = params.serving
    repo = (repository or layout.triton_repository).resolve()
    state_dir = layout.serving_state
    running = read_state(state_dir)
    if running is not None and Path(running.repository) != repo:
        raise ServingError(f"the server recorded in {state_dir} (pid {running.pid}) serves {running.repository}, "
                           f"not {repo}: stop it first (`duelguard serve-stop`)")
    ref = resolve_ref(champion_uri(params, layout.root), params, layout.root)
    before = served_ref(repo, serving.model_name)
    if running is not None:
        done = switch_version(ref, repo, serving, running, params=params, root=layout.root, timeout=timeout)
        info, action, exported = running, done["action"], done["exported"]
    else:
        exported = not holds(repo, serving.model_name, ref)
        if exported:
            export_triton(ref.concrete, repo, serving, params=params, root=layout.root)
        ports = ports or (serving.http_port, serving.grpc_port, serving.metrics_port)
        info = start_server(repo, state_dir, serving.model_name, *ports, timeout=timeout, version=ref.version)
        action = "started"
        for name in repository_models(repo):
            prune_versions(repo / name, {ref.version})
    return {"model": ref.source, "concrete": ref.concrete, "version": ref.version, "action": action,
            "previous_version": before.version if before else None, "exported": exported,
            "repository": str(repo), "server": info}


def switch_version(
    ref: ModelRef,
    repo: Path,
    serving: Serving,
    info: ServerInfo,
    *,
    target: Target = "local",
    params: Params | None = None,
    root: str | Path = ".",
    timeout: float = 180.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Make the running server `info` serve `ref` from `repo` without a gap: export it beside the served
    version, load, check that ref.version is the one READY, prune the old one. On failure the configs
    are restored to what the server has loaded and the refused version is removed. `headers` carry a
    restricted server's model-control key."""
    from duelguard.serving.server import load_models, ready_versions, repository_models, wait_ready
    from duelguard.serving.triton_repository import export_triton, holds, prune_versions

    serving_now = ready_versions(info, serving.model_name, headers)
    exported = not holds(repo, serving.model_name, ref)
    if exported:  # beside the version being served, which must stay on disk until the switch is done
        export_triton(ref.concrete if ref.store else ref.source, repo, serving, target, params=params, root=root,
                      keep_versions=tuple(serving_now))
    if not exported and serving_now == {ref.version}:
        action = "unchanged"
    else:
        loaded = _loaded_configs(info, repo, headers)
        try:
            load_models(info, repository_models(repo), timeout, headers)
            wait_ready(info, timeout, ref.version)
        except ServingError:
            _restore_configs(repo, loaded, None if ref.version in serving_now else ref.version)
            raise
        action = "switched"
    for name in repository_models(repo):
        prune_versions(repo / name, {ref.version})
    return {"action": action, "exported": exported, "version": ref.version, "previous": sorted(serving_now)}


def _loaded_configs(info: ServerInfo, repo: Path, headers: dict[str, str] | None) -> dict[Path, str]:
    """config.pbtxt text per model the server has loaded now (what a failed switch must restore)."""
    from duelguard.serving.server import repository_models, served_config

    loaded = {}
    for name in repository_models(repo):
        text = served_config(info, name, headers)
        if text is not None:
            loaded[repo / name / "config.pbtxt"] = text
    return loaded


def _restore_configs(repo: Path, loaded: dict[Path, str], failed_version: int | None) -> None:
    """Put the configs back to what the server still serves and drop the version it refused."""
    from duelguard.fsio import atomic_write_text

    for path, text in loaded.items():
        atomic_write_text(path, text)
    if failed_version is not None:
        for version_dir in repo.glob(f"*/{failed_version}"):
            shutil.rmtree(version_dir, ignore_errors=True)
