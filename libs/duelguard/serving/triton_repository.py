"""Build a complete Triton model repository from a saved classifier (never edited by hand).

    <out>/duelguard/config.pbtxt          generated from serving settings (batching, instances, limits)
                                          and version_policy specific [<version>]: the one version served
    <out>/duelguard/labels.txt            the 12 category names, in SCORES order (label_filename)
    <out>/duelguard/<version>/model.py    the Python-backend model (duelguard/serving/triton_model.py)
    <out>/duelguard/<version>/model.onnx  the network (verified against torch before it is written)
    <out>/duelguard/<version>/duelguard.json + tokenizer files; duelguard.json also records which
                                          model reference (concrete URI + tracking store) it came from

<version> is the MLflow registry version when the model URI names one, else 1, so a served
SCORES tensor can always be traced back to a registered model. A new version is added beside the
served one and the config switched to it; the old directory is only removed once the server has
loaded the new one (duelguard.serving.release), so a running server never loses its model.

`target="nvidia"` writes the same `duelguard` model plus a native-backend network model
`duelguard_network` (platform onnxruntime_onnx, TensorRT optional) that the Python model calls via
BLS: NVIDIA's Triton image runs the network natively while tokenisation/chunking stay the shared
Python code. The bundled pytriton server has no ONNX Runtime backend, hence the local default.
The serving image exports either target through this same function (duelguard.serving.container).

Write order (a kill can land between any two writes): every version directory is complete before a
config names it, and the network model (version directory, then config) is written before the
front model's config, which is the commit point: a front config that names version N always finds
network N in place. The other order leaves, after a kill in between, a server whose `duelguard`
model is READY and fails every request (its BLS call finds no network model). Old versions are
pruned only after both configs name the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from duelguard.classifier.onnx_export import ONNX_FILE
from duelguard.classifier.saved import METADATA_FILE, is_classifier_dir, write_metadata
from duelguard.config import Params, Serving
from duelguard.errors import ModelNotFoundError
from duelguard.fsio import atomic_write_text
from duelguard.serving.server import pid_alive

Target = Literal["local", "nvidia"]
TARGETS: tuple[Target, ...] = ("local", "nvidia")
NETWORK_MODEL = "duelguard_network"
_MODEL_SOURCE = Path(__file__).with_name("triton_model.py")
_STAGING_PREFIX = ".export-"  # + the exporting process's PID, so a killed export's leftovers can be told apart


@dataclass(frozen=True)
class ModelRef:
    """A model reference pinned down: what was asked, what it resolved to, and where."""

    source: str  # as given: a classifier directory or an MLflow URI (aliases allowed)
    concrete: str  # models:/NAME/N, runs:/..., or the directory's absolute path
    store: str  # the MLflow tracking store it was resolved in ("" for a directory)
    version: int  # repository version: the registry version for models:/NAME/N, else 1
    identity: str = ""  # content-addressed key of that version (artifact source, run id, digest): numbers get reused


def resolve_ref(model: str, params: Params | None = None, root: str | Path = ".") -> ModelRef:
    """Resolve `model` (aliases become versions) without downloading anything."""
    if not (model.startswith("models:/") or model.startswith("runs:/")):
        path = Path(model)
        if not is_classifier_dir(path):
            raise ModelNotFoundError(f"{path}: not a saved classifier directory (no {METADATA_FILE}), nor an MLflow URI")
        return ModelRef(model, str(path.resolve()), "", 1)
    from duelguard.registry.models import point_mlflow, resolve_model

    store = point_mlflow(params, root)
    resolved = resolve_model(model)
    concrete = resolved.concrete
    version = concrete.rsplit("/", 1)[-1]
    number = int(version) if concrete.startswith("models:/") and version.isdigit() else 1
    return ModelRef(model, concrete, store, number, resolved.key)


def served_ref(out: Path, model_name: str) -> ModelRef | None:
    """The reference the repository's config serves (from its version policy and that version's
    duelguard.json), or None when there is no complete model there."""
    config_path = Path(out) / model_name / "config.pbtxt"
    if not config_path.is_file():
        return None
    versions = list(parse_config(config_path).version_policy.specific.versions)
    if len(versions) != 1:
        return None
    version_dir = config_path.parent / str(versions[0])
    if not is_classifier_dir(version_dir):
        return None
    meta = json.loads((version_dir / METADATA_FILE).read_text(encoding="utf-8"))
    return ModelRef(meta.get("source", ""), meta.get("concrete", ""), meta.get("store", ""), int(versions[0]),
                    meta.get("identity", ""))


def holds(out: Path, model_name: str, ref: ModelRef) -> bool:
    """Whether the repository already serves exactly `ref`: same store, version and identity (a
    re-created registry reuses version numbers for other weights). A directory is always re-exported:
    its contents can change under the same path."""
    served = served_ref(out, model_name)
    return (bool(ref.store) and served is not None and served.version == ref.version
            and served.concrete == ref.concrete and served.store == ref.store and served.identity == ref.identity)


def parse_config(path: Path) -> Any:
    """A config.pbtxt parsed with Triton's own protobuf schema (tritonclient's model_config_pb2)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _pbtxt_parameters(values: dict[str, Any]) -> str:
    return "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: {json.dumps(str(v))} }} }}' for k, v in values.items()
    )


def model_config(serving: Serving, meta: dict[str, Any], target: Target, version: int) -> str:
    """config.pbtxt of the `duelguard` model serving `version`; thresholds travel in it so gRPC
    clients can read them (they belong to that version)."""
    parameters: dict[str, Any] = {
        "thresholds": json.dumps([float(t) for t in meta["thresholds"]]),
        "taxonomy": json.dumps(list(meta["taxonomy"])),
        "max_text_bytes": serving.max_text_bytes,
        "chunk_batch_size": serving.chunk_batch_size,
        "onnx_threads": serving.onnx_threads,
    }
    if target == "nvidia":
        parameters["network_model"] = NETWORK_MODEL
    preferred = ", ".join(str(b) for b in serving.preferred_batch_sizes if b <= serving.max_batch_size)
    return f"""# Generated by `duelguard export-triton` from the serving settings; do not edit by hand.
name: "{serving.model_name}"
backend: "python"
max_batch_size: {serving.max_batch_size}
version_policy: {{ specific: {{ versions: [ {version} ] }} }}
input [
  {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }}
]
output [
  {{ name: "SCORES" data_type: TYPE_FP32 dims: [ {len(meta["taxonomy"])} ] label_filename: "labels.txt" }},
  {{ name: "TRUNCATED" data_type: TYPE_BOOL dims: [ 1 ] }},
  {{ name: "TOO_LONG" data_type: TYPE_BOOL dims: [ 1 ] }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {serving.max_queue_delay_us}
}}
instance_group [ {{ count: {serving.instance_count} kind: KIND_CPU }} ]
{_pbtxt_parameters(parameters)}
"""


def network_config(serving: Serving, num_labels: int, version: int, embedding_dim: int | None = None) -> str:
    """config.pbtxt of the native ONNX Runtime model (NVIDIA image only); GPU with TensorRT EP.
    A token model's network takes input_ids + attention_mask; a sentence classifier's head takes
    `embedding` (embedding_dim floats; the encoder runs in the Python model)."""
    if embedding_dim is None:
        inputs = """  { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] }"""
    else:
        inputs = f"""  {{ name: "embedding" data_type: TYPE_FP32 dims: [ {embedding_dim} ] }}"""
    return f"""# Generated by `duelguard export-triton --target nvidia`; runs on NVIDIA's Triton image only.
name: "{NETWORK_MODEL}"
platform: "onnxruntime_onnx"
max_batch_size: {serving.chunk_batch_size}
version_policy: {{ specific: {{ versions: [ {version} ] }} }}
input [
{inputs}
]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {num_labels} ] }}
]
instance_group [ {{ count: 1 kind: KIND_GPU }} ]
optimization {{ execution_accelerators {{
  gpu_execution_accelerator : [ {{ name : "tensorrt" parameters {{ key: "precision_mode" value: "FP16" }} }} ]
}} }}
"""


def export_triton(
    model: str | Path,
    out: Path,
    serving: Serving,
    target: Target = "local",
    *,
    params: Params | None = None,
    root: str | Path = ".",
    keep_versions: tuple[int, ...] = (),
) -> Path:
    """Write `model` as a version of the repository under `out` and point the config at it; returns
    the `duelguard` model directory.

    `params` chooses the MLflow store for URIs (None: $MLFLOW_TRACKING_URI). Other version
    directories are removed unless listed in `keep_versions` (the one a running server still
    serves until it has loaded the new one). The version is built in a temporary sibling and
    renamed into place before the config names it, so a failed export (e.g. an ONNX parity
    failure) never leaves a half-written model that Triton would load; the network model is
    committed before the front model (module docstring).
    """
    from duelguard.classifier.loader import load_classifier
    from duelguard.registry.models import local_model_dir

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    ref = resolve_ref(str(model), params, root)
    source = Path(ref.concrete) if not ref.store else local_model_dir(ref.concrete, params, root)
    classifier = load_classifier(source)
    meta = classifier.metadata
    version = str(ref.version)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=out))
    try:
        version_dir = staging / serving.model_name / version
        version_dir.mkdir(parents=True)
        network = classifier.export_network(version_dir, serving.onnx_opset)
        onnx_path, diff, embedding_dim = network.onnx_path, network.max_abs_diff, network.embedding_dim
        print(f"ONNX export verified against torch: max abs logit difference {diff:.3g}")
        write_metadata(version_dir, {
            **meta, "source": ref.source, "concrete": ref.concrete, "store": ref.store, "identity": ref.identity,
            "onnx_max_abs_diff": diff,
        })
        shutil.copyfile(_MODEL_SOURCE, version_dir / "model.py")
        configs = {serving.model_name: model_config(serving, meta, target, ref.version)}
        if target == "nvidia":
            (staging / NETWORK_MODEL / version).mkdir(parents=True)
            onnx_path.rename(staging / NETWORK_MODEL / version / ONNX_FILE)
            configs[NETWORK_MODEL] = network_config(serving, len(meta["taxonomy"]), ref.version, embedding_dim)
        order = [name for name in (NETWORK_MODEL, serving.model_name) if name in configs]  # network first
        for name in order:
            _install_version(staging / name / version, out / name, staging)
            if name == serving.model_name:
                atomic_write_text(out / name / "labels.txt", "\n".join(meta["taxonomy"]) + "\n")
            atomic_write_text(out / name / "config.pbtxt", configs[name])
        for name in order:  # only now does every config name the new version
            prune_versions(out / name, {ref.version, *keep_versions})
        for stale in {NETWORK_MODEL} - set(configs):  # a previous nvidia export into this repository
            if (out / stale).exists():
                shutil.rmtree(out / stale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / serving.model_name


def _remove_dead_staging(out: Path) -> None:
    """Delete staging directories left by exports that were killed (their PID, in the name, is gone):
    a killed export never reaches its cleanup, and its half-built versions would pile up."""
    for stale in out.glob(f"{_STAGING_PREFIX}*"):
        pid = stale.name[len(_STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _install_version(built: Path, model_dir: Path, staging: Path) -> None:
    """Rename a built version directory into model_dir (an existing one of that number is moved
    into `staging` first, to be deleted with it)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / built.name
    if final.exists():
        final.rename(staging / f"replaced-{model_dir.name}-{built.name}")
    built.rename(final)


def prune_versions(model_dir: Path, keep: set[int]) -> list[int]:
    """Remove version directories of `model_dir` not in `keep`; returns the removed versions."""
    removed = []
    for child in sorted(Path(model_dir).iterdir()):
        if child.is_dir() and child.name.isdigit() and int(child.name) not in keep:
            shutil.rmtree(child)
            removed.append(int(child.name))
    return removed
