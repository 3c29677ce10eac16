"""dvc.yaml, generated from the stage spec; and `duelguard loop`, the local runner (= `dvc repro`).

One DVC stage per stage run (prepare_seed, train_classifier_0, generate_1, ..., report), expanded
from params.yaml's loop.iterations, so ordering comes only from the data each run reads. Per run:

- cmd: `duelguard stage NAME [-i I]`;
- deps: the data the spec says it reads, then its code: every library module its function imports
  (duelguard.pipeline.codedeps), so editing a module reruns exactly the stages that run it;
- params: `profile`, `profiles` and the spec's keys;
- outs: data and models (cached by DVC, pushed to the remote); plots and reports with `cache: false`;
- metrics: `cache: false` (git tracks metrics/, plots/, reports/: `git add dvc.lock metrics plots
  reports` after a run, `dvc push`, and a clone + `dvc pull` is complete);
- side-effecting stages (register, promote): their records also get `persist: true`, which keeps the
  stage out of DVC's run cache (DVC 3.67 stores and restores `cache: false` outputs in the run cache;
  `persist` disables it for the stage). `always_changed` would do the same but make `dvc status`
  never clean. Such a stage reruns when its inputs change and is never replayed from a cache.

The committed dvc.yaml must equal `render()` (tests/unit/test_stage_spec.py); `duelguard dvc-yaml
--write` regenerates it after the spec or loop.iterations changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from duelguard.config import Params, load_params, set_iterations
from duelguard.fsio import atomic_write_text
from duelguard.layout import Layout
from duelguard.pipeline import codedeps
from duelguard.pipeline.spec import PROFILE_PARAMS, STAGES, SpecError, Stage, StageRun, producers, runs

# Where the library's source sits in the repository (pyproject.toml: [tool.setuptools.packages.find]).
LIBRARY_DIR = "libs"
HEADER = (
    "# GENERATED from the stage spec (libs/duelguard/pipeline/spec.py) and params.yaml loop.iterations\n"
    "# by `duelguard dvc-yaml --write`. Do not edit: change the spec and regenerate (a test compares them).\n"
    "# One stage per stage run; each lists the data it reads, then the library modules its function imports.\n"
)


def dvc_yaml_path(root: str | Path) -> Path:
    return Path(root) / "dvc.yaml"


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def uncached_flags(side_effects: bool) -> dict[str, bool]:
    """DVC flags of a git-tracked output (metrics, plots); `persist` keeps a side-effecting stage out of
    the run cache, so DVC never replays it instead of running it."""
    return {"cache": False, **({"persist": True} if side_effects else {})}


def _stage_entry(run: StageRun, layout: Layout, package_dir: Path) -> dict[str, Any]:
    stage = run.stage
    rel = lambda p: _relative(p, layout.root)  # noqa: E731
    uncached = uncached_flags(stage.side_effects)
    code = [rel(p) for p in codedeps.code_files(stage.function, package_dir)]
    entry: dict[str, Any] = {
        "cmd": f"duelguard stage {stage.name}" + ("" if stage.when == "first" else f" -i {run.iteration}"),
        "desc": stage.doc,
        "deps": [rel(p) for p in run.deps(layout)] + code,
        "params": [*PROFILE_PARAMS, *stage.params],
    }
    outs: list[Any] = [rel(p) for p in run.outs(layout)] + [{rel(p): dict(uncached)} for p in run.plots(layout)]
    if outs:
        entry["outs"] = outs
    entry["metrics"] = [{rel(p): dict(uncached)} for p in run.metrics(layout)]
    return entry


def render(params: Params, root: str | Path, stages: Sequence[Stage] = STAGES) -> str:
    """dvc.yaml for `params` (its loop.iterations and paths) in the repository at `root`."""
    root = Path(root).resolve()
    package_dir = root / LIBRARY_DIR / codedeps.PACKAGE
    if not (package_dir / "__init__.py").is_file():
        raise SpecError(f"{package_dir}: the library's source is not there; dvc.yaml lists its modules as code dependencies")
    layout = Layout.from_params(params, root)
    run_list = runs(params.loop.iterations, "dvc", stages)
    producers(run_list, layout)  # every dependency is written by an earlier run; no two runs write one path
    doc = {"stages": {run.name: _stage_entry(run, layout, package_dir) for run in run_list}}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=200, allow_unicode=True)


def differences(committed: str, expected: str) -> list[str]:
    """What differs between a dvc.yaml and the generated one, per stage (empty when identical)."""
    if committed == expected:
        return []
    old = (yaml.safe_load(committed) or {}).get("stages", {})
    new = (yaml.safe_load(expected) or {}).get("stages", {})
    out = [f"stage {name}: missing" for name in new if name not in old]
    out += [f"stage {name}: not in the spec" for name in old if name not in new]
    for name in new:
        if name in old and old[name] != new[name]:
            keys = sorted(k for k in set(old[name]) | set(new[name]) if old[name].get(k) != new[name].get(k))
            out.append(f"stage {name}: {', '.join(keys)} differ")
    return out or ["formatting or comments differ"]


def check(params: Params, root: str | Path, stages: Sequence[Stage] = STAGES) -> list[str]:
    """Differences between <root>/dvc.yaml and the generated file (empty: up to date)."""
    path = dvc_yaml_path(root)
    committed = path.read_text(encoding="utf-8") if path.exists() else ""
    return differences(committed, render(params, root, stages))


def write(params: Params, root: str | Path, stages: Sequence[Stage] = STAGES) -> bool:
    """Write <root>/dvc.yaml if it differs from the generated file; returns whether it changed."""
    path = dvc_yaml_path(root)
    text = render(params, root, stages)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def _gone(pid: int) -> bool:
    """Whether `pid` no longer runs: absent, or a zombie nobody reaped.

    DVC itself drops lock entries of absent processes but counts a zombie as alive. A `dvc repro`
    killed with its parent is re-parented to PID 1, and a container's PID 1 often never reaps, so
    the zombie would block every later run of the pipeline ("... is busy").
    """
    import psutil  # lazy: a DVC dependency

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def release_dead_holders(root: str | Path) -> list[int]:
    """Drop the entries of processes that are gone from <root>/.dvc/tmp/rwlock; returns their PIDs.

    Edited under DVC's own lock on that file, so a live `dvc repro` in the same repository is never
    disturbed; its entries stay.
    """
    from dvc.fs import localfs  # lazy: the CLI starts without DVC
    from dvc.rwlock import RWLOCK_FILE, _edit_rwlock

    lock_dir = Path(root) / ".dvc" / "tmp"
    if not (lock_dir / RWLOCK_FILE).exists():
        return []
    released: set[int] = set()
    with _edit_rwlock(str(lock_dir), localfs, False) as lock:
        for path, info in list(lock["write"].items()):
            if _gone(int(info["pid"])):
                released.add(int(info["pid"]))
                del lock["write"][path]
        for path, infos in list(lock["read"].items()):
            alive = [info for info in infos if not _gone(int(info["pid"]))]
            released.update(int(info["pid"]) for info in infos if info not in alive)
            if alive:
                lock["read"][path] = alive
            else:
                del lock["read"][path]
    return sorted(released)


def repro(root: str | Path, iterations: int | None = None, force: bool = False, extra: Sequence[str] = ()) -> int:
    """`duelguard loop`: set loop.iterations (if given), regenerate dvc.yaml, run `dvc repro`.

    DVC decides what reruns (changed data, params or code) and resumes a killed run: stages that
    finished are recorded in dvc.lock as they finish. `force` reruns every stage (`dvc repro --force`).
    Returns dvc's exit status.
    """
    root = Path(root).resolve()
    params_path = root / "params.yaml"  # the file dvc.yaml's `params:` refer to
    if iterations is not None:
        set_iterations(params_path, iterations)
    write(load_params(params_path, "default"), root)
    for pid in release_dead_holders(root):
        print(f"duelguard loop: released the DVC lock held by process {pid}, which is gone (a killed run)",
              file=sys.stderr)
    env = dict(os.environ)
    # DVC runs each stage's `duelguard stage ...` through the shell: this interpreter's scripts first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []), *extra]
    return subprocess.run(cmd, cwd=root, env=env).returncode
