"""Golden compile test of the Kubeflow pipeline `duelguard-loop` (no cluster needed).

Compiles the repository's params.yaml and checks the structure the cluster relies on: every stage,
iterations unrolled from loop.iterations, GPU requests + node selector + toleration on the heavy
steps only, the model-cache PVC, the Secrets as env on every step, caching, the image, and parameter
defaults equal to params.yaml. Also the glue's error paths and the CLI's KFP_HOST errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from duelguard.commands.pipeline import load_pipeline_module
from duelguard.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
STAGES = ("prepare_seed", "train_classifier", "generate", "curate", "score", "build_pairs",
          "train_generator", "evaluate", "register", "promote", "export")


@pytest.fixture(scope="module")
def pl():
    return load_pipeline_module(REPO)


def compile_to(pl, tmp: Path, params_path: Path = PARAMS, profile: str | None = None, image: str | None = None) -> tuple[dict, dict, dict]:
    out = tmp / "duelguard-loop.yaml"
    result = pl.compile_pipeline(params_path, out, profile=profile, image=image, root=REPO)
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], result


def by_display_name(spec: dict) -> dict[str, tuple[dict, str]]:
    """display name -> (task, executor label)."""
    out = {}
    for task in spec["root"]["dag"]["tasks"].values():
        component = spec["components"][task["componentRef"]["name"]]
        out[task["taskInfo"]["name"]] = (task, component.get("executorLabel"))
    return out


def expected_names(iterations: int) -> set[str]:
    names = {"raw-data", "prepare-seed", "train-classifier-iter-0", f"export-iter-{iterations}"}
    for i in range(iterations + 1):
        names |= {f"evaluate-iter-{i}", f"register-iter-{i}", f"promote-iter-{i}"}
    for i in range(1, iterations + 1):
        names |= {f"{s}-iter-{i}" for s in ("generate", "curate", "score", "build-pairs", "train-generator", "train-classifier")}
    return names


def test_compiled_structure_matches_params(pl, tmp_path):
    params = load_params(PARAMS)
    spec, k8s, result = compile_to(pl, tmp_path)
    kf = params.kubeflow
    n = params.loop.iterations
    assert spec["pipelineInfo"]["name"] == "duelguard-loop"
    assert result["iterations"] == n

    # Defaults come from params.yaml, exactly.
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert json.loads(inputs["params_json"]["defaultValue"]) == yaml.safe_load(PARAMS.read_text())
    assert inputs["profile"]["defaultValue"] == params.profile
    assert inputs["raw_data_uri"]["defaultValue"] == kf.raw_data_uri

    tasks = by_display_name(spec)
    assert set(tasks) == expected_names(n)
    components = {spec["components"][t["componentRef"]["name"]].get("executorLabel", "").removeprefix("exec-").rstrip("-0123456789")
                  for t, _ in tasks.values()}
    assert {s.replace("_", "-") for s in STAGES} <= components

    executors = spec["deploymentSpec"]["executors"]
    for name, (task, label) in tasks.items():
        if name == "raw-data":
            assert "importer" in executors[label]
            continue
        stage = name.rsplit("-iter-", 1)[0].replace("-", "_")
        container = executors[label]["container"]
        # One image (the trainer, tagged by commit), nothing pip-installed at run time.
        assert container["image"].startswith(kf.image + ":")
        assert "pip install" not in " ".join(container["command"])
        assert f'run_component("{stage}"' in container["command"][-1], name
        # Caching on, except steps that read the mutable champion alias.
        assert task.get("cachingOptions", {}).get("enableCache", False) is (stage not in ("promote", "export")), name
        plat = k8s[label]
        secrets = {s["secretName"]: {e["envVar"] for e in s["keyToEnv"]} for s in plat["secretAsEnv"]}
        assert secrets == {kf.mlflow_secret: {"MLFLOW_TRACKING_URI"},
                           kf.object_store_secret: {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"}}, name
        gpu = stage in ("train_classifier", "generate", "train_generator", "evaluate")
        accel = container.get("resources", {}).get("accelerator")
        if gpu:
            assert accel["resourceType"] == kf.gpu_resource and int(accel["resourceCount"]) == kf.gpu_count, name
            assert plat["nodeSelector"]["labels"] == kf.gpu_node_selector, name
            assert plat["tolerations"] == [{"key": kf.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}], name
        else:
            assert accel is None and "nodeSelector" not in plat and "tolerations" not in plat, name
        pvcs = plat.get("pvcMount", [])
        if gpu or stage == "score":
            assert [(p["constant"], p["mountPath"]) for p in pvcs] == [(kf.model_cache_pvc, kf.model_cache_mount)], name
        else:
            assert pvcs == [], name


def test_data_flow_and_ordering(pl, tmp_path):
    spec, _, _ = compile_to(pl, tmp_path)
    tasks = by_display_name(spec)
    key = {t["taskInfo"]["name"]: k for k, t in spec["root"]["dag"]["tasks"].items()}

    def deps(name: str) -> set[str]:
        return set(tasks[name][0].get("dependentTasks", []))

    def source(name: str, arg: str) -> tuple[str, str]:
        art = tasks[name][0]["inputs"]["artifacts"][arg]["taskOutputArtifact"]
        return art["producerTask"], art["outputArtifactKey"]

    # Iteration 1 is fed by iteration 0; classifier i trains on the cumulative data set of curate(i).
    assert source("score-iter-1", "classifier") == (key["train-classifier-iter-0"], "model")
    assert source("train-classifier-iter-1", "data") == (key["curate-iter-1"], "curated")
    assert source("train-classifier-iter-1", "previous") == (key["train-classifier-iter-0"], "model")
    assert source("curate-iter-2", "data") == (key["curate-iter-1"], "curated")
    assert source("generate-iter-2", "generator") == (key["train-generator-iter-1"], "generator")
    assert "generator" not in tasks["generate-iter-1"][0]["inputs"].get("artifacts", {})
    assert source("promote-iter-1", "record") == (key["register-iter-1"], "record")
    assert source("export-iter-2", "model") == (key["train-classifier-iter-2"], "model")
    # Promotions are serialised and follow registration; export follows the last promotion.
    assert {key["register-iter-1"], key["promote-iter-0"]} <= deps("promote-iter-1")
    assert key["promote-iter-2"] in deps("export-iter-2")


def test_iterations_unroll_from_params(pl, tmp_path):
    text = pl.with_iterations(pl.read_params_json(PARAMS), 3)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(json.loads(text)))
    spec, _, result = compile_to(pl, tmp_path, params_path=params_path, profile="tiny", image="reg.example/duelguard-trainer:abc")
    assert result["iterations"] == 3 and result["image"] == "reg.example/duelguard-trainer:abc"
    assert set(by_display_name(spec)) == expected_names(3)
    assert spec["root"]["inputDefinitions"]["parameters"]["profile"]["defaultValue"] == "tiny"


def test_image_tag_follows_git_commit(pl):
    assert pl.resolve_image("reg.example:5000/duelguard-trainer", REPO) == f"reg.example:5000/duelguard-trainer:{pl.git_tag(REPO)}"
    assert pl.resolve_image("duelguard-trainer:v1", REPO) == "duelguard-trainer:v1"


# --- the glue's guards -------------------------------------------------------------------------------


def test_glue_rejects_iteration_mismatch_and_private_tracking(pl, monkeypatch, tmp_path):
    from duelguard import kfp_glue

    text = pl.read_params_json(PARAMS)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(ConfigError, match="compiled with 5 iterations"):
        kfp_glue.run_component("prepare_seed", text, "tiny", 0, expected_iterations=5, workdir=tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        kfp_glue.require_shared_tracking(kfp_glue.params_from_text(text, "tiny"))
    with pytest.raises(ConfigError, match="params_json"):
        kfp_glue.params_from_text("[1, 2]", "tiny")


def test_glue_publish_and_materialise(tmp_path):
    from duelguard import kfp_glue
    from duelguard.layout import Layout

    params = load_params(PARAMS, "tiny")
    layout = Layout.from_params(params, tmp_path / "work")
    layout.curated(1).parent.mkdir(parents=True)
    layout.curated(1).write_text('{"id": "a"}\n')
    layout.seed_dir.mkdir(parents=True)
    (layout.seed_dir / "train.jsonl").write_text('{"id": "s"}\n')
    art = SimpleNamespace(path=str(tmp_path / "artifact"), metadata={})
    copied = kfp_glue.publish("curate", "data", kfp_glue.PUBLISHED["curate"]["data"], params, layout, 1, art)
    assert copied == ["data/seed", "data/synthetic/iter_1/curated.jsonl"]
    # Root-relative: merging the artifact into a fresh root reproduces the Layout paths.
    fresh = Layout.from_params(params, tmp_path / "fresh")
    kfp_glue.merge_tree(Path(art.path), fresh.root)
    assert fresh.curated(1).read_text() == '{"id": "a"}\n'
    assert (fresh.seed_dir / "train.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="did not write"):
        kfp_glue.publish("curate", "data", kfp_glue.PUBLISHED["curate"]["data"], params, layout, 2, art)
    with pytest.raises(FileNotFoundError, match="input artifact"):
        kfp_glue.merge_tree(tmp_path / "missing", fresh.root)


def test_scalar_metrics_and_report():
    from duelguard import kfp_glue

    summary = {"f1": {"en": 0.7, "fr": 0.5}, "n": 3, "ok": True, "name": "x", "bad": float("nan")}
    assert kfp_glue.scalar_leaves(summary) == {"f1.en": 0.7, "f1.fr": 0.5, "n": 3.0}
    report = kfp_glue.render_report("evaluate", 1, summary)
    assert "| f1.fr | 0.5 |" in report and report.startswith("# duelguard evaluate, iteration 1")


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
