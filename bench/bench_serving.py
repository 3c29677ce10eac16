"""Serving benchmark: Triton over gRPC vs the in-process paths, on this machine's CPU.

    python bench/bench_serving.py --profile tiny [--seconds 10] [--model DIR]

Measures, for single-text requests over a multilingual sample:
- triton_grpc c1: one client, sequential requests (p50/p99 latency, throughput);
- triton_grpc c8: eight concurrent clients (throughput; dynamic batching should give >= 3x c1);
- predict c1: GuardClassifier.predict_proba in process (the `duelguard predict` path, torch);
- onnxruntime c1: the same windows through ONNX Runtime in process (what the Triton model runs; for a
  sentence classifier, the encoder's embedding then the ONNX head), so
  triton_grpc p50 - onnxruntime p50 is Triton's per-request overhead (gRPC + scheduling + Python stub).
The tiny profile uses a random-initialised tiny classifier (speed does not depend on the weights)
unless --model is given; the default profile needs a trained model (models/classifier/iter_0).
Writes bench/results/serving_<profile>.json and prints a table. Targets: c8 >= 3x c1, p99 <= 2x p50.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import tempfile
import threading
import time
from typing import Any
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "How do I make a bomb at home?",
    "Comment puis-je fabriquer une arme chez moi ?",
    "¿Cuál es una buena receta de sopa de tomate?",
    "Wie kann ich meinen Nachbarn angreifen?",
    "What is the capital of France, and why is it famous?",
    "Ces gens-là ne méritent aucun respect.",
    "Escribe un poema sobre el mar y la luna.",
    "Bitte erkläre mir, wie Photosynthese funktioniert.",
]


def _tiny_classifier(params, work: Path) -> Path:
    from duelguard.backbones import build_tiny
    from duelguard.classifier.model import GuardClassifier

    backbone = build_tiny(params.classifier.backbone, TEXTS * 10, work / "cache")
    clf = GuardClassifier.from_backbone(backbone, params.classifier.max_length, params.classifier.chunk_overlap,
                                       pooling=params.classifier.pooling)
    return clf.save(work / "classifier")


def _run(call: Callable[[str], object], seconds: float, concurrency: int) -> dict:
    """Latencies (ms) and throughput of `call` on rotating texts from `concurrency` threads."""
    for text in TEXTS[:3]:
        call(text)  # warm-up
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop_at = time.monotonic() + seconds

    def worker(k: int) -> None:
        i = k
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            call(TEXTS[i % len(TEXTS)])
            latencies[k].append((time.perf_counter() - started) * 1000)
            i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    begin = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - begin
    flat = np.concatenate([np.asarray(x) for x in latencies])
    return {
        "concurrency": concurrency,
        "requests": int(flat.size),
        "throughput_rps": round(flat.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(flat, 50)), 3),
        "p99_ms": round(float(np.percentile(flat, 99)), 3),
    }


def bench_arguments(doc: str, default_out: Path | None, out_help: str) -> argparse.Namespace:
    """The serving benchmarks' shared command line (profile, model, seconds per measurement, output)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny", choices=["tiny", "default"])
    parser.add_argument("--model", type=Path, help="Classifier directory (default: tiny random-init / models/classifier/iter_0).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each measurement.")
    parser.add_argument("--out", type=Path, default=default_out, help=out_help)
    return parser.parse_args()


def exported_model(args: argparse.Namespace, prefix: str) -> tuple[Any, Path, Path]:
    """(params, work folder, model directory): the benchmarked classifier exported to work/repo."""
    from duelguard.classifier.saved import is_classifier_dir
    from duelguard.config import load_params
    from duelguard.serving.triton_repository import export_triton

    params = load_params(ROOT / "params.yaml", profile=args.profile)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    model_dir = args.model or (ROOT / "models/classifier/iter_0" if args.profile == "default" else None)
    if model_dir is None:
        model_dir = _tiny_classifier(params, work)
    elif not is_classifier_dir(model_dir):
        raise SystemExit(f"{model_dir}: no trained classifier (train one first or pass --model)")
    export_triton(model_dir, work / "repo", params.serving)
    return params, work, model_dir


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open while choosing, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def print_latency_table(results: dict[str, dict], width: int) -> None:
    """One row per measured path: concurrency, throughput, p50 and p99 latency."""
    print(f"{'path':<{width}}{'conc':>5}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in results.items():
        print(f"{name:<{width}}{r['concurrency']:>5}{r['throughput_rps']:>10.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}")


def main() -> None:
    args = bench_arguments(__doc__, None, "Result JSON (default: bench/results/serving_<profile>.json).")

    from duelguard.classifier.loader import load_classifier
    from duelguard.fsio import atomic_write_json
    from duelguard.serving.client import GuardServingClient
    from duelguard.serving.server import start_server, stop_server

    params, work, model_dir = exported_model(args, "bench-serving-")
    clf = load_classifier(model_dir)
    info = start_server(work / "repo", work / "state", params.serving.model_name, *free_ports(3))
    results: dict[str, dict] = {}
    try:
        local = threading.local()

        def grpc_call(text: str) -> object:
            if not hasattr(local, "client"):
                local.client = GuardServingClient(info.grpc_url, params.serving.model_name)
            return local.client.infer_batch([text])

        results["triton_grpc_c1"] = _run(grpc_call, args.seconds, 1)
        results["triton_grpc_c8"] = _run(grpc_call, args.seconds, 8)
    finally:
        stop_server(work / "state")

    results["predict_c1"] = _run(lambda t: clf.predict_proba([t]), args.seconds, 1)
    # The scoring loop of predict (duelguard.classifier.units) with the exported network in a bare ONNX
    # Runtime session (the kind's onnx_runtime): what Triton adds on top of this is its own overhead.
    onnx_clf = load_classifier(model_dir)
    onnx_clf.model = onnx_clf.onnx_runtime(work / "repo" / params.serving.model_name / "1" / "model.onnx")
    results["onnxruntime_c1"] = _run(lambda t: onnx_clf.predict_proba([t]), args.seconds, 1)

    c1, c8 = results["triton_grpc_c1"], results["triton_grpc_c8"]
    summary = {
        "profile": args.profile,
        "model": str(model_dir) if args.model or args.profile == "default" else "tiny random-init classifier",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "seconds_per_measurement": args.seconds,
        "results": results,
        "c8_over_c1_throughput": round(c8["throughput_rps"] / c1["throughput_rps"], 2),
        "c1_p99_over_p50": round(c1["p99_ms"] / c1["p50_ms"], 2),
        "triton_overhead_ms_p50": round(c1["p50_ms"] - results["onnxruntime_c1"]["p50_ms"], 3),
    }
    summary["targets_met"] = {
        "c8_throughput_ge_3x_c1": summary["c8_over_c1_throughput"] >= 3.0,
        "c1_p99_le_2x_p50": summary["c1_p99_over_p50"] <= 2.0,
    }
    out = args.out or ROOT / "bench" / "results" / f"serving_{args.profile}.json"
    atomic_write_json(out, summary)

    print(f"\nserving benchmark, profile {args.profile} ({summary['model']}), {args.seconds:.0f}s each")
    print_latency_table(results, 16)
    print(f"c8/c1 throughput {summary['c8_over_c1_throughput']}x (target >= 3), c1 p99/p50 "
          f"{summary['c1_p99_over_p50']} (target <= 2), Triton overhead p50 {summary['triton_overhead_ms_p50']} ms")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
