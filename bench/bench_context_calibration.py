"""Why is a classifier's in-context FPR what it is, and can its threshold fix it?

A long text is read as many windows and flagged if any one is, so a classifier that misreads one
ordinary sentence in a hundred flags a third of 1,000-word benign texts. For each model given:

- **pool**: how many of the benign context pool's sentences and adjacent pairs
  (duelguard.suite.variants.context_sentences, every language) it flags alone, at its own thresholds;
- **thresholds as trained** and **recalibrated with long text**: the training stage's calibration
  (duelguard.classifier.thresholds: global rule + language offsets, params.classifier) on its
  calibration rows, then on those rows plus long benign texts built from the dev split's safe rows
  (400 and 1,000 words, `--long-per-length` per language and length); for each, F1 per language on
  the suite's calibration half and benign FPR with those rows inside context.

Everything is measured on the calibration half (duelguard.suite), never the report half the gate
and the README's quality tables read: this bench informs choices.

    python bench/bench_context_calibration.py --model models/classifier/iter_0 --model models/classifier/iter_1

Run from a checkout whose seed is prepared (the dev split); results under each model's path in
bench/results/context_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "bench" / "results" / "context_calibration.json"
LANGS = ("en", "fr", "es", "de")
LONG_WORDS = (400, 1000)


def long_benign(dev: list[dict[str, Any]], per_length: int, seed: int = 0) -> list[dict[str, Any]]:
    """Safe dev rows of one language joined into texts of at least 400 / 1,000 words."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for lang in LANGS:
        pool = [r["text"] for r in dev if r["lang"] == lang and not any(r["labels"])]
        for words in LONG_WORDS:
            for _ in range(per_length if pool else 0):
                parts: list[str] = []
                while sum(len(p.split()) for p in parts) < words:
                    parts.append(rng.choice(pool))
                out.append({"text": " ".join(parts), "lang": lang, "labels": [0] * 12})
    return out


def suite_rates(clf: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """F1 per language and benign FPR (overall and per language) at the classifier's thresholds."""
    from sklearn.metrics import f1_score

    flagged = np.array([p["unsafe"] for p in clf.predict_records([{"text": r["text"]} for r in rows])])
    truth = np.array([bool(np.any(r["labels"])) for r in rows])
    langs = np.array([r["lang"] for r in rows])
    out = {"fpr": round(float(flagged[~truth].mean()), 4)}
    for lang in LANGS:
        m = langs == lang
        out[f"f1_{lang}"] = round(float(f1_score(truth[m], flagged[m])), 4)
        out[f"fpr_{lang}"] = round(float(flagged[m & ~truth].mean()), 4)
    return out


def measure(model: Path, per_length: int) -> dict[str, Any]:
    from duelguard.classifier.loader import load_classifier
    from duelguard.classifier.train import calibrate_classifier, calibration_rows
    from duelguard.config import load_params
    from duelguard.layout import Layout
    from duelguard.records import read_records
    from duelguard.suite import suite_records
    from duelguard.suite.variants import context_sentences, in_context

    params = load_params(REPO_ROOT / "params.yaml")
    layout = Layout.from_params(params, REPO_ROOT)
    clf = load_classifier(model, layout.weights_cache)

    texts = []
    for lang in LANGS:
        lines = context_sentences(lang)
        texts += list(lines) + [f"{a} {b}" for a, b in zip(lines, lines[1:])]
    pool_flagged = sum(p["unsafe"] for p in clf.predict_records([{"text": t} for t in texts]))
    result: dict[str, Any] = {"pool": {"texts": len(texts), "flagged": int(pool_flagged)}}

    calib = calibration_rows(params, layout)
    longs = long_benign(read_records(layout.seed_split("dev")), per_length)
    suite = suite_records("calib")
    placed = in_context(suite)
    for name, rows in (("as_trained", calib), ("with_long_text", calib + longs)):
        calibrate_classifier(clf, rows, params)
        result[name] = {"threshold": round(float(clf.thresholds.max()), 4), "language_offsets": clf.language_offsets,
                        "long_texts": len(rows) - len(calib),
                        "plain": suite_rates(clf, suite), "in_context": suite_rates(clf, placed)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, action="append", required=True, help="classifier directory (repeatable)")
    ap.add_argument("--long-per-length", type=int, default=30, help="long benign texts per language and length")
    args = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for model in args.model:
        r = results[str(model)] = measure(model, args.long_per_length)
        print(f"{model}: pool {r['pool']['flagged']}/{r['pool']['texts']} flagged")
        for name in ("as_trained", "with_long_text"):
            m = r[name]
            f1 = " / ".join(f"{100 * m['plain'][f'f1_{lang}']:.1f}" for lang in LANGS)
            ctx = " / ".join(f"{100 * m['in_context'][f'fpr_{lang}']:.1f}" for lang in LANGS)
            print(f"  {name:15s} threshold {m['threshold']:.2f}  F1 {f1}  in-context FPR "
                  f"{100 * m['in_context']['fpr']:.1f} ({ctx})")
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(OUT)


if __name__ == "__main__":
    main()
