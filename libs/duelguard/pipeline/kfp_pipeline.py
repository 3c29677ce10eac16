"""The Kubeflow (KFP v2) pipeline `duelguard-loop`, built from the stage spec; compile, local run, submit.

One component per stage run (prepare_seed, train_classifier_0, generate_1, ..., report, export),
iterations unrolled at compile time from loop.iterations. A component is a generated lightweight
Python function whose inputs are the output artifacts of the runs it depends on (from the spec's
data dependencies, duelguard.pipeline.spec.producers) and whose body is one call to
duelguard.pipeline.kfp_glue.run_component: the same stage function `dvc repro` runs. Outputs: one
artifact holding everything the spec declares for the run (a root-relative tree), its numeric summary
as Metrics and a Markdown report. Every step runs in the trainer image (docker/trainer), which holds
the library: nothing is installed at run time.

Pipeline parameters and their defaults come from params.yaml: `params_json` (the whole file as JSON,
validated by every step), `profile` and `raw_data_uri` (kubeflow.raw_data_uri). Placement comes from
the spec (gpu, model_cache) and params.yaml's `kubeflow` section. Side-effecting stages (register,
promote, export) run with caching off: KFP's cache key sees neither the tracking server nor the
registry's state.

Why generated functions: KFP reads a component's interface from its Python signature and ships the
function's source to the step, and kfp.local's SubprocessRunner only runs such lightweight Python
components. Each run's signature depends on its upstream runs, so the source is generated and
registered with `linecache` (where `inspect.getsource` finds it). No `from __future__ import
annotations` in this module: KFP reads the real annotations of the pipeline function below.
"""

import contextlib
import json
import linecache
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from duelguard.errors import PipelineError
from duelguard.layout import Layout
from duelguard.pipeline.kfp_glue import params_from_text
from duelguard.pipeline.spec import STAGES, Stage, StageRun, producers, runs

PIPELINE_NAME = "duelguard-loop"
# Secret keys are the environment variables MLflow / boto3 read, so the mapping is the identity.
# The cluster's MLflow runs its basic-auth app: every step needs the credentials beside the URI.
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
OBJECT_STORE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
# Output names of every component (input names are "in_" + the upstream run's name).
OUTPUT, METRICS, REPORT, RAW_DATA = "out", "out_metrics", "out_report", "raw_data"


def component_source(run: StageRun, upstream: Sequence[StageRun], raw_data: bool) -> str:
    """The Python source of the component for `run` (a plain function; KFP reads its signature)."""
    inputs = [f"in_{up.name}" for up in upstream]
    args = ["params_json: str", "profile: str"]
    args += [f"{RAW_DATA}: Input[Dataset]"] if raw_data else []
    args += [f"{name}: Input[Artifact]" for name in inputs]
    args += [f"{OUTPUT}: Output[Artifact]", f"{METRICS}: Output[Metrics]", f"{REPORT}: Output[Markdown]"]
    call = (f"run_component({run.stage.name!r}, params_json, profile, {run.iteration}, {run.iterations}, "
            f"inputs=[{', '.join(inputs)}], output={OUTPUT}, metrics={METRICS}, report={REPORT}"
            + (f", raw_data={RAW_DATA})" if raw_data else ")"))
    return (f"def {run.name}({', '.join(args)}) -> dict:\n"
            f"    {json.dumps(run.stage.doc)}\n"
            f"    from duelguard.pipeline.kfp_glue import run_component\n\n"
            f"    return {call}\n")


def _function(source: str, name: str) -> Callable[..., dict]:
    """Define the function in `source`, with its source findable by inspect.getsource (via linecache)."""
    from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

    filename = f"<duelguard component {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": __name__, "Input": Input, "Output": Output, "Artifact": Artifact,
                                 "Dataset": Dataset, "Metrics": Metrics, "Markdown": Markdown}
    # dont_inherit: whatever __future__ flags this module has, the component keeps real annotations for KFP.
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 - generated from the spec
    return namespace[name]


def build_pipeline(params_json: str, profile: str, image: str, stages: Sequence[Stage] = STAGES) -> Callable[..., Any]:
    """The `duelguard-loop` pipeline for this params.yaml text: defaults, unrolled iterations, placement."""
    from kfp import dsl, kubernetes
    from kfp.dsl import Dataset

    params = params_from_text(params_json, profile)
    kf = params.kubeflow
    layout = Layout.from_params(params, "/duelguard")  # paths as identities: which run writes what
    run_list = runs(params.loop.iterations, "kfp", stages)
    upstream = producers(run_list, layout)
    components = {}
    for run in run_list:
        source = component_source(run, upstream[run.name], layout.raw_data in run.deps(layout))
        components[run.name] = dsl.component(_function(source, run.name), base_image=image, install_kfp_package=False)

    def place(task: Any, stage: Stage) -> None:
        """Caching, Secrets, the weights cache and the GPU, as the spec and params.kubeflow say."""
        task.set_caching_options(not stage.side_effects)
        kubernetes.use_secret_as_env(task, kf.mlflow_secret, {k: k for k in MLFLOW_SECRET_KEYS})
        kubernetes.use_secret_as_env(task, kf.object_store_secret, {k: k for k in OBJECT_STORE_SECRET_KEYS})
        if stage.model_cache or stage.gpu:
            kubernetes.mount_pvc(task, pvc_name=kf.model_cache_pvc, mount_path=kf.model_cache_mount)
        if stage.gpu:
            task.set_accelerator_type(kf.gpu_resource).set_accelerator_limit(kf.gpu_count)
            for key, value in kf.gpu_node_selector.items():
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
            kubernetes.add_toleration(task, key=kf.gpu_toleration_key, operator="Exists", effect="NoSchedule")

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="duelguard two-player loop: seed -> classifier; per iteration generate, curate, score, pairs, "
        "DPO, retrain, evaluate, register, promote; reports; export the champion for Triton.",
    )
    def duelguard_loop(params_json: str = params_json, profile: str = params.profile, raw_data_uri: str = kf.raw_data_uri) -> None:
        raw = dsl.importer(artifact_uri=raw_data_uri, artifact_class=Dataset, reimport=False)
        raw.set_display_name("raw-data")
        tasks: dict[str, Any] = {}
        for run in run_list:
            kwargs: dict[str, Any] = {"params_json": params_json, "profile": profile}
            if layout.raw_data in run.deps(layout):
                kwargs[RAW_DATA] = raw.output
            for up in upstream[run.name]:
                kwargs[f"in_{up.name}"] = tasks[up.name].outputs[OUTPUT]
            task = components[run.name](**kwargs)
            task.set_display_name(run.name.replace("_", "-"))
            place(task, run.stage)
            tasks[run.name] = task

    return duelguard_loop


# --- images, params, compile ------------------------------------------------------------------------


def git_tag(root: str | Path = ".") -> str:
    """The image tag for this checkout: the first 12 hex digits of HEAD (what `make images` uses)."""
    from duelguard.tracking import git_commit

    commit = git_commit(root)
    return "latest" if commit == "unknown" else commit[:12]


def resolve_image(image: str, root: str | Path = ".") -> str:
    """A tag-less image name gets the git commit as its tag."""
    last = image.rsplit("/", 1)[-1]
    return image if (":" in last or "@" in last) else f"{image}:{git_tag(root)}"


def read_params_json(params_path: str | Path) -> str:
    """params.yaml as one line of JSON: the `params_json` pipeline parameter's default. (One line,
    because KFP copies parameter defaults into a comment header that a multi-line string breaks.)"""
    import yaml

    path = Path(params_path)
    if not path.exists():
        raise PipelineError(f"{path}: params file not found (run from the repository root or pass --params)")
    return json.dumps(yaml.safe_load(path.read_text(encoding="utf-8")))


def with_iterations(params_json: str, iterations: int) -> str:
    """The params JSON with loop.iterations set."""
    raw = json.loads(params_json)
    raw["loop"] = {**raw.get("loop", {}), "iterations": iterations}
    return json.dumps(raw)


def compile_pipeline(
    params_path: str | Path, out: str | Path, profile: str | None = None, image: str | None = None,
    root: str | Path = ".", stages: Sequence[Stage] = STAGES,
) -> dict[str, Any]:
    """Compile `duelguard-loop` to a KFP IR YAML (written atomically); returns what was compiled."""
    from kfp import compiler

    started = time.perf_counter()
    text = read_params_json(params_path)
    params = params_from_text(text, profile or "")
    image = resolve_image(image or params.kubeflow.image, root)
    pipeline = build_pipeline(text, params.profile, image, stages)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.yaml")  # KFP insists on a .yaml suffix; renamed atomically below
    compiler.Compiler().compile(pipeline, package_path=str(tmp))
    os.replace(tmp, out)
    return {"package": str(out), "profile": params.profile, "iterations": params.loop.iterations, "image": image,
            "seconds": round(time.perf_counter() - started, 2)}


@contextlib.contextmanager
def _temp_dir_of_steps(path: str) -> Iterator[None]:
    """Point the steps' temporary directory ($TMPDIR, inherited by kfp.local's subprocesses) at `path`
    while the run lasts, then restore it.

    Not everything a step runs cleans up after itself: KFP's own component command writes the
    function's source to a `mktemp -d` directory it never removes, and torch creates its
    torchinductor_<user> cache there. Gathered in one directory that run_local removes, a local run
    leaves nothing in the system temporary directory (in a cluster each step's pod is thrown away).
    """
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before


def run_local(
    params_path: str | Path,
    workdir: str | Path,
    profile: str = "tiny",
    iterations: int = 1,
    root: str | Path = ".",
    raw_data: str | Path | None = None,
) -> dict[str, Any]:
    """Run the pipeline on this machine with kfp.local's SubprocessRunner (every step a subprocess of
    this Python). MLflow goes to $MLFLOW_TRACKING_URI if set, else to a sqlite store in `workdir`.
    Outputs stay in `workdir`; the steps' temporary files (and kfp.local's workspace) go to one
    temporary directory removed when the run ends, failed or not."""
    from kfp import local

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
    pipeline = build_pipeline(text, profile, "duelguard-trainer:local")
    with tempfile.TemporaryDirectory(prefix="duelguard-kfp-local-") as scratch, _temp_dir_of_steps(scratch):
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "artifacts"),
                   workspace_root=scratch, raise_on_error=True)
        pipeline(raw_data_uri=str(raw.resolve()))
    return {"pipeline_root": str(workdir / "artifacts"), "tracking_uri": tracking_uri, "profile": profile,
            "iterations": iterations, "seconds": round(time.perf_counter() - started, 1)}


# --- submit -------------------------------------------------------------------------------------------


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
    # enable_caching stays unset: any value there overrides every task's compiled caching option, which
    # would let KFP serve the side-effecting steps (register, promote, export) from its cache.
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments or {}, run_name=run_name, experiment_name=experiment,
        service_account=service_account,
    )
    return {"run_id": result.run_id, "run_name": run_name, "experiment": experiment, "host": host,
            "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}
