"""Classifier benchmark: training rows/s, and predict texts/s on a realistic mixed-length set with
each runtime (torch, ONNX Runtime float32, ONNX Runtime INT8 dynamic quantisation), with the quality
delta of each runtime against torch on the behavioural suite's report half.

    python bench/bench_classifier.py [--model models/classifier/iter_0] [--profile default] [--texts 400]

Prints a table and writes bench/results/classifier.json. Not a test: figures depend on the machine
(its load average is recorded beside them; CPU seconds are less sensitive to other load than wall
seconds). The mixed-length set: 60% single prompts (the suite and the seed test split), 30% medium
pastes (3-8 joined prompts), 10% long pastes (20-80 joined prompts, many over the window cap); its
length distribution (tokens, or words for a sentence classifier) is part of the output.
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
    from duelguard.records import read_records
    from duelguard.suite import suite_records

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


def length_distribution(texts: list[str], clf: Any) -> dict[str, Any]:
    """Words per text, and the scoring units they cost (duelguard.classifier.units)."""
    from duelguard.classifier.units import scoring_units

    words = np.array([len(t.split()) for t in texts])
    units = [scoring_units(t, clf.max_length, clf.chunk_overlap, clf.long_input) for t in texts]
    return {
        "texts": len(texts),
        "per_text_words": {f"p{q}": int(np.percentile(words, q)) for q in (10, 50, 90, 99)} | {
            "max": int(words.max()), "mean": round(float(words.mean()), 1)},
        "chars_per_text_mean": round(float(np.mean([len(t) for t in texts])), 1),
        "units": int(sum(len(u.texts) for u in units)),
        "too_long_texts": int(sum(u.too_long for u in units)),
        "max_length": clf.max_length,
        "max_words": clf.long_input.max_words,
    }


def suite_quality(probs: np.ndarray, records: list[dict[str, Any]], thresholds: np.ndarray) -> dict[str, Any]:
    from duelguard.evaluation.evaluate import split_report

    summary = split_report(records, probs, thresholds)["summary"]
    return {k: summary[k] for k in ("avg_f1", "f1_en", "f1_fr", "f1_es", "f1_de", "fpr_lookalike")}


def train_speed(clf: Any, params: Any, texts: list[str], train_steps: int) -> dict[str, Any]:
    """Training throughput of the stage's own code: a sentence head = encoder embedding of the rows
    (uncached) + the head's epochs; a token model = `train_steps` optimizer steps on a fresh head."""
    from duelguard.backbones import resolve_backbone
    from duelguard.classifier.model import GuardClassifier
    from duelguard.classifier.sentence import SentenceGuard, first_window, fit_head

    cfg = params.classifier
    rows = [t for t in texts if len(t) < 400]
    if isinstance(clf, SentenceGuard):
        from duelguard.encoder import embed

        embedded = timed(lambda: embed([first_window(t, cfg.max_length) for t in rows]))
        vectors = embedded["result"]
        labels = np.zeros((len(rows), 12))
        labels[::2, 0] = 1
        fresh = SentenceGuard.fresh(clf.encoder, vectors.shape[1], cfg.head_hidden, cfg.head_dropout, cfg.max_length,
                                    cfg.chunk_overlap, cfg.long_input, members=cfg.head_members)
        fitted = timed(lambda: fit_head(fresh, [(vectors, labels, None)], cfg.learning_rate, cfg.batch_size, 20, 1000,
                                        cfg.weight_decay, cfg.random_seed, progress=False))
        return {"kind": "sentence", "rows": len(rows), "embed_rows_per_s": round(len(rows) / embedded["seconds"], 1),
                "head_members": cfg.head_members,  # each trains its own 20 epochs: rows/s per member epoch
                "head_epoch_rows_per_s": round(20 * cfg.head_members * len(rows) / fitted["seconds"], 1),
                "cpu_seconds": embedded["cpu_seconds"] + fitted["cpu_seconds"],
                "peak_rss_mb": max(embedded["peak_rss_mb"], fitted["peak_rss_mb"]),
                "load_average_1m": fitted["load_average_1m"]}
    from duelguard.classifier.train import fit

    backbone_dir = resolve_backbone(cfg.backbone, params.paths.weights_cache)
    fresh = GuardClassifier.from_backbone(backbone_dir, cfg.max_length, cfg.chunk_overlap, pooling=cfg.pooling)
    enc = fresh.tokenizer(rows[: cfg.batch_size * cfg.grad_accum * train_steps], truncation=True,
                          max_length=cfg.max_length)["input_ids"]
    labels = np.zeros((len(enc), 12))
    labels[::2, 0] = 1
    run = timed(lambda: fit(fresh, enc, labels, params, max_steps=train_steps, progress=False))
    history = run["result"]
    return {"kind": "token", "optimizer_steps": history["steps"], "rows_per_step": cfg.batch_size * cfg.grad_accum,
            "train_top_layers": cfg.train_top_layers, "seconds": history["seconds"],
            "rows_per_s": round(history["steps"] * cfg.batch_size * cfg.grad_accum / history["seconds"], 2),
            "mean_tokens_per_row": round(float(np.mean([len(e) for e in enc])), 1),
            "cpu_seconds": run["cpu_seconds"], "peak_rss_mb": run["peak_rss_mb"], "load_average_1m": run["load_average_1m"]}


def main() -> None:
    import torch
    from duelguard.classifier.loader import load_classifier
    from duelguard.classifier.onnx_export import onnx_network
    from duelguard.classifier.runtime import RUNTIMES
    from duelguard.classifier.saved import is_classifier_dir
    from duelguard.suite import suite_records

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models/classifier/iter_0",
                        help="a trained classifier directory (run `make demo` or `duelguard stage train_classifier`)")
    parser.add_argument("--profile", default="default", help="the profile the model was trained on")
    parser.add_argument("--texts", type=int, default=400, help="texts in the mixed-length predict set")
    parser.add_argument("--train-steps", type=int, default=4, help="optimizer steps of a token model's training loop")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench/results/classifier.json")
    args = parser.parse_args()

    params = load_params(REPO_ROOT / "params.yaml", profile=args.profile)
    cfg = params.classifier
    layout = Layout.from_params(params, root=REPO_ROOT)
    if not is_classifier_dir(args.model):
        raise SystemExit(f"{args.model}: no trained classifier (run `make demo` or `duelguard stage train_classifier`)")
    clf = load_classifier(args.model)
    texts = mixed_texts(layout, args.texts)
    suite = suite_records("report")
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": psutil.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "backbone": cfg.backbone.name_or_path,
        "model": str(args.model),
        "mixed_set": length_distribution(texts, clf),
        "predict": {},
    }
    reference = None
    torch_network = clf.model
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNTIMES:
            clf.model = torch_network if name == "torch" else onnx_network(clf, args.model, Path(tmp), name,
                                                                           params.serving.onnx_opset)
            clf.predict_scores(texts[:8])  # load/warm-up outside the clock
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
    clf.model = torch_network
    results["train"] = train_speed(clf, params, texts, args.train_steps)
    atomic_write_json(args.output, results)
    dist = results["mixed_set"]
    print(f"\nclassifier benchmark ({cfg.backbone.name_or_path}; {results['model']})")
    print(f"mixed set: {dist['texts']} texts, words/text {dist['per_text_words']}, {dist['units']} scoring units, "
          f"{dist['too_long_texts']} past the {dist['max_words']}-word bound")
    print(f"{'runtime':<11}{'texts/s':>9}{'wall s':>8}{'CPU s':>8}{'RSS MiB':>9}{'load':>6}  suite avg F1 / max|dp| / flips")
    for name, r in results["predict"].items():
        print(f"{name:<11}{r['texts_per_s']:>9.1f}{r['seconds']:>8.1f}{r['cpu_seconds']:>8.1f}{r['peak_rss_mb']:>9.0f}"
              f"{r['load_average_1m']:>6.1f}  {r['suite_report_half']['avg_f1']:.4f} / "
              f"{r['suite_max_abs_prob_diff_vs_torch']:.2e} / {r['suite_decisions_changed_vs_torch']}")
    print(f"train: {results['train']}; wrote {args.output}")


if __name__ == "__main__":
    main()
