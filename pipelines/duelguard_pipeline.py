"""The Kubeflow (KFP v2) pipeline `duelguard-loop`: the two-player loop on GPU nodes.

Components are thin typed wrappers: each calls duelguard.kfp_glue.run_component, which runs the
same stage function (duelguard.stages) that `dvc repro` and `duelguard loop` run. Typed artifacts
flow between them (Dataset: seed and synthetic data; Model: classifier, generator adapter, Triton
repository; Metrics + Markdown: evaluation and promotion). Iterations are unrolled at compile time
from params.yaml's loop.iterations; every step runs in the trainer image (docker/trainer), which
already holds the library (no packages installed at run time).

Pipeline parameters and their defaults come from params.yaml, the single source of truth:
`params_json` (the whole file as JSON, validated by every step), `profile` and `raw_data_uri`
(kubeflow.raw_data_uri). Kubernetes placement (GPU, node selector, toleration, PVC, Secrets) comes
from params.yaml's `kubeflow` section at compile time.

Entry points: `duelguard pipeline compile | run-local | submit` (duelguard/commands/pipeline.py).
Note: no `from __future__ import annotations` here — KFP reads the components' real annotations.
"""

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

PIPELINE_NAME = "duelguard-loop"
GPU_STAGES = ("train_classifier", "generate", "train_generator", "evaluate")
# Steps that load model weights share the model-cache PVC (GPU steps + scoring with the classifier).
MODEL_CACHE_STAGES = GPU_STAGES + ("score",)
# Steps whose result depends on mutable registry state (the current champion): never served from cache.
UNCACHED_STAGES = ("promote", "export")
# Secret keys are the environment variables MLflow / boto3 read, so the mapping is the identity.
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_URI",)
OBJECT_STORE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")


class PipelineError(RuntimeError):
    """The pipeline cannot be compiled, run or submitted as asked; the message says why and what to do."""


# --- components: one per stage, no logic (duelguard.kfp_glue does the work) ------------------------


def prepare_seed(params_json: str, profile: str, iterations: int, raw_data: Input[Dataset], data: Output[Dataset]) -> dict:
    """Seed records from the raw corpora (the cumulative `data` Dataset starts here)."""
    from duelguard.kfp_glue import run_component

    return run_component("prepare_seed", params_json, profile, 0, raw_data=raw_data, outputs={"data": data}, expected_iterations=iterations)


def train_classifier(
    params_json: str, profile: str, iteration: int, data: Input[Dataset], model: Output[Model], previous: Optional[Input[Model]] = None
) -> dict:
    """Classifier i on seed + synthetic data <= i (`previous` feeds classifier.init_from=previous)."""
    from duelguard.kfp_glue import run_component

    return run_component("train_classifier", params_json, profile, iteration, inputs=[data, previous], outputs={"model": model})


def evaluate(
    params_json: str, profile: str, iteration: int, data: Input[Dataset], model: Input[Model], metrics: Output[Metrics], report: Output[Markdown]
) -> dict:
    """Per-language / per-category evaluation of classifier i; headline numbers as KFP metrics."""
    from duelguard.kfp_glue import run_component

    return run_component("evaluate", params_json, profile, iteration, inputs=[data, model], outputs={"metrics": metrics}, report=report)


def register(
    params_json: str, profile: str, iteration: int, data: Input[Dataset], model: Input[Model], metrics: Input[Metrics], record: Output[Artifact]
) -> dict:
    """Log classifier i as an MLflow model into its evaluate run and register a version (`record`: name, version, run)."""
    from duelguard.kfp_glue import run_component

    return run_component("register", params_json, profile, iteration, inputs=[data, model, metrics], outputs={"record": record})


def promote(
    params_json: str,
    profile: str,
    iteration: int,
    data: Input[Dataset],
    model: Input[Model],
    metrics: Input[Metrics],
    record: Input[Artifact],
    decision: Output[Artifact],
    report: Output[Markdown],
) -> dict:
    """Promote version i to `champion` if it passes the promotion rules; the decision as JSON and a report."""
    from duelguard.kfp_glue import run_component

    return run_component("promote", params_json, profile, iteration, inputs=[data, model, metrics, record],
                         outputs={"decision": decision}, report=report)


def generate(
    params_json: str, profile: str, iteration: int, data: Input[Dataset], generated: Output[Dataset], generator: Optional[Input[Model]] = None
) -> dict:
    """Generator samples for iteration i (with iteration i-1's DPO adapter when there is one)."""
    from duelguard.kfp_glue import run_component

    return run_component("generate", params_json, profile, iteration, inputs=[data, generator], outputs={"generated": generated})


def curate(params_json: str, profile: str, iteration: int, data: Input[Dataset], generated: Input[Dataset], curated: Output[Dataset]) -> dict:
    """Filter iteration i's samples; `curated` is the cumulative data set: seed + curated <= i."""
    from duelguard.kfp_glue import run_component

    return run_component("curate", params_json, profile, iteration, inputs=[data, generated], outputs={"data": curated})


def score(params_json: str, profile: str, iteration: int, data: Input[Dataset], classifier: Input[Model], scored: Output[Dataset]) -> dict:
    """Classifier i-1's loss on iteration i's curated samples."""
    from duelguard.kfp_glue import run_component

    return run_component("score", params_json, profile, iteration, inputs=[data, classifier], outputs={"scored": scored})


def build_pairs(params_json: str, profile: str, iteration: int, data: Input[Dataset], scored: Input[Dataset], pairs: Output[Dataset]) -> dict:
    """DPO preference pairs from the scored samples."""
    from duelguard.kfp_glue import run_component

    return run_component("build_pairs", params_json, profile, iteration, inputs=[data, scored], outputs={"pairs": pairs})


def train_generator(
    params_json: str,
    profile: str,
    iteration: int,
    data: Input[Dataset],
    pairs: Input[Dataset],
    generator: Output[Model],
    previous: Optional[Input[Model]] = None,
) -> dict:
    """DPO of the generator's LoRA adapter on iteration i's pairs."""
    from duelguard.kfp_glue import run_component

    return run_component("train_generator", params_json, profile, iteration, inputs=[data, pairs, previous], outputs={"generator": generator})


def export(params_json: str, profile: str, iteration: int, data: Input[Dataset], model: Input[Model], repository: Output[Model]) -> dict:
    """The champion's Triton model repository (what docker/serving and infra/ serve); `model` is the
    last classifier, exported only if the registry has no champion."""
    from duelguard.kfp_glue import run_component

    return run_component("export", params_json, profile, iteration, inputs=[data, model], outputs={"repository": repository})


COMPONENT_FUNCTIONS: dict[str, Callable[..., dict]] = {
    fn.__name__: fn
    for fn in (prepare_seed, train_classifier, evaluate, register, promote, generate, curate, score, build_pairs, train_generator, export)
}


# --- the pipeline ---------------------------------------------------------------------------------


def git_tag(root: str | Path = ".") -> str:
    """The image tag for this checkout: the first 12 hex digits of HEAD (what `make images` uses)."""
    from duelguard.tracking import git_commit

    commit = git_commit(root)
    return "latest" if commit == "unknown" else commit[:12]


def resolve_image(image: str, root: str | Path = ".") -> str:
    """A tag-less image name gets the git commit as its tag."""
    last = image.rsplit("/", 1)[-1]
    return image if (":" in last or "@" in last) else f"{image}:{git_tag(root)}"


def with_iterations(params_json: str, iterations: int) -> str:
    """The params JSON with loop.iterations (and the matching loop.chain that dvc.yaml reads) set."""
    from duelguard.config import Loop

    raw = json.loads(params_json)
    raw["loop"] = {**raw.get("loop", {}), "iterations": iterations, "chain": Loop.expected_chain(iterations)}
    return json.dumps(raw)


def build_pipeline(params_json: str, profile: str, image: str) -> Callable[..., Any]:
    """The `duelguard-loop` pipeline for this params.yaml text: defaults, unrolled iterations, placement."""
    from duelguard.kfp_glue import params_from_text

    params = params_from_text(params_json, profile)
    kf = params.kubeflow
    iterations = params.loop.iterations
    ops = {name: dsl.component(fn, base_image=image, install_kfp_package=False) for name, fn in COMPONENT_FUNCTIONS.items()}

    def step(stage: str, at: int, **kwargs: Any) -> dsl.PipelineTask:
        """One stage at iteration `at`, placed on the cluster as params.kubeflow says."""
        if stage == "prepare_seed":
            task = ops[stage](**kwargs)
            task.set_display_name("prepare-seed")
        else:
            task = ops[stage](iteration=at, **kwargs)
            task.set_display_name(f"{stage.replace('_', '-')}-iter-{at}")
        task.set_caching_options(stage not in UNCACHED_STAGES)
        kubernetes.use_secret_as_env(task, kf.mlflow_secret, {k: k for k in MLFLOW_SECRET_KEYS})
        kubernetes.use_secret_as_env(task, kf.object_store_secret, {k: k for k in OBJECT_STORE_SECRET_KEYS})
        if stage in MODEL_CACHE_STAGES:
            kubernetes.mount_pvc(task, pvc_name=kf.model_cache_pvc, mount_path=kf.model_cache_mount)
        if stage in GPU_STAGES:
            task.set_accelerator_type(kf.gpu_resource).set_accelerator_limit(kf.gpu_count)
            for key, value in kf.gpu_node_selector.items():
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
            kubernetes.add_toleration(task, key=kf.gpu_toleration_key, operator="Exists", effect="NoSchedule")
        return task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="duelguard two-player loop: seed -> classifier; per iteration generate, curate, score, pairs, "
        "DPO, retrain, evaluate, register, promote; export the champion for Triton.",
    )
    def duelguard_loop(params_json: str = params_json, profile: str = params.profile, raw_data_uri: str = kf.raw_data_uri) -> None:
        common = {"params_json": params_json, "profile": profile}
        raw = dsl.importer(artifact_uri=raw_data_uri, artifact_class=Dataset, reimport=False)
        raw.set_display_name("raw-data")
        data = step("prepare_seed", 0, **common, iterations=iterations, raw_data=raw.output).outputs["data"]
        classifier = step("train_classifier", 0, **common, data=data).outputs["model"]
        generator = None
        for i in range(iterations + 1):
            if i > 0:
                gen_args = {"generator": generator} if generator is not None else {}
                generated = step("generate", i, **common, data=data, **gen_args).outputs["generated"]
                data = step("curate", i, **common, data=data, generated=generated).outputs["curated"]
                scored = step("score", i, **common, data=data, classifier=classifier).outputs["scored"]
                pairs = step("build_pairs", i, **common, data=data, scored=scored).outputs["pairs"]
                prev_args = {"previous": generator} if generator is not None else {}
                generator = step("train_generator", i, **common, data=data, pairs=pairs, **prev_args).outputs["generator"]
                classifier = step("train_classifier", i, **common, data=data, previous=classifier).outputs["model"]
            metrics = step("evaluate", i, **common, data=data, model=classifier).outputs["metrics"]
            record = step("register", i, **common, data=data, model=classifier, metrics=metrics).outputs["record"]
            promoted = step("promote", i, **common, data=data, model=classifier, metrics=metrics, record=record)
            if i > 0:
                # Promotions are ordered: iteration i compares with the champion iteration i-1 left.
                promoted.after(previous_promoted)
            previous_promoted = promoted
        step("export", iterations, **common, data=data, model=classifier).after(promoted)

    return duelguard_loop


def read_params_json(params_path: str | Path) -> str:
    """params.yaml as one line of JSON: the `params_json` pipeline parameter's default. (One line,
    because KFP copies parameter defaults into a comment header that a multi-line string breaks.)"""
    path = Path(params_path)
    if not path.exists():
        raise PipelineError(f"{path}: params file not found (run from the repository root or pass --params)")
    return json.dumps(yaml.safe_load(path.read_text(encoding="utf-8")))


def compile_pipeline(
    params_path: str | Path, out: str | Path, profile: str | None = None, image: str | None = None, root: str | Path = "."
) -> dict[str, Any]:
    """Compile `duelguard-loop` to a KFP IR YAML; returns what was compiled and how long it took."""
    from kfp import compiler

    from duelguard.kfp_glue import params_from_text

    started = time.perf_counter()
    text = read_params_json(params_path)
    params = params_from_text(text, profile or "")
    image = resolve_image(image or params.kubeflow.image, root)
    pipeline = build_pipeline(text, params.profile, image)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.yaml")  # KFP insists on a .yaml suffix; renamed atomically below
    compiler.Compiler().compile(pipeline, package_path=str(tmp))
    os.replace(tmp, out)
    return {"package": str(out), "profile": params.profile, "iterations": params.loop.iterations, "image": image,
            "seconds": round(time.perf_counter() - started, 2)}


def run_local(
    params_path: str | Path,
    workdir: str | Path,
    profile: str = "tiny",
    iterations: int = 1,
    root: str | Path = ".",
    raw_data: str | Path | None = None,
) -> dict[str, Any]:
    """Run the pipeline on this machine with kfp.local's SubprocessRunner (every step a subprocess of
    this Python). MLflow goes to $MLFLOW_TRACKING_URI if set, else to a sqlite store in `workdir`."""
    from kfp import local

    from duelguard.kfp_glue import params_from_text
    from duelguard.layout import Layout
    from duelguard.tracking import configure

    started = time.perf_counter()
    text = with_iterations(read_params_json(params_path), iterations)
    params = params_from_text(text, profile)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    raw = Path(raw_data) if raw_data else Layout.from_params(params, root).raw_data
    if not raw.is_dir():
        raise PipelineError(f"{raw}: raw data directory not found (paths.raw_data in params.yaml, or --raw-data)")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    # Create the experiment here so its artifact store lives in `workdir`, not in a step's temp dir.
    tracking_uri = configure(params, workdir)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "artifacts"), raise_on_error=True)
    pipeline = build_pipeline(text, profile, "duelguard-trainer:local")
    pipeline(raw_data_uri=str(raw.resolve()))
    return {"pipeline_root": str(workdir / "artifacts"), "tracking_uri": tracking_uri, "profile": profile,
            "iterations": iterations, "seconds": round(time.perf_counter() - started, 1)}


def check_kfp_host(host: str | None, timeout_s: float = 10.0) -> str:
    """KFP_HOST, checked to answer: a clear error now beats a stack trace from deep inside kfp.Client."""
    import urllib.error
    import urllib.request

    if not host:
        raise PipelineError("KFP_HOST is not set: export KFP_HOST=http://<kfp-api-or-ui-host> (e.g. after "
                            "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`: KFP_HOST=http://127.0.0.1:8080)")
    if not re.match(r"^https?://", host):
        raise PipelineError(f"KFP_HOST={host!r}: expected an http:// or https:// URL")
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code not in (401, 403):  # auth proxies answer 401/403 to anonymous probes: the host is up
            raise PipelineError(f"KFP_HOST={host}: {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PipelineError(f"KFP_HOST={host} is unreachable ({getattr(exc, 'reason', exc)})") from None
    return host


def submit(
    package: str | Path,
    host: str | None,
    experiment: str,
    run_name: str | None = None,
    arguments: dict[str, Any] | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """Submit a compiled package to a real Kubeflow Pipelines endpoint."""
    import kfp

    package = Path(package)
    if not package.exists():
        raise PipelineError(f"{package}: compiled pipeline not found (run `duelguard pipeline compile` first)")
    host = check_kfp_host(host)
    client = kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)
    run_name = run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments or {}, run_name=run_name, experiment_name=experiment, enable_caching=True,
        service_account=service_account,
    )
    return {"run_id": result.run_id, "run_name": run_name, "experiment": experiment, "host": host,
            "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}
