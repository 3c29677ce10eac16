"""HTTP front benchmark: OpenAI-shaped POST /v1/moderations vs direct Triton gRPC, on this machine's CPU.

    python bench/bench_http.py --profile tiny [--seconds 10] [--model DIR]

Starts a real tritonserver and the HTTP front as `duelguard serve` does (its own uvicorn process, talking to
Triton over gRPC), then measures single short-text requests over a multilingual sample:
- grpc c1 / c8: GuardServingClient.infer_batch, one and eight concurrent clients (one client each);
- http c1 / c8: POST /v1/moderations {"input": text} with a kept-alive connection per client, the reply
  parsed (what a gateway does), one and eight concurrent clients.
http p50 - grpc p50 at c1 is the front's overhead (HTTP parsing, JSON in and out, the category mapping,
a thread hop). The two paths run in turn, each after a warm-up. The tiny profile uses a random-initialised
tiny classifier (speed does not depend on the weights). Writes bench/results/http.json (--out) and prints
a table. Target (issue 15): the front adds <= 2 ms p50 over gRPC on short texts.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import threading
from pathlib import Path

from bench_serving import _run, bench_arguments, exported_model, free_ports, print_latency_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    args = bench_arguments(__doc__, ROOT / "bench" / "results" / "http.json", "Result JSON.")

    from duelguard.fsio import atomic_write_json
    from duelguard.serving.client import GuardServingClient
    from duelguard.serving.http_front import FrontSettings, start_front, stop_front
    from duelguard.serving.server import start_server, stop_server

    params, work, model_dir = exported_model(args, "bench-http-")
    grpc_port, http_port, metrics_port, front_port = free_ports(4)
    info = start_server(work / "repo", work / "state", params.serving.model_name, http_port, grpc_port, metrics_port)
    results: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    try:
        start_front(FrontSettings(info.grpc_url, params.serving.model_name, params.tracking.registered_model),
                            work / "state", "127.0.0.1", front_port)
        local = threading.local()

        def grpc_call(text: str) -> object:
            if not hasattr(local, "client"):
                local.client = GuardServingClient(info.grpc_url, params.serving.model_name)
            return local.client.infer_batch([text])

        def http_call(text: str) -> object:
            for attempt in (0, 1):  # a connection idle past uvicorn's keep-alive (5 s) is closed: reconnect once
                if attempt or not hasattr(local, "conn"):
                    local.conn = http.client.HTTPConnection("127.0.0.1", front_port, timeout=60)
                try:
                    local.conn.request("POST", "/v1/moderations", body=json.dumps({"input": text}).encode(),
                                       headers={"Content-Type": "application/json"})
                    reply = local.conn.getresponse()
                    break
                except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                    local.conn.close()
                    if attempt:
                        raise
            body = json.loads(reply.read())
            if reply.status != 200 or len(body["results"]) != 1:
                raise RuntimeError(f"HTTP {reply.status}: {body}")
            return body

        for concurrency in (1, 8):
            results[f"grpc_c{concurrency}"] = _run(grpc_call, args.seconds, concurrency)
            results[f"http_c{concurrency}"] = _run(http_call, args.seconds, concurrency)
    finally:
        stop_front(work / "state")
        stop_server(work / "state")

    summary = {
        "profile": args.profile,
        "model": str(model_dir) if args.model or args.profile == "default" else "tiny random-init classifier",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU, shared "
                   f"(1-min load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)",
        "texts": "single short texts (4-10 words, en/fr/es/de), one per request",
        "seconds_per_measurement": args.seconds,
        "results": results,
        "http_overhead_ms_p50_c1": round(results["http_c1"]["p50_ms"] - results["grpc_c1"]["p50_ms"], 3),
        "http_overhead_ms_p50_c8": round(results["http_c8"]["p50_ms"] - results["grpc_c8"]["p50_ms"], 3),
        "http_c8_over_grpc_c8_throughput": round(results["http_c8"]["throughput_rps"]
                                                 / results["grpc_c8"]["throughput_rps"], 2),
    }
    summary["targets_met"] = {"http_overhead_le_2ms_p50": summary["http_overhead_ms_p50_c1"] <= 2.0}
    atomic_write_json(args.out, summary)

    print(f"\nHTTP front benchmark, profile {args.profile} ({summary['model']}), {args.seconds:.0f}s each; {summary['machine']}")
    print_latency_table(results, 10)
    print(f"HTTP overhead over gRPC at p50: c1 {summary['http_overhead_ms_p50_c1']} ms (target <= 2), "
          f"c8 {summary['http_overhead_ms_p50_c8']} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
