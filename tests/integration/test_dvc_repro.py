"""The local runner, for real: `duelguard loop` (= regenerate dvc.yaml + `dvc repro`) in a fresh copy of
the repository on a small tiny profile, with shared/ beside it as in CI.

- versioning: run a prefix of the DAG, commit what a user commits, `dvc push`, clone, `dvc pull`:
  `dvc status` is clean (nothing would rerun);
- side effects: DVC replays a stage from its run cache, except a stage declared with side effects;
- code: editing a module a stage imports reruns that stage; editing another module does not;
- growth and resume: raising loop.iterations runs only the new iteration's stages (and the report
  over all of them), and a `duelguard loop` killed mid-stage resumes at that stage.

Every stage runs the copy's own code (PYTHONPATH), as it would in a clone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
DVC = [sys.executable, "-m", "dvc"]
DUELGUARD = [str(BIN / "duelguard")]


def _env(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DUELGUARD_PROFILE", "DUELGUARD_PARAMS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(repo / "libs")  # the copy's code, not the checkout the venv was installed from
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env["PYTHONUNBUFFERED"] = "1"  # stage announcements reach a watching test as they happen, not at a flush
    return env


def _run(cmd: list[str], repo: Path, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def _git(repo: Path, *args: str) -> str:
    return _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], repo)


@pytest.fixture()
def repo(tmp_path: Path, repo_root: Path, raw_data: Path) -> Path:
    """The repository's tracked (and not ignored) files in a fresh git repo, on a small tiny profile."""
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
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    raw["profile"] = "tiny"
    raw["paths"]["weights_cache"] = str(tmp_path / "weights")
    tiny = raw["profiles"]["tiny"]
    tiny["seed"]["quotas"] = {lang: {kind: {"unsafe": 40, "benign": 40} for kind in cells}
                              for lang, cells in tiny["seed"]["quotas"].items()}
    tiny["classifier"].update({"epochs": 1.0})
    tiny["evaluate"]["max_examples_per_lang"] = 20
    tiny["generator"].update({"seeds_per_iteration": 4, "n_samples": 3})
    tiny["dpo"]["max_length"] = 512
    # A random-init generator writes gibberish: let the fidelity filters pass some of it, so that later
    # stages see samples (the filters themselves are tested on real text in tests/unit/test_curation.py).
    tiny.setdefault("curation", {}).update({"min_similarity": -1.0, "max_label_contradiction": 1.0,
                                            "keep_details": False, "game_set_per_language": 1})
    raw["loop"]["stop_min_gain"] = -1.0  # a random-init classifier gains nothing: play every iteration anyway
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-qm", "copy")
    return dest


def test_a_clone_plus_dvc_pull_restores_the_run_exactly(repo: Path) -> None:
    """A prefix of the DAG (the seed, iteration 1's generation) keeps this under a minute: cached data,
    git-tracked metrics and plots, a metrics file per stage run. Side-effecting stages and the run
    cache: test_side_effecting_stages_are_never_replayed_from_the_run_cache."""
    out = _run([*DUELGUARD, "loop", "generate_1"], repo)
    assert _ran(out) == ["prepare_seed", "generate_1"]
    # What a user commits after a run: the lock file and the git-tracked metrics and plots.
    _git(repo, "add", "dvc.lock", "metrics", "plots")
    _git(repo, "commit", "-qm", "run")
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == "", "outputs neither committed nor cached"
    _run([*DVC, "push"], repo)  # remote `localstore` (.dvc/config): ../duelguard-dvc-remote beside the repo

    clone = repo.parent / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], repo.parent)
    # (The rest of the DAG never ran, so pull and status look at the prefix: generate_1 and its upstream.)
    _run([*DVC, "pull", "--with-deps", "generate_1"], clone)
    assert json.loads(_run([*DVC, "status", "--json", "--with-deps", "generate_1"], clone)) == {}, "the clone would rerun"
    for rel in ("data/seed/train.jsonl", "data/synthetic/iter_1/generated.jsonl", "metrics/generate/iter_1.json",
                "metrics/seed_card.json", "plots/seed/seed_card.png"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel


def test_side_effecting_stages_are_never_replayed_from_the_run_cache(tmp_path: Path) -> None:
    """DVC 3.67 replays `cache: false` outputs from its run cache too; the flags dvc.yaml gives a
    side-effecting stage make DVC run it instead. Two toy stages, each leaving a mark outside the repo."""
    from duelguard.pipeline.dvc import uncached_flags

    toy = tmp_path / "toy"
    toy.mkdir()
    effects = tmp_path / "effects.log"  # stands for the model registry: state outside the repository
    (toy / "stage.py").write_text(
        "import pathlib, sys\n"
        f"pathlib.Path({str(effects)!r}).open('a').write(sys.argv[1] + '\\n')\n"
        "pathlib.Path(sys.argv[1] + '.json').write_text(pathlib.Path('input.txt').read_text())\n"
    )
    (toy / "input.txt").write_text("a")
    stages = {name: {"cmd": f"{sys.executable} stage.py {name}", "deps": ["input.txt"],
                     "metrics": [{f"{name}.json": uncached_flags(side_effects=name == "register")}]}
              for name in ("evaluate", "register")}
    (toy / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    _git(toy, "init", "-q")
    _run([*DVC, "init", "-q"], toy)

    _run([*DVC, "repro"], toy)
    (toy / "input.txt").write_text("b")
    _run([*DVC, "repro"], toy)
    (toy / "input.txt").write_text("a")  # back to inputs DVC has seen: the run cache has both stages' results
    replay = _run([*DVC, "repro"], toy)
    assert "Stage 'evaluate' is cached - skipping run" in replay and (toy / "evaluate.json").read_text() == "a"
    assert effects.read_text().split() == ["evaluate", "register"] * 2 + ["register"]


def test_editing_a_module_reruns_exactly_the_stages_that_import_it(repo: Path) -> None:
    assert _ran(_run([*DUELGUARD, "loop", "prepare_seed"], repo)) == ["prepare_seed"]
    with (repo / "libs/duelguard/seed/split.py").open("a") as handle:
        handle.write("\n# edited\n")
    status = json.loads(_run([*DVC, "status", "--json", "prepare_seed"], repo))
    assert status == {"prepare_seed": [{"changed deps": {"libs/duelguard/seed/split.py": "modified"}}]}
    assert _ran(_run([*DUELGUARD, "loop", "prepare_seed"], repo)) == ["prepare_seed"]
    with (repo / "libs/duelguard/loop/dpo.py").open("a") as handle:
        handle.write("\n# edited\n")
    assert json.loads(_run([*DVC, "status", "--json", "prepare_seed"], repo)) == {}  # not a module it imports


def _assert_iteration_outputs(root: Path, i: int, last: bool = True) -> None:
    """Every output of iteration i exists, is valid, and the reports agree with the data files.
    The generator's adapter exists unless i is the `last` iteration (nothing would read it).

    The tiny profile's generator is a random-initialised model: most of its samples fail curation's
    language check, so an iteration may end with few curated samples and no pair (DPO then keeps
    the adapter and says so). The checks hold either way; DPO on real pairs is tests/unit/test_dpo.py.
    """
    from duelguard.fsio import read_jsonl
    from duelguard.records import read_records

    syn = root / "data" / "synthetic" / f"iter_{i}"
    curated = read_records(syn / "curated.jsonl")
    scored = read_records(syn / "scored.jsonl")
    game_set = read_records(syn / "game_set.jsonl")
    own_game = [r["id"] for r in game_set if r["iteration"] == i]
    assert [r["id"] for r in scored] == [r["id"] for r in curated] + own_game
    assert [r["id"] for r in scored if r.get("game_set")] == own_game
    assert all({"loss", "unsafe_score", "pred_unsafe", "correct", "similarity"} <= set(r) for r in scored)
    assert game_set == read_records(root / "data" / "synthetic" / "iter_1" / "game_set.jsonl")
    assert not {r["id"] for r in game_set} & {r["id"] for r in curated}
    rejected = read_jsonl(syn / "rejected.jsonl")
    assert (syn / "fidelity_sample.md").read_text().startswith(f"# Curation sample, iteration {i}")
    pairs = read_jsonl(syn / "pairs.jsonl")
    for pair in pairs:
        assert pair["prompt"] and pair["chosen"] != pair["rejected"]
        assert pair["margin"] is None or pair["margin"] >= 0.1
    gen = root / "models" / "generator" / f"iter_{i}"
    if last:
        assert not gen.exists(), "the last iteration trains no generator"
    else:
        marker = json.loads((gen / "duelguard_dpo.json").read_text())
        assert (gen / "adapter_config.json").exists() and marker["pairs"] == len(pairs)
        assert marker["updated"] is bool(pairs) or marker.get("reason")
    assert (root / "models" / "classifier" / f"iter_{i}" / "duelguard.json").exists()
    game = json.loads((root / "metrics" / "game" / f"iter_{i}.json").read_text())
    fresh = [r for r in scored if not r.get("game_set")]
    assert game["game_value"]["n"] == len(fresh)
    if fresh:
        assert game["game_value"]["error_rate"] == pytest.approx(sum(not r["correct"] for r in fresh) / len(fresh), abs=1e-6)
    assert game["curation"]["curated"] == len(curated) and game["pairs"]["pairs"] == len(pairs)
    assert sum(game["curation"]["dropped"].values()) == len(rejected)
    assert game["game_set"]["n"] == len(game_set) and game["game_set"]["classifier_iteration"] == i
    assert game["language_share"]["synthetic_available"] == sum(
        len(read_records(root / "data" / "synthetic" / f"iter_{k}" / "curated.jsonl")) for k in range(1, i + 1)
    )
    assert set(game["suite"]["f1_per_language"]) >= {"en", "fr", "es", "de"}
    assert set(game["composition"]) >= {"en", "fr", "es", "de"}


def test_more_iterations_run_only_new_stages_and_a_killed_loop_resumes(repo: Path) -> None:
    baseline = _ran(_run([*DUELGUARD, "loop", "--iterations", "0"], repo))
    assert baseline == ["prepare_seed", "train_classifier_0", "evaluate_0", "register_0", "promote_0", "report"]

    # One more iteration runs only iteration 1's stages; this run is killed inside its classifier training ...
    proc = subprocess.Popen([*DUELGUARD, "loop", "--iterations", "1"], cwd=repo, env=_env(repo), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.time() + 900
        while time.time() < deadline and proc.poll() is None and "Running stage 'train_classifier_1'" not in "".join(lines):
            time.sleep(0.2)
        assert proc.poll() is None, "the loop ended before reaching train_classifier_1:\n" + "".join(lines)[-3000:]
        # Killed at once: the stage process is still importing or loading (seconds), never finished;
        # waiting longer raced a fast tiny-profile training that could complete before the kill.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert yaml.safe_load((repo / "params.yaml").read_text())["loop"]["iterations"] == 1
    # (no train_generator_1: the last iteration trains no generator, nothing would read it)
    iteration_1 = {f"{s}_1" for s in ("generate", "curate", "score", "build_pairs",
                                       "train_classifier", "evaluate", "register", "promote")}
    first = _ran("".join(lines))
    assert first[-1] == "train_classifier_1" and set(first) <= iteration_1, first
    locked = set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    assert set(first[:-1]) <= locked and "train_classifier_1" not in locked

    # ... and resumes at that stage: the finished ones are in dvc.lock and are not run again.
    resumed = _ran(_run([*DUELGUARD, "loop", "--iterations", "1"], repo))
    assert "train_classifier_1" in resumed and resumed[-1] == "report"
    assert set(resumed) == (iteration_1 - set(first[:-1])) | {"report"}, resumed
    _assert_iteration_outputs(repo, 1)
    # The killed stage's half-written model never replaced anything: only finished directories remain.
    assert sorted(p.name for p in (repo / "models" / "classifier").iterdir()) == ["iter_0", "iter_1"]
    ablation = (repo / "reports" / "ablation.md").read_text()
    assert "seed only (iter 0)" in ablation and "after iteration 1" in ablation
    game0 = json.loads((repo / "metrics" / "game" / "iter_0.json").read_text())
    assert game0["game_set"]["classifier_iteration"] == 0, "the seed-only classifier is scored on the game set too"
    loop_md = (repo / "reports" / "loop.md").read_text()
    assert "## Pairs and DPO" in loop_md and "no DPO: the last iteration" in loop_md
    for png in ("f1_per_language.png", "language_share.png", "game_value.png"):
        assert (repo / "plots" / "loop" / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads(_run([*DVC, "status", "--json"], repo)) == {}

    # Growing the loop trains iteration 1's generator (generate_2 reads it) and runs iteration 2, nothing else.
    grown = _ran(_run([*DUELGUARD, "loop", "--iterations", "2"], repo))
    iteration_2 = {name.replace("_1", "_2") for name in iteration_1}
    assert set(grown) == {"train_generator_1", "report"} | iteration_2, grown
    assert grown.index("train_generator_1") < grown.index("generate_2")
    _assert_iteration_outputs(repo, 1, last=False)
    _assert_iteration_outputs(repo, 2)
