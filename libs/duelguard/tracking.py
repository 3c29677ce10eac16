"""MLflow tracking: one place that decides where runs go and what every run carries.

The tracking URI is $MLFLOW_TRACKING_URI if set (e.g. http://127.0.0.1:5000 after
`make mlflow-up`), else params.tracking.tracking_uri (an embedded sqlite store under the repo, which
also gives the full model registry without a server). Every run is tagged with the git commit, the
profile, the stage and the iteration, and with a hash of the data it read.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from duelguard.config import Params


def tracking_uri(params: Params, root: str | Path = ".") -> str:
    """$MLFLOW_TRACKING_URI, else the configured URI with a relative sqlite path made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        db = Path(root).resolve() / uri[len(prefix):]
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = prefix + str(db)
    return uri


def configure(params: Params, root: str | Path = ".") -> str:
    """Point mlflow at the tracking URI and make sure the experiment exists; returns the URI."""
    import mlflow

    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(params.tracking.experiment) is None:
        location = None
        if not uri.startswith("http"):
            artifacts = Path(root).resolve() / params.tracking.artifact_location
            artifacts.mkdir(parents=True, exist_ok=True)
            location = artifacts.as_uri()
        mlflow.create_experiment(params.tracking.experiment, artifact_location=location)
    mlflow.set_experiment(params.tracking.experiment)
    return uri


def git_commit(root: str | Path = ".") -> str:
    """The checkout's HEAD commit (with '-dirty' if the tree has changes), or 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_hash(paths: Iterable[str | Path]) -> str:
    """sha256 over the bytes of the given files in order (missing files hash as their name)."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode())
        if path.exists():
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys (MLflow params are flat strings)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@contextmanager
def mlflow_run(
    params: Params,
    stage: str,
    iteration: int | None = None,
    data_files: Iterable[str | Path] = (),
    log_sections: Iterable[str] = (),
    root: str | Path = ".",
) -> Iterator[Any]:
    """Start an MLflow run for one stage; logs the listed params sections and standard tags."""
    import mlflow

    configure(params, root)
    files = list(data_files)
    name = stage if iteration is None else f"{stage}-iter{iteration}"
    tags = {
        "duelguard.stage": stage,
        "duelguard.profile": params.profile,
        "mlflow.source.git.commit": git_commit(root),
        "duelguard.git_commit": git_commit(root),
    }
    if iteration is not None:
        tags["duelguard.iteration"] = str(iteration)
    if files:
        tags["duelguard.data_hash"] = data_hash(files)
    with mlflow.start_run(run_name=name, tags=tags) as run:
        dumped = params.model_dump()
        flat = {}
        for section in log_sections:
            flat.update(flatten({section: dumped[section]}))
        if flat:
            mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        yield run
