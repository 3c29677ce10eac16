"""A saved classifier directory <-> an MLflow model.

- log_classifier: logs the directory as an MLflow pyfunc model (duelguard.registry.pyfunc) in the
  active run; the directory is copied verbatim as the model's `classifier` artifact, so the
  registered model is the very same self-describing directory that `duelguard predict` loads.
  pip_requirements are explicit: inferring them would load the model and take 5-12 s per log.
- local_model_dir: what `duelguard predict`, `export-triton` and promotion use to turn
  "a directory or an MLflow model URI" into a local classifier directory. URIs are resolved to a
  concrete registry version first (an alias moves; a version does not) and downloaded once into a
  cache keyed by tracking store + name + version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from duelguard.config import Params, expand
from duelguard.errors import ModelNotFoundError

CLASSIFIER_MARKER = "duelguard.json"
CACHE_ENV = "DUELGUARD_MODEL_CACHE"
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


def log_classifier(model_dir: str | Path, name: str = "classifier") -> Any:
    """Log `model_dir` as a pyfunc model in the active MLflow run; returns mlflow's ModelInfo."""
    import mlflow.pyfunc

    from duelguard.registry import pyfunc

    model_dir = Path(model_dir)
    if not (model_dir / CLASSIFIER_MARKER).exists():
        raise ModelNotFoundError(f"{model_dir}: not a saved classifier (no {CLASSIFIER_MARKER})")
    try:
        duelguard_version = metadata.version("duelguard")
    except metadata.PackageNotFoundError:
        duelguard_version = "unknown"
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=pyfunc.__file__,  # models from code: the wrapper's source travels with the model
        artifacts={pyfunc.CLASSIFIER_ARTIFACT: str(model_dir)},
        signature=pyfunc.signature(),
        pip_requirements=pip_requirements(),
        metadata={"duelguard_version": duelguard_version, "classifier_artifact": pyfunc.CLASSIFIER_ARTIFACT},
    )


def find_classifier_dir(root: Path) -> Path:
    """The directory under `root` (itself included) that holds duelguard.json."""
    if (root / CLASSIFIER_MARKER).exists():
        return root
    hits = sorted(root.rglob(CLASSIFIER_MARKER), key=lambda p: len(p.parts))
    if not hits:
        raise ModelNotFoundError(f"{root}: downloaded model holds no classifier directory ({CLASSIFIER_MARKER})")
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


def resolve_uri(model: str) -> tuple[str, str]:
    """(concrete URI, cache key) for a models:/ or runs:/ URI; aliases and 'latest' become versions.

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
            client.get_run(run_id)
            return model, "runs/" + hashlib.sha256(model.encode()).hexdigest()[:16]
        rest = model[len("models:/"):]
        if "/" in rest:
            name, ref = rest.split("/", 1)
            if ref.isdigit():
                version = client.get_model_version(name, ref).version
            elif ref.lower() == "latest":
                versions = client.search_model_versions(f"name='{name}'")
                if not versions:
                    raise ModelNotFoundError(f"{model}: registered model {name!r} has no versions")
                version = str(max(int(v.version) for v in versions))
            else:
                raise ModelNotFoundError(f"{model}: use models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest")
        elif "@" in rest:
            name, alias = rest.rsplit("@", 1)
            version = client.get_model_version_by_alias(name, alias).version
        else:
            client.get_logged_model(rest)
            return model, "logged/" + rest
        return f"models:/{name}/{version}", f"models/{name}/{version}"
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
        if not (path / CLASSIFIER_MARKER).exists():
            raise ModelNotFoundError(f"{path}: not a saved classifier directory (no {CLASSIFIER_MARKER})")
        return path
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from duelguard.errors import RegistryError

    uri = point_mlflow(params, root)
    concrete, key = resolve_uri(text)
    target = _cache_root(params) / hashlib.sha256(uri.encode()).hexdigest()[:12] / key
    if target.is_dir():
        return find_classifier_dir(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=concrete, dst_path=str(tmp))
        except MlflowException as exc:
            raise RegistryError(f"{text}: downloading {concrete} from the MLflow store at {uri} failed ({exc.message})") from exc
        find_classifier_dir(tmp)
        try:
            tmp.rename(target)
        except OSError:  # a concurrent download won the race; its copy is complete
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return find_classifier_dir(target)
