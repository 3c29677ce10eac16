"""A saved classifier directory <-> an MLflow model.

- log_classifier: logs the directory as an MLflow pyfunc model (the code in PYFUNC_SOURCE,
  duelguard.registry.pyfunc, stored with the model; its output columns in `signature`) in the
  active run; the directory is copied verbatim as the model's `classifier` artifact, so the
  registered model is the very same self-describing directory that `duelguard predict` loads.
  pip_requirements are explicit: inferring them would load the model and take 5-12 s per log.
  Logging never imports the wrapper (it imports mlflow's pyfunc machinery and the loader; it runs
  when MLflow loads the model), so the wrapper sits above this module and imports it.
- local_model_dir: what `duelguard predict`, `export-triton` and promotion use to turn
  "a directory or an MLflow model URI" into a local classifier directory. URIs are resolved to a
  concrete registry version first (an alias moves; a version does not) and downloaded once into a
  content-addressed cache: the key is the store + name + version AND that version's identity (its
  artifact source, run id and recorded model digest), because a version number is not an identity:
  a re-created registry (or a deleted and re-registered model) hands out v1 again for other weights.
- model_digest (duelguard.digest): sha256 over a classifier directory's files, the one
  definition of "these weights". `evaluate` records it, `register` refuses weights that changed since
  and tags the version with it (DIGEST_TAG), and every download (predict, promotion, export/serve)
  is checked against that tag: a mismatch is a ModelDigestError, never silently served.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from duelguard.classifier.saved import METADATA_FILE, is_classifier_dir
from duelguard.config import Params, expand
from duelguard.digest import check_digest
from duelguard.errors import ModelNotFoundError
from duelguard.taxonomy import CATEGORIES

CACHE_ENV = "DUELGUARD_MODEL_CACHE"
PYFUNC_SOURCE = Path(__file__).with_name("pyfunc.py")  # models from code: this file travels with the model
CLASSIFIER_ARTIFACT = "classifier"  # the model's artifact that holds the classifier directory
# The pyfunc's output columns beside the 12 category probabilities, in order.
OUTPUT_COLUMNS = ("unsafe_score", "unsafe", "truncated", "reason")
DIGEST_TAG = "duelguard.model_digest"
# What loading the pyfunc needs besides duelguard itself (installed from this repository).
RUNTIME_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pydantic", "pyyaml")


def pip_requirements() -> list[str]:
    """Exact pins of the runtime packages as installed here (no slow requirement inference)."""
    pins = []
    for name in RUNTIME_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def signature() -> Any:
    """Input: a `text` string column; output: 12 probabilities, unsafe_score, unsafe, truncated, reason."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    outputs = [ColSpec("double", c) for c in CATEGORIES]
    outputs += [ColSpec("double", "unsafe_score"), ColSpec("boolean", "unsafe"), ColSpec("boolean", "truncated"),
                ColSpec("string", "reason", required=False)]
    return ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema(outputs))


def log_classifier(model_dir: str | Path, name: str = "classifier") -> Any:
    """Log `model_dir` as a pyfunc model in the active MLflow run; returns mlflow's ModelInfo."""
    import mlflow.pyfunc

    model_dir = Path(model_dir)
    if not is_classifier_dir(model_dir):
        raise ModelNotFoundError(f"{model_dir}: not a saved classifier (no {METADATA_FILE})")
    try:
        duelguard_version = metadata.version("duelguard")
    except metadata.PackageNotFoundError:
        duelguard_version = "unknown"
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(PYFUNC_SOURCE),
        artifacts={CLASSIFIER_ARTIFACT: str(model_dir)},
        signature=signature(),
        pip_requirements=pip_requirements(),
        metadata={"duelguard_version": duelguard_version, "classifier_artifact": CLASSIFIER_ARTIFACT},
    )


def find_classifier_dir(root: Path) -> Path:
    """The directory under `root` (itself included) that holds duelguard.json."""
    if is_classifier_dir(root):
        return root
    hits = sorted(root.rglob(METADATA_FILE), key=lambda p: len(p.parts))
    if not hits:
        raise ModelNotFoundError(f"{root}: downloaded model holds no classifier directory ({METADATA_FILE})")
    return hits[0].parent


def _cache_root(params: Params | None) -> Path:
    if os.environ.get(CACHE_ENV):
        return expand(os.environ[CACHE_ENV])
    base = params.paths.weights_cache if params is not None else "~/.cache/duelguard"
    return expand(base) / "mlflow-models"


def point_mlflow(params: Params | None, root: str | Path) -> str:
    """Use params' tracking store (or $MLFLOW_TRACKING_URI, or ./params.yaml's) for this lookup."""
    import mlflow

    from duelguard.config import ConfigError, load_params
    from duelguard.tracking import tracking_uri

    if params is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        try:
            params = load_params()
        except ConfigError:
            return mlflow.get_tracking_uri()
    if params is None:
        uri = os.environ["MLFLOW_TRACKING_URI"]
    else:
        uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@dataclass(frozen=True)
class Resolved:
    """A model URI pinned down: the concrete URI, its content-addressed cache key, the recorded digest."""

    concrete: str
    key: str
    digest: str | None = None


def _version_key(name: str, mv: Any) -> str:
    """Cache key of a registry version: name/version plus a hash of what makes it these weights (artifact
    source, run id, recorded digest), so a new version that reuses an old number gets a new key."""
    tags = dict(getattr(mv, "tags", None) or {})
    identity = "\0".join((str(mv.source or ""), str(mv.run_id or ""), tags.get(DIGEST_TAG, "")))
    return f"models/{name}/{mv.version}/{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def resolve_uri(model: str) -> tuple[str, str]:
    """(concrete URI, cache key) for a models:/ or runs:/ URI; aliases and 'latest' become versions."""
    resolved = resolve_model(model)
    return resolved.concrete, resolved.key


def resolve_model(model: str) -> Resolved:
    """Resolve a models:/ or runs:/ URI; aliases and 'latest' become versions (see Resolved).

    A reference that does not exist is a ModelNotFoundError; a registry that cannot be asked is a
    RegistryError (duelguard.registry.lookup), never "not found".
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from duelguard.errors import RegistryError
    from duelguard.registry.lookup import is_missing

    client = MlflowClient()
    alias = None
    try:
        if model.startswith("runs:/"):
            run_id = model[len("runs:/"):].split("/", 1)[0]
            client.get_run(run_id)  # run ids are unique across stores' lifetimes (uuids): the URI is an identity
            return Resolved(model, "runs/" + hashlib.sha256(model.encode()).hexdigest()[:16])
        rest = model[len("models:/"):]
        if "/" in rest:
            name, ref = rest.split("/", 1)
            if ref.isdigit():
                mv = client.get_model_version(name, ref)
            elif ref.lower() == "latest":
                versions = client.search_model_versions(f"name='{name}'")
                if not versions:
                    raise ModelNotFoundError(f"{model}: registered model {name!r} has no versions")
                mv = client.get_model_version(name, str(max(int(v.version) for v in versions)))
            else:
                raise ModelNotFoundError(f"{model}: use models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest")
        elif "@" in rest:
            name, alias = rest.rsplit("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            client.get_logged_model(rest)  # logged model ids are unique: the id is an identity
            return Resolved(model, "logged/" + rest)
        return Resolved(f"models:/{name}/{mv.version}", _version_key(name, mv), dict(mv.tags or {}).get(DIGEST_TAG))
    except MlflowException as exc:
        if is_missing(exc, alias):
            raise ModelNotFoundError(f"{model}: not found in the MLflow store at {client.tracking_uri} ({exc.message})") from None
        raise RegistryError(f"{model}: the MLflow store at {client.tracking_uri} could not be read ({exc.message})") from exc


def local_model_dir(model: str | Path, params: Params | None = None, root: str | Path = ".") -> Path:
    """A local classifier directory for `model`: a directory as is, an MLflow URI downloaded (cached).

    `params` chooses the tracking store (default: $MLFLOW_TRACKING_URI, else ./params.yaml's store).
    """
    text = str(model)
    if not (text.startswith("models:/") or text.startswith("runs:/")):
        path = Path(text)
        if not path.is_dir():
            raise ModelNotFoundError(f"{path}: no such model directory (or use an MLflow URI like models:/NAME@champion)")
        if not is_classifier_dir(path):
            raise ModelNotFoundError(f"{path}: not a saved classifier directory (no {METADATA_FILE})")
        return path
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from duelguard.errors import RegistryError

    uri = point_mlflow(params, root)
    resolved = resolve_model(text)
    concrete = resolved.concrete
    target = _cache_root(params) / hashlib.sha256(uri.encode()).hexdigest()[:12] / resolved.key
    if target.is_dir():  # written only after its digest was checked (below), then renamed into place
        return find_classifier_dir(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=concrete, dst_path=str(tmp))
        except MlflowException as exc:
            raise RegistryError(f"{text}: downloading {concrete} from the MLflow store at {uri} failed ({exc.message})") from exc
        check_digest(find_classifier_dir(tmp), resolved.digest, f"{text} (= {concrete} in {uri})")
        try:
            tmp.rename(target)
        except OSError:  # a concurrent download won the race; its copy is complete
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return find_classifier_dir(target)
