"""Registry reads that tell "not there" from "could not ask".

Treating every MlflowException as "no such model" turns a registry outage into a wrong answer (a
candidate promoted as if there were no champion). What MLflow 3.17.2 raises, measured against a
real `mlflow server` and against the embedded sqlite store (the same codes for both):

- alias not set on an existing model: INVALID_PARAMETER_VALUE, "Registered model alias <a> not found."
- registered model or version missing: RESOURCE_DOES_NOT_EXIST
- server not answering: INTERNAL_ERROR "API request to <url> failed with exception ..." (after
  MLflow's own retries, MLFLOW_HTTP_REQUEST_MAX_RETRIES)

Only the first two mean "none"; anything else becomes a RegistryError naming the store and the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.errors import ModelNotFoundError, RegistryError

MISSING = "RESOURCE_DOES_NOT_EXIST"
CHAMPION_ALIAS = "champion"


def _store(client: Any) -> str:
    return str(getattr(client, "_registry_uri", None) or getattr(client, "tracking_uri", "?"))


def is_missing(exc: Exception, alias: str | None = None) -> bool:
    """Whether an MlflowException says the model/version (or `alias`) does not exist."""
    code = getattr(exc, "error_code", None)
    if code == MISSING:
        return True
    message = str(getattr(exc, "message", exc))
    return alias is not None and code == "INVALID_PARAMETER_VALUE" and f"alias {alias} not found" in message


@contextmanager
def registry_call(client: Any, what: str) -> Iterator[None]:
    """Turn any MlflowException (or RegistryError) raised inside into a RegistryError that names the
    store and `what` (what the caller was doing, and what state that leaves)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"MLflow registry at {_store(client)}: {what} failed: {exc.message}") from exc
    except RegistryError as exc:  # from a lookup inside: keep its detail, add what was being done
        raise RegistryError(f"{what} failed: {exc}") from exc


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The version `alias` points at; None only when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if is_missing(exc, alias):
            return None
        raise RegistryError(f"MLflow registry at {_store(client)}: reading {name}@{alias} failed: {exc.message}") from exc


def find_version(client: Any, name: str, version: str | int) -> Any | None:
    """Version `version` of `name`, or None when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if is_missing(exc):
            return None
        raise RegistryError(f"MLflow registry at {_store(client)}: reading {name} v{version} failed: {exc.message}") from exc


def get_version(client: Any, name: str, version: str | int) -> Any:
    """Version `version` of `name`; ModelNotFoundError when it does not exist."""
    found = find_version(client, name, version)
    if found is None:
        raise ModelNotFoundError(f"models:/{name}/{version}: no such registered model version in {_store(client)}")
    return found


def search_versions(client: Any, filter_string: str) -> list[Any]:
    """search_model_versions, with registry failures as RegistryError (an empty list means none)."""
    with registry_call(client, f"searching model versions ({filter_string})"):
        return list(client.search_model_versions(filter_string))


def champion_uri(params: Params, root: str | Path) -> str:
    """models:/<registered>@champion, the reference everything that serves resolves (the `export`
    stage, `duelguard serve`); ModelNotFoundError when the registry has no champion, RegistryError
    when it cannot be read."""
    from mlflow import MlflowClient

    from duelguard.tracking import tracking_uri

    uri = tracking_uri(params, root)
    name = params.tracking.registered_model
    if alias_version(MlflowClient(tracking_uri=uri, registry_uri=uri), name, CHAMPION_ALIAS) is None:
        raise ModelNotFoundError(
            f"{name} has no '{CHAMPION_ALIAS}' in the MLflow registry at {uri}: nothing to serve "
            "(promote a version with `duelguard promote`, or export a directory with `duelguard export-triton --model DIR`)"
        )
    return f"models:/{name}@{CHAMPION_ALIAS}"
