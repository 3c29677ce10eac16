"""`dvc repro` from a fresh copy of the repository on the tiny profile: the seed, the baseline and two
loop iterations, each iteration's data versioned; raising loop.iterations runs only the new stages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _set_iterations(params_path: Path, n: int) -> None:
    """Rewrite loop.iterations and loop.chain (the block up to the next blank line) for n iterations."""
    from duelguard.config import Loop

    text = params_path.read_text()
    text = re.sub(r"(?m)^  iterations: \d+$", f"  iterations: {n}", text)
    items = "".join(
        f"\n    {key}: {{i: {v['i']}, prev: {v['prev']}, prev_generator: {v['prev_generator']}}}"
        for key, v in Loop.expected_chain(n).items()
    )
    text = re.sub(r"(?ms)^  chain:\n.*?(?=^\s*$)", f"  chain:{items}\n", text, count=1)
    params_path.write_text(text)


@pytest.fixture()
def repo_copy(tmp_path: Path, repo_root: Path, raw_data: Path) -> Path:
    """The tracked files of the repository in a fresh git repo, with shared/ beside it as in CI."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo_root,
                           capture_output=True, text=True, check=True).stdout.split()
    dest = tmp_path / "main"
    for rel in files:
        src = repo_root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    os.symlink(raw_data, tmp_path / "shared" / "data" / "raw")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def test_dvc_repro_runs_the_loop_and_adds_only_new_iterations(repo_copy: Path) -> None:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DUELGUARD_PROFILE", None)  # dvc must see the profile through params.yaml, as users run it
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    dvc = [sys.executable, "-m", "dvc"]
    params = repo_copy / "params.yaml"
    subprocess.run([sys.executable, "-m", "duelguard.cli", "profile", "tiny"], cwd=repo_copy, env=env, check=True)
    _set_iterations(params, 1)

    out = _run(dvc + ["repro"], repo_copy, env)
    assert "Running stage 'prepare_seed'" in out
    assert "Running stage 'train_classifier@iter_1'" in out
    for rel in ("data/seed/train.jsonl", "data/synthetic/iter_1/curated.jsonl", "models/classifier/iter_1",
                "models/generator/iter_1", "metrics/eval/iter_1.json", "metrics/promotion/iter_1.json"):
        assert (repo_copy / rel).exists(), rel
    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())
    assert "curate@iter_1" in lock["stages"]  # iteration 1's dataset is versioned (hash in dvc.lock)

    _set_iterations(params, 2)
    out = _run(dvc + ["repro"], repo_copy, env)
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    # only iteration 2's stages, and the report that summarises every iteration
    assert ran and all(name.endswith("@iter_2") for name in ran - {"report"}), ran
    assert (repo_copy / "data/synthetic/iter_2/curated.jsonl").exists()

    status = _run(dvc + ["status"], repo_copy, env)
    assert "up to date" in status.lower()
    _run(dvc + ["push", "-r", "localstore"], repo_copy, env)
    assert any((repo_copy.parent / "duelguard-dvc-remote").rglob("*"))
