"""The HTTP front in the manifests and the serving image (issue 15), rendered offline like test_infra_render:
a sidecar of the Triton pod running the front from the same image against Triton on localhost, its port on
the Service, probes on /healthz and /readyz, scraped by the ServiceMonitor, and reachable only by the pods
the NetworkPolicies already let call Triton (and Prometheus)."""

from __future__ import annotations

from test_infra_render import REPO, _allowed, find, rendered  # noqa: F401  (rendered: the module fixture)


def test_http_front_is_a_sidecar_of_the_triton_pod(rendered) -> None:  # noqa: F811
    from duelguard.config import load_params

    overlay, docs = rendered
    pod = find(docs, "Deployment", "triton", "duelguard")["spec"]["template"]["spec"]
    triton, front = pod["containers"][0], next(c for c in pod["containers"] if c["name"] == "http-front")
    assert front["image"] == triton["image"]  # one image, two processes
    assert front["command"] == ["python", "-m", "duelguard.serving.http_front"]
    args = dict(zip(front["args"][::2], front["args"][1::2]))
    grpc = {p["name"]: p["containerPort"] for p in triton["ports"]}["grpc"]
    params = load_params(REPO / "params.yaml")
    assert args == {"--grpc-url": f"127.0.0.1:{grpc}", "--host": "0.0.0.0", "--port": str(params.serving.http.port)}
    assert front["ports"] == [{"name": "guard-http", "containerPort": params.serving.http.port}]
    assert front["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "guard-http"}
    assert front["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "guard-http"}
    assert not any("tritonserver" in w or "serve-container" in w for w in front["command"] + front["args"])
    svc = find(docs, "Service", "triton", "duelguard")
    assert {"name": "guard-http", "port": 8080, "targetPort": "guard-http"} in svc["spec"]["ports"]
    monitor = find(docs, "ServiceMonitor", "triton", "duelguard")
    assert {"port": "guard-http", "path": "/metrics", "interval": "15s"} in monitor["spec"]["endpoints"]


def test_only_triton_clients_and_prometheus_reach_the_front(rendered) -> None:  # noqa: F811
    overlay, docs = rendered
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    labels = find(docs, "Deployment", "triton", "duelguard")["spec"]["template"]["metadata"]["labels"]
    triton = {"labels": labels, "ns": "duelguard"}
    client = {"labels": {"app": "gateway", "duelguard.io/triton-client": "true"}, "ns": "apps"}
    prometheus = {"labels": {"app.kubernetes.io/name": "prometheus"}, "ns": "monitoring"}
    stranger = {"labels": {"app": "anything"}, "ns": "apps"}
    step = {"labels": {"pipelines.kubeflow.org/v2_component": "true"}, "ns": "kubeflow"}
    assert _allowed(policies, client, triton, 8080) and _allowed(policies, prometheus, triton, 8080)
    assert not _allowed(policies, stranger, triton, 8080) and not _allowed(policies, step, triton, 8080)
    assert not _allowed(policies, {"labels": {"app": "x"}, "ns": "duelguard"}, triton, 8080)


def test_serving_image_exposes_the_front_port() -> None:
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(REPO / "docker/serving/Dockerfile"))
    exposed = [p for i in parser.structure if i["instruction"] == "EXPOSE" for p in i["value"].split()]
    assert "8080" in exposed and {"8000", "8001", "8002"} <= set(exposed)
