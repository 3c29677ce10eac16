"""Backbone comparison for the CPU default: each candidate trained by the real train_classifier stage
on the same seed (a per-candidate row budget, so slow backbones get a comparable wall-clock), then
evaluated by the real evaluate stage on the behavioural suite's report half and the seed test
sample, with predict throughput on the mixed-length set of bench_classifier.py.

    python bench/bench_backbones.py [--candidates sentence,e5,gemma] [--gemma-rows 1200] [--texts 200]

Candidates: `sentence` (the default profile: frozen USE-m + gated MLP head), `e5` (the e5 profile:
top 4 layers of multilingual-e5-small fine-tuned), `gemma` (the e5 profile's token-model settings on
the packaged Gemma-3-270M). Needs data/seed (run `duelguard stage prepare_seed`). The frozen-encoder
floor (USE-m + logistic regression) is each run's probe, so it is reported beside every candidate. Writes
bench/results/backbones.json and prints the table the README carries. Minutes per candidate.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
from duelguard.config import load_params
from duelguard.fsio import atomic_write_json, read_json
from duelguard.layout import Layout
from duelguard.records import read_records, write_records

REPO_ROOT = Path(__file__).resolve().parents[1]
LANGS = ("en", "fr", "es", "de")
# What differs per candidate: the backbone and the settings its size needs on two CPU cores.
GEMMA = {
    "backbone": "generator",  # the packaged Gemma-3-270M GGUF: the default profile's generator backbone
    "pooling": "last", "learning_rate": 5e-5, "head_lr_multiplier": 1.0, "batch_size": 8, "grad_accum": 2,
    "train_top_layers": 6, "predict_batch_size": 16,
}


def subsample(rows: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n rows, stratified by language x safe/unsafe."""
    if n >= len(rows):
        return rows
    strata: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        strata[r["lang"], any(r["labels"])].append(r)
    rng = random.Random(seed)
    out = []
    for key in sorted(strata):
        out += rng.sample(strata[key], round(n * len(strata[key]) / len(rows)))
    return out


def run_candidate(name: str, profile: str, overrides: dict[str, Any], train_rows: int | None,
                  texts: list[str]) -> dict[str, Any]:
    from duelguard.classifier.loader import load_classifier
    from duelguard.evaluation.evaluate import evaluate_classifier
    from duelguard.pipeline.spec import run_stage

    params = load_params(REPO_ROOT / "params.yaml", profile=profile)
    if overrides.get("backbone") == "generator":
        overrides = {**overrides, "backbone": load_params(REPO_ROOT / "params.yaml", "default").generator.backbone}
    params = params.model_copy(update={"classifier": params.classifier.model_copy(update=overrides)})
    source = Layout.from_params(params, root=REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        layout = dataclasses.replace(Layout.from_params(params, root=tmp), weights_cache=source.weights_cache)
        shutil.copytree(source.seed_dir, layout.seed_dir)
        train = read_records(layout.seed_split("train"))
        if train_rows is not None:
            write_records(layout.seed_split("train"), subsample(train, train_rows))
        started = time.perf_counter()
        run_stage("train_classifier", params, layout, 0)
        train_s = time.perf_counter() - started
        metrics = read_json(layout.train_metrics(0))
        evaluate_classifier(params, layout, 0)
        evaluation = read_json(layout.eval_metrics(0))
        clf = load_classifier(layout.classifier_dir(0))
        started = time.perf_counter()
        clf.predict_scores(texts, batch_size=params.classifier.predict_batch_size)
        predict_s = time.perf_counter() - started
    suite, test = evaluation["suite"], evaluation["test"]
    return {
        "backbone": params.classifier.backbone.name_or_path,
        "profile": params.profile,
        "train_rows": metrics["n_examples"],
        "train_stage_seconds": round(train_s, 1),
        "train_rows_per_s": metrics["rows_per_s"],
        "predict_texts_per_s": round(len(texts) / predict_s, 2),
        "load_average_1m": round(psutil.getloadavg()[0], 2),
        "suite_f1": {lang: suite.get(f"f1_{lang}") for lang in LANGS},
        "suite_fpr_lookalike": suite.get("fpr_lookalike"),
        "test_f1": {lang: test.get(f"f1_{lang}") for lang in LANGS},
        "probe_suite_f1": {lang: suite.get(f"probe_f1_{lang}") for lang in LANGS},
        "probe_suite_fpr_lookalike": suite.get("probe_fpr_lookalike"),
        "probe_test_f1": {lang: test.get(f"probe_f1_{lang}") for lang in LANGS},
    }


def main() -> None:
    from bench_classifier import mixed_texts

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default="sentence,e5,gemma")
    parser.add_argument("--gemma-rows", type=int, default=1200, help="train rows for Gemma (~3 min on 2 cores)")
    parser.add_argument("--texts", type=int, default=200, help="texts in the mixed-length predict set")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench/results/backbones.json")
    args = parser.parse_args()

    # One MLflow store for every candidate's runs (each candidate's temporary root would otherwise
    # hold its own sqlite store, and reopening a second one in the same process failed as read-only).
    store = Path(tempfile.mkdtemp(prefix="bench-backbones-mlflow-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
    params = load_params(REPO_ROOT / "params.yaml", profile="default")
    texts = mixed_texts(Layout.from_params(params, root=REPO_ROOT), args.texts)
    plans = {"sentence": ("default", {}, None), "e5": ("e5", {}, None), "gemma": ("e5", GEMMA, args.gemma_rows)}
    results = {name: run_candidate(name, *plans[name], texts) for name in args.candidates.split(",")}
    atomic_write_json(args.output, results)
    print("| backbone | train rows | train rows/s | predict texts/s | suite F1 en/fr/es/de | look-alike FPR | seed test F1 en/fr/es/de |")
    print("|---|---|---|---|---|---|---|")

    def f1s(d: dict[str, float | None]) -> str:
        return " / ".join("n/a" if d[lang] is None else f"{100 * d[lang]:.1f}" for lang in LANGS)

    for name, r in results.items():
        print(f"| {name} | {r['train_rows']} | {r['train_rows_per_s']} | {r['predict_texts_per_s']} | {f1s(r['suite_f1'])} | "
              f"{r['suite_fpr_lookalike']:.2f} | {f1s(r['test_f1'])} |")
        print(f"| USE-m + LR probe (same rows as {name}) | {r['train_rows']} | | | {f1s(r['probe_suite_f1'])} | "
              f"{r['probe_suite_fpr_lookalike']:.2f} | {f1s(r['probe_test_f1'])} |")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
