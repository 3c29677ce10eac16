"""A killed `dvc repro` must not block the rerun: its lock entries are released when it is gone,
including as a zombie nobody reaped (a container's PID 1 often never reaps re-parented children)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from dvc.fs import localfs
from dvc.lock import LockError
from dvc.rwlock import _check_blockers, _edit_rwlock

from duelguard.pipeline.dvc import release_dead_holders


def _zombie() -> subprocess.Popen:
    """A child that has exited and is not reaped yet: a zombie until `wait()`."""
    child = subprocess.Popen(["true"])
    deadline = time.time() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.time() < deadline, "the child never exited"
        time.sleep(0.01)
    return child


def test_a_zombie_holder_is_released_and_a_live_one_kept(tmp_path: Path) -> None:
    zombie = _zombie()
    try:
        lock_dir = tmp_path / ".dvc" / "tmp"
        lock_dir.mkdir(parents=True)
        live = {"pid": os.getpid(), "cmd": "dvc repro (live)"}
        dead = {"pid": zombie.pid, "cmd": "dvc repro (killed)"}
        (lock_dir / "rwlock").write_text(json.dumps({
            "write": {str(tmp_path / "metrics/a.json"): dead, str(tmp_path / "data/b"): live},
            "read": {str(tmp_path / "params.yaml"): [dead, live], str(tmp_path / "seed"): [dead]},
        }))
        # DVC alone counts the zombie as alive and refuses to run.
        with _edit_rwlock(str(lock_dir), localfs, False) as lock, pytest.raises(LockError, match="is busy"):
            _check_blockers(str(lock_dir), lock, {"pid": -1, "cmd": "x"}, mode="write",
                            waiters=[str(tmp_path / "metrics/a.json")])

        assert release_dead_holders(tmp_path) == [zombie.pid]

        lock = json.loads((lock_dir / "rwlock").read_text())
        assert lock["write"] == {str(tmp_path / "data/b"): live}
        assert lock["read"] == {str(tmp_path / "params.yaml"): [live]}
        assert release_dead_holders(tmp_path) == []
    finally:
        zombie.wait()


def test_no_lock_file_is_nothing_to_release(tmp_path: Path) -> None:
    assert release_dead_holders(tmp_path) == []
    assert not (tmp_path / ".dvc").exists()
