"""Classifier benchmark: training rows/s, and predict texts/s on a realistic mixed-length set with
each runtime (torch, ONNX Runtime float32, ONNX Runtime INT8 dynamic quantisation), with the quality
delta of each runtime against torch on the behavioural suite's report half.

    python bench/bench_classifier.py [--model models/classifier/iter_0] [--texts 400] [--train-steps 4]

Prints a table and writes bench/results/classifier.json. Not a test: figures depend on the machine
(its load average is recorded beside them; CPU seconds are less sensitive to other load than wall
seconds). The mixed-length set: 60% single prompts (the suite and the seed test split), 30% medium
pastes (3-8 joined prompts), 10% long pastes (20-80 joined prompts, many over the window cap); its
token-length distribution is part of the output.
"""

from __future__ import annotations

import argparse
import platform
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from duelguard.config import load_params
from duelguard.fsio import atomic_write_json
from duelguard.layout import Layout

REPO_ROOT = Path(__file__).resolve().parents[1]


def mixed_texts(layout: Layout, n: int, seed: int = 0) -> list[str]:
    """n texts: 60% single prompts, 30% medium pastes, 10% long pastes (see the module docstring)."""
    from duelguard.suite import suite_records
    from duelguard.records import read_records

    rng = random.Random(seed)
    pool = [r["text"] for r in suite_records()]
    for split in ("test", "train"):
        if layout.seed_split(split).exists():
            pool += [r["text"] for r in read_records(layout.seed_split(split))]
    texts = []
    for i in range(n):
        kind = i % 10
        k = 1 if kind < 6 else rng.randint(3, 8) if kind < 9 else rng.randint(20, 80)
        texts.append(" ".join(rng.choice(pool) for _ in range(k)))
    rng.shuffle(texts)
    return texts


class PeakRSS:
    """Samples this process's resident memory every 20 ms while active; .peak_mb is the maximum."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def timed(fn: Callable[[], Any]) -> dict[str, Any]:
    """The result of one call with its wall seconds, CPU seconds (all threads) and peak RSS."""
    proc = psutil.Process()
    with PeakRSS() as rss:
        cpu0, start = sum(proc.cpu_times()[:2]), time.perf_counter()
        result = fn()
        seconds, cpu = time.perf_counter() - start, sum(proc.cpu_times()[:2]) - cpu0
    return {"result": result, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 2), "peak_rss_mb": rss.peak_mb,
            "load_average_1m": round(psutil.getloadavg()[0], 2)}


def length_distribution(tokenizer: Any, texts: list[str], clf: Any) -> dict[str, Any]:
    from duelguard.classifier.inference import encode_chunks

    tokens = np.array([len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts])
    windows = [encode_chunks(tokenizer, t, clf.max_length, clf.chunk_overlap, clf.max_windows) for t in texts]
    return {
        "texts": len(texts),
        "tokens_per_text": {f"p{q}": int(np.percentile(tokens, q)) for q in (10, 50, 90, 99)} | {"max": int(tokens.max()),
                                                                                                  "mean": round(float(tokens.mean()), 1)},
        "windows": int(sum(len(w.ids) for w in windows)),
        "truncated_texts": int(sum(w.truncated for w in windows)),
        "max_length": clf.max_length,
        "max_windows": clf.max_windows,
    }


def suite_quality(probs: np.ndarray, records: list[dict[str, Any]], thresholds: np.ndarray) -> dict[str, Any]:
    from duelguard.evaluation.evaluate import split_report

    summary = split_report(records, probs, thresholds)["summary"]
    return {k: summary[k] for k in ("avg_f1", "f1_en", "f1_fr", "f1_es", "f1_de", "fpr_lookalike")}


def main() -> None:
    import torch

    from duelguard.backbones import resolve_backbone
    from duelguard.classifier.model import GuardClassifier
    from duelguard.classifier.runtime import OnnxNetwork
    from duelguard.classifier.train import fit
    from duelguard.suite import suite_records
    from duelguard.classifier.onnx_export import export_onnx, quantize_int8

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models/classifier/iter_0",
                        help="a trained classifier directory (quality deltas need one); else a fresh head")
    parser.add_argument("--texts", type=int, default=400, help="texts in the mixed-length predict set")
    parser.add_argument("--train-steps", type=int, default=4, help="optimizer steps of the real training loop")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench/results/classifier.json")
    args = parser.parse_args()

    params = load_params(REPO_ROOT / "params.yaml", profile="default")
    cfg = params.classifier
    layout = Layout.from_params(params, root=REPO_ROOT)
    backbone_dir = resolve_backbone(cfg.backbone, params.paths.weights_cache)
    trained = (args.model / "duelguard.json").is_file()
    clf = GuardClassifier.load(args.model) if trained else GuardClassifier.from_backbone(
        backbone_dir, cfg.max_length, cfg.chunk_overlap, pooling=cfg.pooling, max_windows=cfg.max_windows)
    texts = mixed_texts(layout, args.texts)
    suite = suite_records("report")
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": psutil.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "backbone": cfg.backbone.name_or_path,
        "model": str(args.model) if trained else "untrained head (quality deltas not meaningful)",
        "mixed_set": length_distribution(clf.tokenizer, texts, clf),
        "predict": {},
    }
    runtimes: dict[str, Any] = {"torch": clf.model}
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(clf.model, Path(tmp) / "model.onnx", params.serving.onnx_opset)
        runtimes["onnx"] = OnnxNetwork(onnx)
        runtimes["onnx-int8"] = OnnxNetwork(quantize_int8(onnx, Path(tmp) / "model.int8.onnx"))
        reference = None
        for name, network in runtimes.items():
            clf.model = network
            run = timed(lambda: clf.predict_scores(texts, batch_size=cfg.predict_batch_size, progress=True))
            suite_probs = clf.predict_proba([r["text"] for r in suite], batch_size=cfg.predict_batch_size)
            reference = suite_probs if reference is None else reference
            results["predict"][name] = {
                "seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"], "peak_rss_mb": run["peak_rss_mb"],
                "load_average_1m": run["load_average_1m"], "batch_size": cfg.predict_batch_size,
                "texts_per_s": round(len(texts) / run["seconds"], 2),
                "suite_max_abs_prob_diff_vs_torch": float(np.abs(suite_probs - reference).max()),
                "suite_decisions_changed_vs_torch": int(((suite_probs > clf.thresholds).any(1)
                                                         != (reference > clf.thresholds).any(1)).sum()),
                "suite_report_half": suite_quality(suite_probs, suite, clf.thresholds),
            }
    # training: a few optimizer steps of the stage's own loop on a fresh head
    fresh = GuardClassifier.from_backbone(backbone_dir, cfg.max_length, cfg.chunk_overlap, pooling=cfg.pooling)
    n_train = cfg.batch_size * cfg.grad_accum * args.train_steps
    train_texts = [t for t in texts if len(t) < 400][:n_train]
    enc = fresh.tokenizer(train_texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    labels = np.zeros((len(enc), 12))
    labels[::2, 0] = 1
    run = timed(lambda: fit(fresh, enc, labels, params, max_steps=args.train_steps, progress=False))
    history = run["result"]
    results["train"] = {
        "optimizer_steps": history["steps"], "rows_per_step": cfg.batch_size * cfg.grad_accum,
        "train_top_layers": cfg.train_top_layers, "seconds": history["seconds"],
        "rows_per_s": round(history["steps"] * cfg.batch_size * cfg.grad_accum / history["seconds"], 2),
        "mean_tokens_per_row": round(float(np.mean([len(e) for e in enc])), 1),
        "cpu_seconds": run["cpu_seconds"], "peak_rss_mb": run["peak_rss_mb"], "load_average_1m": run["load_average_1m"],
    }
    atomic_write_json(args.output, results)
    dist = results["mixed_set"]
    print(f"\nclassifier benchmark ({cfg.backbone.name_or_path}; {results['model']})")
    print(f"mixed set: {dist['texts']} texts, tokens/text {dist['tokens_per_text']}, {dist['windows']} windows, "
          f"{dist['truncated_texts']} truncated at {dist['max_windows']} windows")
    print(f"{'runtime':<11}{'texts/s':>9}{'wall s':>8}{'CPU s':>8}{'RSS MiB':>9}{'load':>6}  suite avg F1 / max|dp| / flips")
    for name, r in results["predict"].items():
        print(f"{name:<11}{r['texts_per_s']:>9.1f}{r['seconds']:>8.1f}{r['cpu_seconds']:>8.1f}{r['peak_rss_mb']:>9.0f}"
              f"{r['load_average_1m']:>6.1f}  {r['suite_report_half']['avg_f1']:.4f} / "
              f"{r['suite_max_abs_prob_diff_vs_torch']:.2e} / {r['suite_decisions_changed_vs_torch']}")
    t = results["train"]
    print(f"train: {t['rows_per_s']} rows/s ({t['optimizer_steps']} steps of {t['rows_per_step']}, top "
          f"{t['train_top_layers']} layers, {t['mean_tokens_per_row']} tokens/row); wrote {args.output}")


if __name__ == "__main__":
    main()
