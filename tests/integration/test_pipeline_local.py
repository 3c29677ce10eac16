"""The Kubeflow pipeline run locally (kfp.local SubprocessRunner): one iteration on the tiny profile,
every stage a real subprocess running the real stage function, ending with a registered champion,
the reports and an exported Triton repository. Also checks that the pipeline's seed data set is
byte-identical to what the stage writes when DVC (`duelguard loop`) runs it with the same params.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from duelguard.config import load_params
from duelguard.layout import Layout
from duelguard.pipeline import kfp_pipeline as pl

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"

pytestmark = pytest.mark.integration


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def only(paths: list[Path], what: str) -> Path:
    assert len(paths) == 1, f"{what}: {paths}"
    return paths[0]


def fresh_system_temp(tmp_path: Path, monkeypatch) -> Path:
    """An empty folder made the system temporary directory of this process and its subprocesses."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # forget the cached one: read $TMPDIR again
    assert Path(tempfile.gettempdir()) == folder
    return folder


def test_one_iteration_ends_with_registered_champion(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from duelguard.pipeline.spec import run_stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    system_temp = fresh_system_temp(tmp_path, monkeypatch)
    started = time.perf_counter()
    result = pl.run_local(PARAMS, tmp_path / "run", profile="tiny", iterations=1, root=REPO)
    print(f"pipeline run-local (tiny, 1 iteration): {time.perf_counter() - started:.1f} s")
    # Every step cleaned up after itself: nothing is left in the system temporary directory.
    assert sorted(p.name for p in system_temp.iterdir()) == []

    run_dir = only(sorted(Path(result["pipeline_root"]).glob("duelguard-loop-*")), "pipeline run directory")
    # Each task's `out` artifact is a root-relative tree of exactly the outputs the spec declares.
    seed = run_dir / "prepare-seed" / "out"
    assert (seed / "data/seed/train.jsonl").stat().st_size > 0 and (seed / "metrics/seed_card.json").exists()
    assert (run_dir / "curate-1" / "out" / "data/synthetic/iter_1/curated.jsonl").exists()
    assert (run_dir / "train-classifier-1" / "out" / "models/classifier/iter_1/duelguard.json").exists()
    assert (run_dir / "build-pairs-1" / "out" / "data/synthetic/iter_1/pairs.jsonl").exists()
    assert not (run_dir / "train-generator-1").exists(), "the last iteration trains no generator (nothing reads it)"
    assert (run_dir / "evaluate-0" / "out_report").read_text().startswith("# duelguard evaluate_0")
    ablation = (run_dir / "report" / "out" / "reports/ablation.md").read_text()
    assert "seed only (iter 0)" in ablation and "after iteration 1" in ablation

    # The registry holds both iterations' classifiers; each promotion recorded its decision (a tiny
    # random model may be refused: the rules are real); export wrote a Triton repository.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    name = load_params(PARAMS, "tiny").tracking.registered_model
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) >= 2
    for i in (0, 1):
        decision = run_dir / f"promote-{i}" / "out" / f"metrics/promotion/iter_{i}.json"
        assert "promote" in json.loads(decision.read_text())
    registered = client.get_registered_model(name)
    if registered.aliases.get("champion"):
        assert registered.aliases["champion"] in {v.version for v in versions}
    evaluate_output = json.loads((run_dir / "evaluate-0" / "executor_output.json").read_text())
    assert evaluate_output["artifacts"][pl.METRICS]["artifacts"][0]["metadata"], "no scalar metrics logged"
    repository = run_dir / "export" / "out" / "build" / "triton_repository"
    assert list(repository.rglob("config.pbtxt")), "export did not write a Triton model repository"

    # Same params, same stage function, run the way DVC runs it: the same seed bytes.
    params = load_params(PARAMS, "tiny")
    raw = Layout.from_params(params, REPO).raw_data
    params = params.model_copy(update={"paths": params.paths.model_copy(update={"raw_data": str(raw)})})
    layout = Layout.from_params(params, tmp_path / "dvc-like")
    run_stage("prepare_seed", params, layout, 0)
    for split in ("train", "dev", "test"):
        assert digest(layout.seed_split(split)) == digest(seed / "data/seed" / f"{split}.jsonl"), split


def test_a_step_removes_its_temporary_root_whether_its_stage_succeeds_or_fails(tmp_path, monkeypatch):
    """kfp_glue.run_component (one KFP step) runs its stage in a temporary root: removed after a
    successful step (its outputs are published first) and after a failed one."""
    from duelguard.fsio import DataError
    from duelguard.pipeline.kfp_glue import run_component

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    system_temp = fresh_system_temp(tmp_path, monkeypatch)
    text = pl.with_iterations(pl.read_params_json(PARAMS), 1)
    raw = SimpleNamespace(path=str(Layout.from_params(load_params(PARAMS, "tiny"), REPO).raw_data), metadata={})
    out = SimpleNamespace(path=str(tmp_path / "seed-out"), metadata={})
    summary = run_component("prepare_seed", text, "tiny", 0, 1, output=out, raw_data=raw)
    assert summary["records"] > 0 and (tmp_path / "seed-out" / "data/seed/train.jsonl").stat().st_size > 0
    assert sorted(p.name for p in system_temp.iterdir()) == []

    # score_1 without its upstream artifacts: the stage fails inside the step's root.
    with pytest.raises(DataError, match=r"duelguard-score-\w+/data/synthetic/iter_1/curated.jsonl: file not found"):
        run_component("score", text, "tiny", 1, 1, output=SimpleNamespace(path=str(tmp_path / "score-out"), metadata={}))
    assert sorted(p.name for p in system_temp.iterdir()) == []
