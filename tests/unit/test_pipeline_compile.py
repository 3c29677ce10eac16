"""Compile test of the Kubeflow pipeline `duelguard-loop` (no cluster needed).

Compiles the repository's params.yaml with the real KFP compiler and checks what the cluster relies on
against the stage spec: one task per stage run, iterations unrolled from loop.iterations, each task's
inputs wired to exactly the runs the spec says it reads from, caching off for side-effecting stages,
GPU requests + node selector + toleration and the model-cache PVC where the spec asks for them, the
Secrets as env on every step, the image, and parameter defaults equal to params.yaml. Also the glue's
error paths and the CLI's KFP_HOST errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from duelguard.config import ConfigError, load_params
from duelguard.layout import Layout
from duelguard.pipeline import kfp_glue
from duelguard.pipeline import kfp_pipeline as pl
from duelguard.pipeline.spec import StageRun, producers, runs, stage

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"


def compile_to(tmp: Path, params_path: Path = PARAMS, profile: str | None = None, image: str | None = None,
               **kwargs) -> tuple[dict, dict, dict]:
    out = tmp / "duelguard-loop.yaml"
    result = pl.compile_pipeline(params_path, out, profile=profile, image=image, root=REPO, **kwargs)
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], result


def by_display_name(spec: dict) -> dict[str, tuple[dict, str]]:
    """display name -> (task, executor label)."""
    out = {}
    for task in spec["root"]["dag"]["tasks"].values():
        component = spec["components"][task["componentRef"]["name"]]
        out[task["taskInfo"]["name"]] = (task, component.get("executorLabel"))
    return out


def display(run: StageRun) -> str:
    return run.name.replace("_", "-")


def test_compiled_structure_follows_the_spec_and_params(tmp_path):
    params = load_params(PARAMS)
    spec, k8s, result = compile_to(tmp_path)
    kf = params.kubeflow
    n = params.loop.iterations
    assert spec["pipelineInfo"]["name"] == "duelguard-loop" and result["iterations"] == n

    # Defaults come from params.yaml, exactly.
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert json.loads(inputs["params_json"]["defaultValue"]) == yaml.safe_load(PARAMS.read_text())
    assert inputs["profile"]["defaultValue"] == params.profile
    assert inputs["raw_data_uri"]["defaultValue"] == kf.raw_data_uri

    tasks = by_display_name(spec)
    run_list = runs(n, "kfp")
    assert set(tasks) == {display(r) for r in run_list} | {"raw-data"}
    assert {r.stage.name for r in run_list} >= {"prepare_seed", "train_classifier", "generate", "curate", "score",
                                                 "build_pairs", "train_generator", "evaluate", "register", "promote",
                                                 "report", "export"}
    executors = spec["deploymentSpec"]["executors"]
    assert "importer" in executors[tasks["raw-data"][1]]
    for run in run_list:
        task, label = tasks[display(run)]
        container = executors[label]["container"]
        # One image (the trainer, tagged by commit), nothing pip-installed at run time, the glue called.
        assert container["image"].startswith(kf.image + ":")
        assert "pip install" not in " ".join(container["command"])
        assert f"run_component({run.stage.name!r}, params_json, profile, {run.iteration}, {n}," in container["command"][-1]
        # Caching on, except for stages with side effects (registry writes, champion reads).
        assert task.get("cachingOptions", {}).get("enableCache", False) is (not run.stage.side_effects), run.name
        plat = k8s[label]
        secrets = {s["secretName"]: {e["envVar"] for e in s["keyToEnv"]} for s in plat["secretAsEnv"]}
        assert secrets == {kf.mlflow_secret: {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"},
                           kf.object_store_secret: {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"}}, run.name
        accel = container.get("resources", {}).get("accelerator")
        if run.stage.gpu:
            assert accel["resourceType"] == kf.gpu_resource and int(accel["resourceCount"]) == kf.gpu_count, run.name
            assert plat["nodeSelector"]["labels"] == kf.gpu_node_selector, run.name
            assert plat["tolerations"] == [{"key": kf.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}], run.name
        else:
            assert accel is None and "nodeSelector" not in plat and "tolerations" not in plat, run.name
        pvcs = [(p["constant"], p["mountPath"]) for p in plat.get("pvcMount", [])]
        assert pvcs == ([(kf.model_cache_pvc, kf.model_cache_mount)] if run.stage.gpu or run.stage.model_cache else []), run.name
    assert {r.stage.name for r in run_list if r.stage.side_effects} == {"register", "promote", "export"}


def test_each_task_reads_exactly_the_runs_the_spec_says(tmp_path):
    params = load_params(PARAMS)
    spec, _, _ = compile_to(tmp_path)
    tasks = by_display_name(spec)
    key = {t["taskInfo"]["name"]: k for k, t in spec["root"]["dag"]["tasks"].items()}
    run_list = runs(params.loop.iterations, "kfp")
    upstream = producers(run_list, Layout.from_params(params, "/x"))

    def sources(name: str) -> dict[str, tuple[str, str]]:
        arts = tasks[name][0]["inputs"].get("artifacts", {})
        return {arg: (a["taskOutputArtifact"]["producerTask"], a["taskOutputArtifact"]["outputArtifactKey"])
                for arg, a in arts.items() if "taskOutputArtifact" in a}

    for run in run_list:
        expected = {f"in_{up.name}": (key[display(up)], pl.OUTPUT) for up in upstream[run.name]}
        if run.stage.name == "prepare_seed":
            expected["raw_data"] = (key["raw-data"], "artifact")
        assert sources(display(run)) == expected, run.name
    # Spot checks of the loop's wiring, all of it from the data each stage reads.
    assert "in_train_classifier_0" in sources("score-1") and "in_train_generator_1" in sources("generate-2")
    assert not any(arg.startswith("in_train_generator") for arg in sources("generate-1"))
    assert {"in_curate_1", "in_curate_2", "in_train_classifier_1"} <= set(sources("train-classifier-2"))
    assert {"in_register_1", "in_promote_0"} <= set(sources("promote-1"))
    assert {"in_promote_2", "in_train_classifier_2"} == set(sources("export"))


def test_iterations_unroll_from_params(tmp_path):
    text = pl.with_iterations(pl.read_params_json(PARAMS), 3)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(json.loads(text)))
    spec, _, result = compile_to(tmp_path, params_path=params_path, profile="tiny", image="reg.example/duelguard-trainer:abc")
    assert result["iterations"] == 3 and result["image"] == "reg.example/duelguard-trainer:abc"
    assert set(by_display_name(spec)) == {display(r) for r in runs(3, "kfp")} | {"raw-data"}
    assert "generate-3" in by_display_name(spec)
    assert spec["root"]["inputDefinitions"]["parameters"]["profile"]["defaultValue"] == "tiny"


def test_image_tag_follows_git_commit():
    assert pl.resolve_image("reg.example:5000/duelguard-trainer", REPO) == f"reg.example:5000/duelguard-trainer:{pl.git_tag(REPO)}"
    assert pl.resolve_image("duelguard-trainer:v1", REPO) == "duelguard-trainer:v1"


# --- the glue's guards -------------------------------------------------------------------------------


def test_glue_rejects_iteration_mismatch_and_private_tracking(monkeypatch, tmp_path):
    text = pl.read_params_json(PARAMS)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(ConfigError, match="compiled with 5 iterations"):
        kfp_glue.run_component("prepare_seed", text, "tiny", 0, 5, workdir=tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        kfp_glue.require_shared_tracking(kfp_glue.params_from_text(text, "tiny"))
    with pytest.raises(ConfigError, match="params_json"):
        kfp_glue.params_from_text("[1, 2]", "tiny")


def test_glue_publishes_the_declared_outputs_as_a_root_relative_tree(tmp_path):
    params = load_params(PARAMS, "tiny")
    layout = Layout.from_params(params, tmp_path / "work")
    run = StageRun(stage("curate"), 1, 2)
    art = SimpleNamespace(path=str(tmp_path / "artifact"), metadata={})
    with pytest.raises(FileNotFoundError, match="did not write"):
        kfp_glue.publish(run, layout, art)
    for path in run.outputs(layout):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{path.name}\n")
    copied = kfp_glue.publish(run, layout, art)
    assert copied == ["data/synthetic/iter_1/curated.jsonl", "data/synthetic/iter_1/rejected.jsonl",
                      "data/synthetic/iter_1/game_set.jsonl", "data/synthetic/iter_1/fidelity_sample.md",
                      "metrics/curation/iter_1.json", "metrics/timings/curate_1.json"]
    # Root-relative: merging the artifact into a fresh root reproduces the Layout paths.
    fresh = Layout.from_params(params, tmp_path / "fresh")
    kfp_glue.merge_tree(Path(art.path), fresh.root)
    assert fresh.curated(1).read_text() == "curated.jsonl\n" and fresh.curation_report(1).exists()
    with pytest.raises(FileNotFoundError, match="input artifact"):
        kfp_glue.merge_tree(tmp_path / "missing", fresh.root)


def test_scalar_metrics_and_report():
    summary = {"f1": {"en": 0.7, "fr": 0.5}, "n": 3, "ok": True, "name": "x", "bad": float("nan")}
    assert kfp_glue.scalar_leaves(summary) == {"f1.en": 0.7, "f1.fr": 0.5, "n": 3.0}
    report = kfp_glue.render_report("evaluate_1", summary)
    assert "| f1.fr | 0.5 |" in report and report.startswith("# duelguard evaluate_1")


# --- CLI --------------------------------------------------------------------------------------------


def test_cli_compile_and_submit_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from duelguard.cli import app

    runner = CliRunner()
    out = tmp_path / "p.yaml"
    res = runner.invoke(app, ["--params", str(PARAMS), "--root", str(REPO), "pipeline", "compile", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["package"] == str(out) and out.exists()

    monkeypatch.delenv("KFP_HOST", raising=False)
    res = runner.invoke(app, ["--params", str(PARAMS), "--root", str(REPO), "pipeline", "submit", "--package", str(out)])
    assert res.exit_code == 2 and "KFP_HOST is not set" in res.output
    res = runner.invoke(app, ["--params", str(PARAMS), "--root", str(REPO), "pipeline", "submit", "--package", str(out)],
                        env={"KFP_HOST": "http://127.0.0.1:9"})
    assert res.exit_code == 2 and "unreachable" in res.output
    res = runner.invoke(app, ["--params", str(PARAMS), "--root", str(REPO), "pipeline", "submit", "--package", str(tmp_path / "nope.yaml")],
                        env={"KFP_HOST": "http://127.0.0.1:9"})
    assert res.exit_code == 2 and "compile" in res.output
