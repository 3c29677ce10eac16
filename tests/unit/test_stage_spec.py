"""The stage spec is the one declaration of every stage: dvc.yaml is generated from it (the committed
file must match), the Kubeflow pipeline is built from it, and a stage's code dependencies are the
modules its function imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from duelguard.config import Params, load_params
from duelguard.layout import Layout
from duelguard.pipeline import codedeps, dvc
from duelguard.pipeline import kfp_pipeline as pl
from duelguard.pipeline.spec import STAGES, SpecError, Stage, producers, runs, stage_function

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"

# A stage that is not in the spec: it audits what curation dropped.
AUDIT = Stage(
    name="audit_rejections",
    function="duelguard.loop.curation:curate",
    doc="Count what curation dropped, per filter.",
    when="loop",
    params=("curation",),
    deps=lambda L, i, n: [L.rejected(i)],
    metrics=lambda L, i, n: [L.metrics / "audit" / f"iter_{i}.json"],
)


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(PARAMS, "default")


def _stages(text: str) -> dict:
    return yaml.safe_load(text)["stages"]


def test_committed_dvc_yaml_is_generated_from_the_spec(params):
    assert dvc.check(params, REPO) == [], "dvc.yaml is out of date: run `duelguard dvc-yaml --write`"


def test_the_spec_is_consistent_for_any_number_of_iterations(params):
    layout = Layout.from_params(params, "/repo")
    for n in range(4):
        for platform in ("dvc", "kfp", None):
            producers(runs(n, platform), layout)  # raises on a dependency nobody writes or a shared output
    dumped = params.model_dump()
    for s in STAGES:
        assert callable(stage_function(s.name)), s.name
        for key in s.params:
            value = dumped
            for part in key.split("."):
                assert isinstance(value, dict) and part in value, f"stage {s.name}: params key {key} does not exist"
                value = value[part]


def test_only_iterations_with_a_next_one_train_the_generator(params):
    """The adapter of iteration i is read by generate_{i+1} alone: the last iteration trains none, and a
    longer loop trains it then (its pairs are built and reported either way)."""
    for n in range(4):
        names = {r.name for r in runs(n, "dvc")}
        assert {x for x in names if x.startswith("train_generator")} == {f"train_generator_{i}" for i in range(1, n)}
        assert {x for x in names if x.startswith("build_pairs")} == {f"build_pairs_{i}" for i in range(1, n + 1)}


def test_ordering_comes_from_data_only(params):
    upstream = {name: {u.name for u in ups}
                for name, ups in producers(runs(2, "dvc"), Layout.from_params(params, "/repo")).items()}
    assert upstream["generate_1"] == {"prepare_seed"}  # the base generator: no adapter, no classifier
    # Later generations: the previous adapter, plus what the stop rule reads (every earlier classifier's
    # suite metrics, whether the previous generation had stopped) and what seed steering reads (the
    # previous iteration's scored samples).
    assert upstream["generate_2"] == {"prepare_seed", "train_generator_1", "generate_1", "evaluate_0", "evaluate_1",
                                      "score_1"}
    assert upstream["curate_1"] == {"generate_1", "prepare_seed", "train_classifier_0"}  # the frozen seed-only probe
    assert upstream["score_1"] == {"curate_1", "train_classifier_0"}
    assert upstream["promote_1"] == {"register_1", "evaluate_1", "prepare_seed", "promote_0"}
    # the previous classifier (init_from, carry-over) and the seed-only one (classifier.anchor_members)
    assert upstream["train_classifier_2"] == {"prepare_seed", "curate_1", "curate_2", "generate_2",
                                              "train_classifier_1", "train_classifier_0"}


def test_spec_errors_name_the_stage_and_the_path(params):
    layout = Layout.from_params(params, "/repo")
    orphan = Stage(name="orphan", function="duelguard.loop.curation:curate", doc="", when="every", params=(),
                   deps=lambda L, i, n: [L.data / "nowhere.jsonl"])
    with pytest.raises(SpecError, match=r"orphan_0 reads /repo/data/nowhere\.jsonl, which no earlier stage run writes"):
        producers(runs(1, stages=[*STAGES, orphan]), layout)
    clash = Stage(name="clash", function="duelguard.loop.curation:curate", doc="", when="loop", params=(),
                  deps=lambda L, i, n: [L.generated(i)], outs=lambda L, i, n: [L.curated(i)])
    with pytest.raises(SpecError, match="clash_1 writes .*curated.jsonl, which overlaps an output of curate_1"):
        producers(runs(1, stages=[*STAGES, clash]), layout)


def test_a_new_stage_shows_in_the_dvc_file_check_and_the_kfp_compile(params, tmp_path):
    stages = [*STAGES, AUDIT]
    text = dvc.render(params, REPO, stages)
    entry = _stages(text)["audit_rejections_2"]
    assert entry["cmd"] == "duelguard stage audit_rejections -i 2"
    assert entry["deps"][0] == "data/synthetic/iter_2/rejected.jsonl" and "libs/duelguard/loop/curation.py" in entry["deps"]
    assert entry["params"] == ["profile", "profiles", "curation"]
    assert {"metrics/audit/iter_2.json": {"cache": False}} in entry["metrics"]
    # The committed dvc.yaml no longer matches: the check names the new stage runs.
    assert dvc.differences((REPO / "dvc.yaml").read_text(), text) == [
        "stage audit_rejections_1: missing", "stage audit_rejections_2: missing"]
    # DVC itself reads the generated file and orders the new stage after the curation it reads.
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc_cmd = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc_cmd, "init", "--no-scm", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text(text)
    (repo / "params.yaml").write_text(PARAMS.read_text())
    dag = subprocess.run([*dvc_cmd, "dag", "--md", "audit_rejections_2"], cwd=repo, capture_output=True, text=True)
    assert dag.returncode == 0, dag.stderr
    assert {"curate_2", "generate_2", "prepare_seed"} <= set(dag.stdout.replace('"', " ").split())
    # Iteration 2's own classifier is not upstream of it (earlier evaluations are: the stop rule reads them).
    assert "evaluate_2" not in dag.stdout and "train_classifier_2" not in dag.stdout

    out = tmp_path / "pipeline.yaml"
    pl.compile_pipeline(PARAMS, out, image="duelguard-trainer:test", root=REPO, stages=stages)
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = {t["taskInfo"]["name"]: t for t in spec["root"]["dag"]["tasks"].values()}
    keys = {t["taskInfo"]["name"]: k for k, t in spec["root"]["dag"]["tasks"].items()}
    audit = tasks["audit-rejections-2"]
    assert audit["inputs"]["artifacts"]["in_curate_2"]["taskOutputArtifact"]["producerTask"] == keys["curate-2"]
    assert audit["cachingOptions"].get("enableCache") is True


def test_code_deps_are_the_modules_a_stage_imports(params):
    entries = _stages((REPO / "dvc.yaml").read_text())
    train = set(entries["train_classifier_0"]["deps"])
    assert {"libs/duelguard/classifier/train.py", "libs/duelguard/classifier/model.py", "libs/duelguard/config.py"} <= train
    assert "libs/duelguard/evalset.py" in train  # imported inside a function of train.py
    assert not {p for p in train if "/registry/" in p or p.endswith(("dpo.py", "generator.py", "curation.py"))}
    generate = set(entries["generate_1"]["deps"])
    assert "libs/duelguard/loop/generator.py" in generate and not any("/classifier/" in p for p in generate)


def test_import_graph_reads_lazy_relative_and_typing_only_imports(tmp_path):
    pkg = tmp_path / "duelguard"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("import json\n")
    (pkg / "lazy.py").write_text("def f():\n    from duelguard.sub import leaf\n")
    (pkg / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from duelguard import lazy\n")
    (pkg / "top.py").write_text("from duelguard import lazy, typed\n")
    assert codedeps.closure("duelguard.top", pkg) == [
        "duelguard", "duelguard.lazy", "duelguard.sub", "duelguard.sub.leaf", "duelguard.top", "duelguard.typed"]
    assert codedeps.closure("duelguard.typed", pkg) == ["duelguard", "duelguard.typed"]


def test_the_library_has_no_import_cycles_between_its_packages():
    assert codedeps.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = codedeps.package_graph()
    assert {"duelguard.classifier", "duelguard.evaluation", "duelguard.registry"} <= set(graph)
    assert codedeps.cycles(graph) == []


def test_side_effecting_stages_stay_out_of_dvc_caches(params):
    entries = _stages((REPO / "dvc.yaml").read_text())
    side = {s.name for s in STAGES if s.side_effects}
    assert side == {"register", "promote", "export"}
    for name, entry in entries.items():
        flags = [next(iter(m.values())) for m in entry["metrics"]]
        if name.rsplit("_", 1)[0] in side:
            assert all(f == {"cache": False, "persist": True} for f in flags) and "outs" not in entry, name
        else:
            assert all(f == {"cache": False} for f in flags), name
    assert not any(name.startswith("export") for name in entries)  # a build product, exported on demand locally


def test_nothing_outside_docs_cites_a_design_file_missing_from_the_repository():
    hits = subprocess.run(["git", "grep", "-n", "DESIGN" + ".md", "--", ".", ":!docs"], cwd=REPO,
                          capture_output=True, text=True)
    assert hits.returncode == 1 and hits.stdout == "", hits.stdout


def test_git_tracks_exactly_the_outputs_dvc_does_not_cache():
    """A clone + `dvc pull` restores a run only if every `cache: false` output can be committed."""
    uncached, cached = set(), set()
    for entry in _stages((REPO / "dvc.yaml").read_text()).values():
        for item in [*entry.get("outs", []), *entry["metrics"]]:
            path, flags = (item, {}) if isinstance(item, str) else next(iter(item.items()))
            (uncached if flags.get("cache") is False else cached).add(path)
    assert uncached and cached
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, capture_output=True, text=True,
                             input="\n".join(sorted(uncached | cached))).stdout.split()
    assert not uncached & set(ignored), "git-ignored, so lost on clone"
    assert cached <= set(ignored), "cached by DVC and also committable to git"
