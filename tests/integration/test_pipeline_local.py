"""The Kubeflow pipeline run locally (kfp.local SubprocessRunner): one iteration on the tiny profile,
every stage a real subprocess running the real stage function, ending with a registered champion and
an exported Triton repository. Also checks that the pipeline's seed data set is byte-identical to
what the stage writes when DVC (or `duelguard loop`) runs it with the same params.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from duelguard.commands.pipeline import load_pipeline_module
from duelguard.config import load_params
from duelguard.layout import Layout

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"

pytestmark = pytest.mark.integration


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def only(paths: list[Path], what: str) -> Path:
    assert len(paths) == 1, f"{what}: {paths}"
    return paths[0]


def test_one_iteration_ends_with_registered_champion(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from duelguard.stages import run_stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    pl = load_pipeline_module(REPO)
    started = time.perf_counter()
    result = pl.run_local(PARAMS, tmp_path / "run", profile="tiny", iterations=1, root=REPO)
    print(f"pipeline run-local (tiny, 1 iteration): {time.perf_counter() - started:.1f} s")

    run_dir = only(sorted(Path(result["pipeline_root"]).glob("duelguard-loop-*")), "pipeline run directory")
    # The cumulative data set after iteration 1: seed splits + iteration 1's curated samples.
    data = run_dir / "curate" / "curated"
    assert (data / "data/seed/train.jsonl").stat().st_size > 0
    assert (data / "data/synthetic/iter_1/curated.jsonl").exists()
    assert (run_dir / "train-classifier-2" / "model" / "models/classifier/iter_1").is_dir()
    assert (run_dir / "train-generator" / "generator" / "models/generator/iter_1").is_dir()
    assert (run_dir / "evaluate" / "report").read_text().startswith("# duelguard evaluate, iteration 0")

    # The registry holds both iterations' classifiers; each promotion recorded its decision (a tiny
    # random model may be refused: the rules are real); export wrote a Triton repository.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    name = load_params(PARAMS, "tiny").tracking.registered_model
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) >= 2
    for task in ("promote", "promote-2"):
        decision = only(list((run_dir / task / "decision").rglob("iter_*.json")), f"{task} decision")
        assert "promote" in json.loads(decision.read_text())
    registered = client.get_registered_model(name)
    if registered.aliases.get("champion"):
        assert registered.aliases["champion"] in {v.version for v in versions}
    evaluate_output = json.loads((run_dir / "evaluate" / "executor_output.json").read_text())
    assert evaluate_output["artifacts"]["metrics"]["artifacts"][0]["metadata"], "no scalar metrics logged"
    repository = run_dir / "export" / "repository"
    assert list(repository.rglob("config.pbtxt")), "export did not write a Triton model repository"

    # Same params, same stage function, run the way DVC runs it: the same seed bytes.
    params = load_params(PARAMS, "tiny")
    raw = Layout.from_params(params, REPO).raw_data
    params = params.model_copy(update={"paths": params.paths.model_copy(update={"raw_data": str(raw)})})
    layout = Layout.from_params(params, tmp_path / "dvc-like")
    run_stage("prepare_seed", params, layout, 0)
    for split in ("train", "dev", "test"):
        assert digest(layout.seed_split(split)) == digest(data / "data/seed" / f"{split}.jsonl"), split
