"""`duelguard serve`: the local server always serves the registry's champion, switched without a gap.

Each call resolves models:/<registered>@champion to its version N (a registry that cannot be read
is an error, and so is a registry without a champion: never "serve whatever is on disk"), then:

1. exports version N into the repository beside the version being served, unless the repository
   already holds exactly N from this store (duelguard.serving.triton_repository.holds);
2. no server running: starts one on the repository;
   a server running: asks it to load the model again (explicit model control), so Triton loads N,
   moves requests to it and only then unloads the old version — a client querying throughout
   sees no failed request (tests/integration/test_release_faults.py);
3. removes the old version directory once N is ready. If the load fails, the repository's config
   is put back to the version still being served and N is removed, so disk and server agree.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.errors import ServingError
from duelguard.layout import Layout


def serve_champion(
    params: Params,
    layout: Layout,
    repository: Path | None = None,
    ports: tuple[int, int, int] | None = None,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Make the local tritonserver serve the champion (start it, or switch it); returns what was done."""
    from duelguard.serving.export import champion_uri
    from duelguard.serving.server import (load_models, read_state, ready_versions, repository_models,
                                          start_server)
    from duelguard.serving.triton_repository import export_triton, holds, prune_versions, resolve_ref, served_ref

    serving = params.serving
    repo = (repository or layout.triton_repository).resolve()
    state_dir = layout.serving_state
    running = read_state(state_dir)
    if running is not None and Path(running.repository) != repo:
        raise ServingError(f"the server recorded in {state_dir} (pid {running.pid}) serves {running.repository}, "
                           f"not {repo}: stop it first (`duelguard serve-stop`)")
    ref = resolve_ref(champion_uri(params, layout.root), params, layout.root)
    model_dir = repo / serving.model_name
    before = served_ref(repo, serving.model_name)
    saved = _save_configs(repo)
    serving_now = ready_versions(running, serving.model_name) if running is not None else set()
    exported = not holds(repo, serving.model_name, ref)
    if exported:  # beside the version being served, which must stay on disk until the switch is done
        export_triton(ref.concrete, repo, serving, params=params, root=layout.root, keep_versions=tuple(serving_now))

    if running is None:
        ports = ports or (serving.http_port, serving.grpc_port, serving.metrics_port)
        info = start_server(repo, state_dir, serving.model_name, *ports, timeout=timeout)
        action = "started"
    else:
        info = running
        if exported or serving_now != {ref.version}:
            try:
                load_models(info, repository_models(repo), timeout)
            except ServingError:
                _restore_configs(repo, saved, None if ref.version in serving_now else ref.version)
                raise
            action = "switched"
        else:
            action = "unchanged"
    for name in repository_models(repo):
        prune_versions(repo / name, {ref.version})
    return {"model": ref.source, "concrete": ref.concrete, "version": ref.version, "action": action,
            "previous_version": before.version if before else None, "exported": exported,
            "repository": str(model_dir.parent), "server": info}


def _save_configs(repo: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in repo.glob("*/config.pbtxt")}


def _restore_configs(repo: Path, saved: dict[Path, bytes], failed_version: int | None) -> None:
    """Put the configs back to what the server still serves and drop the version it refused."""
    from duelguard.fsio import atomic_open

    for path, data in saved.items():
        with atomic_open(path, "wb", encoding=None) as handle:
            handle.write(data)
    if failed_version is not None:
        for version_dir in repo.glob(f"*/{failed_version}"):
            shutil.rmtree(version_dir, ignore_errors=True)
