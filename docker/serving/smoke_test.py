"""Smoke test of a built serving image (`make image-serving-smoke`): it must start from a model URI alone.

A real `mlflow server` on loopback gets a tiny classifier registered and made champion; the image then
runs with nothing but DUELGUARD_MODEL_URI=models:/duelguard-classifier@champion, MLFLOW_TRACKING_URI and
its ports (host network: the container reaches the registry on 127.0.0.1, the test reaches its gRPC
port); its gRPC answers must equal the classifier's own probabilities. Prints the measured times.
Opt-in (not part of `make test`): it needs a Docker engine and the image (docker/serving/build-cpu.sh).

    python docker/serving/smoke_test.py --image duelguard-serving-cpu:<tag>
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

MODEL = "duelguard-classifier"


def _register_champion(params, workdir: Path, url: str) -> tuple[Path, str]:
    import mlflow
    from mlflow import MlflowClient

    from duelguard.registry.models import log_classifier
    from duelguard.tracking import configure
    from serving_toy import build_tiny_classifier

    model_dir = build_tiny_classifier(params, workdir / "classifier", workdir / "weights", variant=3)
    os.environ["MLFLOW_TRACKING_URI"] = url
    configure(params, workdir)
    with mlflow.start_run():
        info = log_classifier(model_dir)
    version = mlflow.register_model(info.model_uri, MODEL).version
    MlflowClient().set_registered_model_alias(MODEL, "champion", version)
    return model_dir, version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds for the container to become ready.")
    args = parser.parse_args()

    import tritonclient.grpc as grpcclient

    from duelguard.classifier.loader import load_classifier
    from duelguard.config import load_params
    from duelguard.registry import server
    from duelguard.serving.client import GuardServingClient
    from serving_toy import SAMPLE_TEXTS, free_port

    params = load_params(ROOT / "params.yaml", profile="tiny")
    workdir = Path(tempfile.mkdtemp(prefix="serving-image-smoke-"))
    cfg = server.ServerConfig(port=free_port(), backend_store=workdir / "mlflow.db",
                              artifacts_destination=workdir / "artifacts", state_dir=workdir, start_timeout_s=180)
    server.start(cfg)
    name = f"duelguard-smoke-{os.getpid()}"
    http, grpc, metrics = free_port(), free_port(), free_port()
    try:
        model_dir, version = _register_champion(params, workdir, cfg.url)
        env = {"DUELGUARD_MODEL_URI": f"models:/{MODEL}@champion", "MLFLOW_TRACKING_URI": cfg.url,
               "DUELGUARD_SERVING_HTTP_PORT": http, "DUELGUARD_SERVING_GRPC_PORT": grpc,
               "DUELGUARD_SERVING_METRICS_PORT": metrics}
        command = ["docker", "run", "-d", "--rm", "--name", name, "--network", "host"]
        for key, value in env.items():
            command += ["-e", f"{key}={value}"]
        started = time.monotonic()
        subprocess.run([*command, args.image], check=True, capture_output=True, text=True)
        url = f"127.0.0.1:{grpc}"
        probe = grpcclient.InferenceServerClient(url)
        with GuardServingClient(url, retries=0) as client:
            while True:
                try:
                    if probe.is_model_ready("duelguard"):
                        break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                                         capture_output=True, text=True).stdout.strip()
                if running != "true" or time.monotonic() - started > args.timeout:
                    raise SystemExit(f"container {name} not ready (running={running or 'gone'}) after "
                                     f"{time.monotonic() - started:.0f} s; docker logs {name}")
                time.sleep(1)
            ready = time.monotonic() - started
            texts = [t for t in SAMPLE_TEXTS if t.strip()]
            scores, served = client.infer_with_version(texts)
            scores = scores.probs
            records = client.classify_records([{"text": t} for t in texts])
        expected = load_classifier(model_dir).predict_proba(texts)
        err = float(np.max(np.abs(scores - expected)))
        print(f"{args.image}: ready {ready:.1f} s after `docker run` (export included); served v{served} "
              f"(registered v{version}); max |SCORES - predict_proba| = {err:.2g} over {len(texts)} texts")
        assert served == str(version), f"served v{served}, champion is v{version}"
        assert err <= 1e-4, f"gRPC scores differ from the classifier by {err}"
        np.testing.assert_allclose([r["unsafe_score"] for r in records], scores.max(axis=1), atol=1e-6)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        print("\n".join(line for line in (logs.stdout + logs.stderr).splitlines() if "duelguard-serve" in line))
        return 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        server.stop(cfg)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
