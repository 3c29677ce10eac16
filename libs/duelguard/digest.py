"""The model digest: sha256 over a saved classifier directory's files, the one definition of "these weights".

`evaluate` records it beside the metrics, `register` refuses weights whose digest changed since and
tags the registry version with it, and every download of a registered version (predict, promotion,
export/serve) is checked against that tag (duelguard.registry.models). A module of its own, below
both evaluation and the registry, so that neither has to import the other for it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from duelguard.classifier.saved import METADATA_FILE, is_classifier_dir
from duelguard.fsio import DataError

_CHUNK = 1 << 20


class ModelDigestError(DataError):
    """A classifier directory's files are not the ones evaluated/registered (digest mismatch)."""


def model_digest(model_dir: str | Path) -> str:
    """sha256 over every file under `model_dir`: its path relative to the directory, its size and its bytes.

    Why one function: evaluation records it, register and serving compare against it, so all three must
    hash exactly the same way. Paths are sorted and POSIX-style so the digest does not depend on the
    file system's listing order or on where the directory lives.
    """
    root = Path(model_dir)
    if not is_classifier_dir(root):
        raise DataError(f"{root}: not a saved classifier directory (no {METADATA_FILE}) to digest")
    digest = hashlib.sha256()
    for path in sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def check_digest(model_dir: Path, expected: str | None, what: str) -> None:
    """ModelDigestError when `model_dir`'s digest differs from `expected` (None: nothing recorded, no check)."""
    if not expected:
        return
    actual = model_digest(model_dir)
    if actual != expected:
        raise ModelDigestError(f"{what}: the classifier files at {model_dir} have digest {actual}, but {expected} was "
                               "recorded when it was evaluated/registered: these are not the evaluated weights")
