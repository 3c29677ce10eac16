"""The Kubeflow pipeline run locally (kfp.local SubprocessRunner): one iteration on the tiny profile,
every stage a real subprocess running the real stage function, ending with a registered champion,
the reports and an exported Triton repository. Also checks that the pipeline's seed data set is
byte-identical to what the stage writes when DVC (`duelguard loop`) runs it with the same params.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

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


def test_one_iteration_ends_with_registered_champion(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from duelguard.pipeline.spec import run_stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    started = time.perf_counter()
    result = pl.run_local(PARAMS, tmp_path / "run", profile="tiny", iterations=1, root=REPO)
    print(f"pipeline run-local (tiny, 1 iteration): {time.perf_counter() - started:.1f} s")

    run_dir = only(sorted(Path(result["pipeline_root"]).glob("duelguard-loop-*")), "pipeline run directory")
    # Each task's `out` artifact is a root-relative tree of exactly the outputs the spec declares.
    seed = run_dir / "prepare-seed" / "out"
    assert (seed / "data/seed/train.jsonl").stat().st_size > 0 and (seed / "metrics/seed_card.json").exists()
    assert (run_dir / "curate-1" / "out" / "data/synthetic/iter_1/curated.jsonl").exists()
    assert (run_dir / "train-classifier-1" / "out" / "models/classifier/iter_1/duelguard.json").exists()
    assert (run_dir / "train-generator-1" / "out" / "models/generator/iter_1/adapter_config.json").exists()
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
