"""`duelguard loop` end to end on the tiny profile (every real stage), and resume after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from duelguard.stages import ITERATION_STAGES, SEED_STAGES

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DUELGUARD = Path(sys.executable).with_name("duelguard")


def _make_root(root: Path, raw_data: Path, classifier_epochs: float = 1.0) -> Path:
    """A repository root with its own params.yaml: tiny profile, made smaller still so a loop
    iteration takes tens of seconds on a shared 2-core machine."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["profile"] = "tiny"
    raw["paths"]["raw_data"] = str(raw_data)
    raw["paths"]["weights_cache"] = str(root / "weights")
    tiny = raw["profiles"]["tiny"]
    tiny.setdefault("seed", {})["quotas"] = {
        "en": {"instruction": {"unsafe": 60, "benign": 60}, "statement": {"unsafe": 30, "benign": 30}},
        **{lang: {"statement": {"unsafe": 40, "benign": 40}} for lang in ("fr", "es", "de")},
    }
    tiny.setdefault("classifier", {}).update({"epochs": classifier_epochs})
    tiny.setdefault("evaluate", {})["max_examples_per_lang"] = 20
    tiny.setdefault("generator", {}).update({"seeds_per_iteration": 4, "n_samples": 3})
    # A random-init generator writes gibberish: let the fidelity filters pass some of it, so that later
    # stages see samples (the filters themselves are tested on real text in tests/unit/test_curation.py).
    tiny.setdefault("curation", {}).update({"min_similarity": -1.0, "max_label_contradiction": 1.0,
                                            "game_set_per_language": 1})
    tiny.setdefault("dpo", {})["max_length"] = 512
    raw["loop"]["stop_min_gain"] = -1.0  # a random-init classifier gains nothing: play every iteration anyway
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DUELGUARD_PROFILE", "DUELGUARD_PARAMS")}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return env


def _loop_cmd(root: Path, iterations: int) -> list[str]:
    return [str(DUELGUARD), "--params", str(root / "params.yaml"), "--root", str(root), "loop", "--iterations", str(iterations)]


def _run_loop(root: Path, iterations: int) -> dict:
    proc = subprocess.run(_loop_cmd(root, iterations), cwd=root, env=_env(), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    return json.loads(text[text.index("{") : text.rindex("}") + 1])


def _state(root: Path) -> dict:
    return json.loads((root / ".duelguard" / "loop_state.json").read_text())


def _assert_iteration_outputs(root: Path, i: int) -> None:
    """Every output of iteration i exists, is valid, and the reports agree with the data files.

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
    marker = json.loads((gen / "duelguard_dpo.json").read_text())
    assert (gen / "adapter_config.json").exists() and marker["pairs"] == len(pairs)
    assert marker["updated"] is bool(pairs) or marker.get("reason")
    assert (root / "models" / "classifier" / f"iter_{i}" / "duelguard.json").exists()
    game = json.loads((root / "metrics" / "game" / f"iter_{i}.json").read_text())
    fresh = [r for r in scored if not r.get("game_set")]
    assert game["game_value"]["n"] == len(fresh)
    if fresh:
        assert game["game_value"]["error_rate"] == sum(not r["correct"] for r in fresh) / len(fresh)
    assert game["curation"]["curated"] == len(curated) and game["pairs"]["pairs"] == len(pairs)
    assert sum(game["curation"]["dropped"].values()) == len(rejected)
    assert game["game_set"]["n"] == len(game_set) and game["game_set"]["classifier_iteration"] == i
    assert game["language_share"]["synthetic_available"] == sum(
        len(read_records(root / "data" / "synthetic" / f"iter_{k}" / "curated.jsonl")) for k in range(1, i + 1)
    )
    assert set(game["suite"]["f1_per_language"]) >= {"en", "fr", "es", "de"}
    assert set(game["composition"]) >= {"en", "fr", "es", "de"}


def test_two_iterations_end_to_end_then_rerun_skips_everything(tmp_path, raw_data):
    root = _make_root(tmp_path / "repo", raw_data)
    result = _run_loop(root, 2)
    total = len(SEED_STAGES) + 2 * len(ITERATION_STAGES)
    assert result["skipped"] == [] and len(result["ran"]) == total
    state = _state(root)
    assert state["running"] is None and len(state["stages"]) == total
    for i in (1, 2):
        _assert_iteration_outputs(root, i)
    # The iteration-2 generator continued from the iteration-1 adapter.
    dpo2 = json.loads((root / "metrics" / "dpo" / "iter_2.json").read_text())
    assert dpo2["init_from"].endswith("iter_1")

    timings = json.loads((root / "metrics" / "loop_timings.json").read_text())
    assert set(timings["iterations"]) == {"0", "1", "2"} and len(timings["iterations"]["2"]) == len(ITERATION_STAGES)
    assert all(v > 0 for it in timings["iterations"].values() for v in it.values())
    ablation = (root / "reports" / "ablation.md").read_text()
    assert "seed only (iter 0)" in ablation and "after iteration 2" in ablation
    game0 = json.loads((root / "metrics" / "game" / "iter_0.json").read_text())
    assert game0["game_set"]["classifier_iteration"] == 0, "the seed-only classifier is scored on the game set too"
    for png in ("f1_per_language.png", "language_share.png", "game_value.png"):
        assert (root / "plots" / "loop" / png).read_bytes()[:4] == b"\x89PNG"
    assert (root / "reports" / "ablation.png").exists()

    again = _run_loop(root, 2)
    assert again["ran"] == [] and len(again["skipped"]) == total


def test_killed_mid_stage_resumes_from_that_stage(tmp_path, raw_data):
    root = _make_root(tmp_path / "repo", raw_data, classifier_epochs=6.0)
    # iteration 1's classifier training: long enough (tens of seconds) to be killed in the middle.
    target = {"stage": "train_classifier", "iteration": 1}
    proc = subprocess.Popen(_loop_cmd(root, 1), cwd=root, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 1200
        while time.time() < deadline and proc.poll() is None:
            path = root / ".duelguard" / "loop_state.json"
            running = json.loads(path.read_text()).get("running") if path.exists() else None
            if running and {k: running[k] for k in target} == target:
                time.sleep(0.5)  # inside the stage: its data is loading or the model training
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the loop ended before reaching the target stage"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    killed = _state(root)
    assert killed["running"]["stage"] == "train_classifier" and killed["running"]["iteration"] == 1
    assert "1/train_classifier" not in killed["stages"] and "1/train_generator" in killed["stages"]
    completed_before = {k: v["completed_at"] for k, v in killed["stages"].items()}

    result = _run_loop(root, 1)
    assert result["ran"] == ["1/train_classifier", "1/evaluate", "1/register", "1/promote"]
    assert result["skipped"] == list(completed_before)
    state = _state(root)
    assert state["running"] is None
    assert {k: state["stages"][k]["completed_at"] for k in completed_before} == completed_before
    _assert_iteration_outputs(root, 1)
    # The killed stage's half-written model never replaced anything: only finished directories remain.
    assert sorted(p.name for p in (root / "models" / "classifier").iterdir() if not p.name.startswith(".")) == [
        "iter_0", "iter_1"]
