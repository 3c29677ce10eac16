"""Classifier benchmark (default profile, real Gemma-3-270M weights): training speed, and predict
throughput + peak RSS of the batched path (length-sorted, dynamic padding) against the naive path
the paper timed (batch size 1, every input padded to max_length), on the same texts in one run.

    python bench/bench_classifier.py [--texts 64] [--train-steps 3] [--weights-cache DIR]

Prints a table and writes bench/results/classifier.json. Not a test: figures depend on the machine.
Texts: the seed train split if prepare_seed has run, else a fixed sample of the raw public files
(Alpaca-style requests, harmful instructions, HateCheck fr/es/de, GermEval tweets), so the length
distribution is that of real guardrail inputs either way.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
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
from duelguard.records import read_records
from duelguard.taxonomy import labels_from

REPO_ROOT = Path(__file__).resolve().parents[1]


def bench_texts(layout: Layout, n: int, seed: int = 0) -> tuple[list[str], list[list[int]]]:
    """n (text, labels) pairs: seed train records if present, else a labelled sample of raw files."""
    rng = random.Random(seed)
    if layout.seed_split("train").exists():
        records = read_records(layout.seed_split("train"))
        pool = [(r["text"], r["labels"]) for r in records]
    else:
        raw = layout.raw_data
        harmless = json.loads((raw / "refusal_direction/harmless_train.json").read_text())
        harmful = json.loads((raw / "refusal_direction/harmful_train.json").read_text())
        pool = [(r["instruction"], [0] * 12) for r in harmless[:400]]
        pool += [(r["instruction"], labels_from(["non_violent_crimes"])) for r in harmful[:200]]
        for lang in ("french", "german", "spanish"):
            with (raw / f"hatecheck_multilingual/hatecheck_cases_final_{lang}.csv").open(encoding="utf-8") as f:
                rows = list(csv.DictReader(f))[:150]
            pool += [(r["test_case"], labels_from(["hate"]) if r["label_gold"] == "hateful" else [0] * 12) for r in rows]
        with (raw / "germeval2018/germeval2018.training.txt").open(encoding="utf-8") as f:
            tweets = [line.rstrip("\n").split("\t") for line in f][:150]
        pool += [(t[0], labels_from(["hate"]) if t[1] == "OFFENSE" else [0] * 12) for t in tweets if len(t) >= 2]
    rng.shuffle(pool)
    pool = pool[:n]
    return [t for t, _ in pool], [labels for _, labels in pool]


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


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """(result, wall seconds, CPU seconds, peak RSS MiB) of one call.

    CPU seconds (user + system, all threads) are reported beside wall time because this machine is
    shared: wall time inflates with other load, CPU time much less so."""
    proc = psutil.Process()
    with PeakRSS() as rss:
        cpu0, start = sum(proc.cpu_times()[:2]), time.perf_counter()
        result = fn()
        seconds, cpu = time.perf_counter() - start, sum(proc.cpu_times()[:2]) - cpu0
    return result, seconds, round(cpu, 2), rss.peak_mb


def main() -> None:
    import torch
    from tqdm.auto import tqdm

    from duelguard.backbones import resolve_backbone
    from duelguard.classifier.inference import encode_chunks, score_chunks, score_texts
    from duelguard.classifier.model import GuardClassifier
    from duelguard.classifier.train import fit

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=64, help="texts to predict (both paths score the same ones)")
    parser.add_argument("--train-steps", type=int, default=3, help="optimizer steps of the real training loop")
    parser.add_argument("--weights-cache", default=None, help="override paths.weights_cache (dequantised weights)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench/results/classifier.json")
    args = parser.parse_args()

    params = load_params(REPO_ROOT / "params.yaml", profile="default")
    cfg = params.classifier
    layout = Layout.from_params(params, root=REPO_ROOT)
    texts, labels = bench_texts(layout, max(args.texts, cfg.batch_size * cfg.grad_accum * args.train_steps))
    backbone_dir = resolve_backbone(cfg.backbone, args.weights_cache or params.paths.weights_cache)
    clf = GuardClassifier.from_backbone(backbone_dir, cfg.max_length, cfg.chunk_overlap, pooling=cfg.pooling)
    tok = clf.tokenizer

    # training: a few optimizer steps of the stage's own loop (default-profile batch/accum/freezing)
    n_train = cfg.batch_size * cfg.grad_accum * args.train_steps
    enc = tok(texts[:n_train], truncation=True, max_length=cfg.max_length)["input_ids"]
    history, _, train_cpu, train_rss = timed(lambda: fit(clf, enc, np.array(labels[:n_train]), params, max_steps=args.train_steps))

    # predict: same texts, same model, batched vs naive
    texts = texts[: args.texts]
    chunks = [c for t in texts for c in encode_chunks(tok, t, cfg.max_length, cfg.chunk_overlap, cfg.max_windows).ids]
    batched, batched_s, batched_cpu, batched_rss = timed(
        lambda: score_texts(clf.model, tok, texts, cfg.max_length, cfg.chunk_overlap, cfg.predict_batch_size,
                            cfg.max_windows, progress=True)[0]
    )

    def naive() -> np.ndarray:
        out = np.zeros((len(texts), clf.model.config.num_labels), dtype=np.float32)
        for i, text in enumerate(tqdm(texts, desc="naive", unit="text")):  # one at a time, padded to max_length
            windows = encode_chunks(tok, text, cfg.max_length, cfg.chunk_overlap, cfg.max_windows).ids
            if windows:
                probs = score_chunks(clf.model, windows, tok.pad_token_id, 1, pad_to=cfg.max_length, sort_by_length=False)
                out[i] = probs.max(axis=0)
        return out

    naive_probs, naive_s, naive_cpu, naive_rss = timed(naive)

    lengths = [len(c) for c in chunks]
    results = {
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "profile": "default",
        "backbone": cfg.backbone.name_or_path,
        "max_length": cfg.max_length,
        "train": {
            "optimizer_steps": history["steps"],
            "micro_batch": cfg.batch_size,
            "grad_accum": cfg.grad_accum,
            "freeze_embeddings": cfg.freeze_embeddings,
            "seconds": history["seconds"],
            "seconds_per_step": history["seconds_per_step"],
            "steps_per_s": history["steps_per_s"],
            "examples_per_s": round(history["steps"] * cfg.batch_size * cfg.grad_accum / history["seconds"], 3),
            "cpu_seconds": train_cpu,
            "cpu_seconds_per_step": round(train_cpu / history["steps"], 2),
            "peak_rss_mb": train_rss,
        },
        "predict": {
            "texts": len(texts),
            "windows": len(chunks),
            "mean_tokens": round(float(np.mean(lengths)), 1),
            "batched": {
                "batch_size": cfg.predict_batch_size,
                "seconds": round(batched_s, 3),
                "texts_per_s": round(len(texts) / batched_s, 3),
                "cpu_seconds": batched_cpu,
                "peak_rss_mb": batched_rss,
            },
            "naive": {
                "batch_size": 1,
                "padded_to": cfg.max_length,
                "seconds": round(naive_s, 3),
                "texts_per_s": round(len(texts) / naive_s, 3),
                "cpu_seconds": naive_cpu,
                "peak_rss_mb": naive_rss,
            },
            "speedup": round(naive_s / batched_s, 2),
            "speedup_cpu": round(naive_cpu / batched_cpu, 2) if batched_cpu else None,
            "target_speedup": 5.0,
            "load_average_1m": round(psutil.getloadavg()[0], 2),
            "max_abs_prob_diff": float(np.abs(batched - naive_probs).max()),
        },
    }
    atomic_write_json(args.output, results)
    tr, pr = results["train"], results["predict"]
    print(f"\nclassifier benchmark ({cfg.backbone.name_or_path}, max_length {cfg.max_length}, {results['machine']['cpus']} threads)")
    print(f"{'':<28}{'wall s':>9}{'CPU s':>9}{'rate (wall)':>18}{'peak RSS MiB':>14}")
    print(f"{'train (' + str(tr['optimizer_steps']) + ' steps of 8x2)':<28}{tr['seconds']:>9.1f}{train_cpu:>9.1f}{tr['steps_per_s']:>13.3f} st/s{train_rss:>14.0f}")
    print(f"{'predict batched (bs ' + str(cfg.predict_batch_size) + ')':<28}{batched_s:>9.1f}{batched_cpu:>9.1f}{pr['batched']['texts_per_s']:>10.2f} texts/s{batched_rss:>14.0f}")
    print(f"{'predict naive (bs 1, pad)':<28}{naive_s:>9.1f}{naive_cpu:>9.1f}{pr['naive']['texts_per_s']:>10.2f} texts/s{naive_rss:>14.0f}")
    print(f"speed-up batched/naive: {pr['speedup']}x wall, {pr['speedup_cpu']}x CPU (target >= 5x); max |p_batched - p_naive| = {pr['max_abs_prob_diff']:.2e}")
    print(f"mean window length {pr['mean_tokens']} tokens; wrote {args.output}")


if __name__ == "__main__":
    main()
