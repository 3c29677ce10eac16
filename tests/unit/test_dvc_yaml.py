"""dvc.yaml and `duelguard loop` must agree on what each stage reads: both list it, and drift between
them would make DVC rerun (or skip) differently from the loop's resume fingerprint."""

from __future__ import annotations

from pathlib import Path

import yaml

from duelguard.loop import STAGE_PARAMS
from duelguard.stages import ITERATION_STAGES, SEED_STAGES, STAGES

# DVC stage -> the stage functions its cmd runs (evaluate and register share one DVC stage).
DVC_TO_STAGES = {
    "prepare_seed": ["prepare_seed"],
    "train_classifier_0": ["train_classifier"],
    "evaluate_0": ["evaluate", "register"],
    "promote_0": ["promote"],
    "generate": ["generate"],
    "curate": ["curate"],
    "score": ["score"],
    "build_pairs": ["build_pairs"],
    "train_generator": ["train_generator"],
    "train_classifier": ["train_classifier"],
    "evaluate": ["evaluate", "register"],
    "promote": ["promote"],
}


def _stages(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]


def test_every_dvc_stage_lists_exactly_the_params_its_functions_read(repo_root: Path) -> None:
    for name, stage in _stages(repo_root).items():
        if name not in DVC_TO_STAGES:
            continue
        body = stage.get("do", stage)
        listed = {p for p in body["params"] if p not in ("profile", "profiles")}
        expected = set().union(*(STAGE_PARAMS[s] for s in DVC_TO_STAGES[name]))
        assert listed == expected, f"dvc.yaml stage {name}: lists {sorted(listed)}, loop reads {sorted(expected)}"
        for fn in DVC_TO_STAGES[name]:
            assert f"duelguard stage {fn} " in body["cmd"] + " ", f"{name} does not run {fn}"


def test_every_loop_stage_is_a_dvc_stage_and_a_registered_function(repo_root: Path) -> None:
    covered = {fn for fns in DVC_TO_STAGES.values() for fn in fns}
    assert set(SEED_STAGES) | set(ITERATION_STAGES) <= covered
    assert covered <= set(STAGES) and set(STAGE_PARAMS) == covered
    iteration_stages = {n for n, s in _stages(repo_root).items() if "foreach" in s}
    assert iteration_stages >= {n for n in DVC_TO_STAGES if not n.endswith("_0") and n != "prepare_seed"}
