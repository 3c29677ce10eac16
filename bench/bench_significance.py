"""Are a loop classifier's gains real? Paired bootstrap of the suite's per-language F1, candidate - baseline.

    python bench/bench_significance.py [--root <demo checkout>] [--baseline 0] [--candidates 1,2]
                                       [--sets suite,suite_context,suite_cut] [--resamples 4000]

The promotion gate and the README compare classifiers on the suite's report half: 126 prompts per
language, of which 72 unsafe. At that size one prompt moves a language's F1 by 1-2 points, so a gain of
a few points may be the draw of prompts, not the model. This scores the baseline and each candidate on
the same report-half rows (each with its own thresholds, exactly as the evaluate stage does: the F1s it
prints are the gate's), then resamples the prompts of each language with replacement (a prompt's variants
in context, 3 per prompt, drawn together), the same resample for both models (paired: what the two get
right together cancels), and reports per language and for the fr / es / de mean:

- each model's F1 and the difference, with its 95% percentile interval over the resamples;
- the share of resamples in which the candidate does not beat the baseline (a one-sided p-value's
  bootstrap estimate).

Writes bench/results/significance.json (every run kept, with its command) and significance.png (the
differences with their intervals, per set and language). Reads only what a demo checkout has:
models/classifier/iter_<i> and the suite bundled with the package; scoring uses the checkout's
weights cache. Not a test: it reads trained models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.config import load_params
from duelguard.fsio import atomic_write_json
from duelguard.layout import Layout
from duelguard.taxonomy import TARGET_LANGUAGES

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
FR_ES_DE = ("fr", "es", "de")


def decisions(layout: Layout, iteration: int, records: list[dict[str, Any]], batch_size: int) -> np.ndarray:
    """Classifier `iteration`'s unsafe decision per record, with its own thresholds (as evaluate_model)."""
    from duelguard import metrics as M
    from duelguard.classifier.loader import load_classifier

    clf = load_classifier(layout.classifier_dir(iteration), layout.weights_cache)
    probs = clf.predict_proba([r["text"] for r in records], batch_size=batch_size, progress=True)
    flagged, _ = M.unsafe_predictions(np.asarray(probs), clf.thresholds)
    return flagged


def _pts(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(100 * float(value), 1)


def compare(truth: np.ndarray, langs: np.ndarray, items: np.ndarray, base: np.ndarray, cand: np.ndarray,
            resamples: int, seed: int) -> dict[str, Any]:
    """Per language (duelguard.metrics.paired_bootstrap_f1) and for the fr/es/de mean, in points."""
    from duelguard.metrics import paired_bootstrap_f1

    per_lang = paired_bootstrap_f1(truth, langs, base, cand, resamples, seed, clusters=items)
    out: dict[str, Any] = {}
    for lang in [code for code in TARGET_LANGUAGES if code in per_lang]:
        row = per_lang[lang]
        out[lang] = {"n": row["n"], "items": row["items"], "unsafe": row["positives"], "baseline_f1": _pts(row["baseline_f1"]),
                     "candidate_f1": _pts(row["candidate_f1"]), "delta": _pts(row["delta"]),
                     "delta_ci95": [_pts(v) for v in row["delta_ci95"]],
                     "share_not_better": round(row["share_not_better"], 3),
                     "rows_decided_differently": row["decided_differently"]}
    if all(lang in per_lang for lang in FR_ES_DE):
        mean = np.mean([per_lang[lang]["deltas"] for lang in FR_ES_DE], axis=0)
        lo, hi = np.nanpercentile(mean, [2.5, 97.5])
        out["fr_es_de_mean"] = {"delta": _pts(np.mean([per_lang[lang]["delta"] for lang in FR_ES_DE])),
                                "delta_ci95": [_pts(lo), _pts(hi)],
                                "share_not_better": round(float(np.mean(~(mean > 0))), 3)}
    return out


def plot(results: dict[str, dict[str, dict[str, Any]]], title: str, path: Path) -> None:
    """One panel per evaluation set: each candidate's F1 difference per language, with its 95% interval."""
    from duelguard.plotting import pyplot, save_png

    plt = pyplot()
    sets = list(next(iter(results.values())))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], sets):
        for k, (label, per_set) in enumerate(results.items()):
            rows = per_set[name]
            keys = [key for key in [*TARGET_LANGUAGES, "fr_es_de_mean"] if key in rows]
            x = np.arange(len(keys)) + 0.15 * (k - (len(results) - 1) / 2)
            mid = [rows[key]["delta"] for key in keys]
            lo = [rows[key]["delta"] - rows[key]["delta_ci95"][0] for key in keys]
            hi = [rows[key]["delta_ci95"][1] - rows[key]["delta"] for key in keys]
            ax.errorbar(x, mid, yerr=[lo, hi], fmt="o", capsize=3, label=label)
            ax.set_xticks(np.arange(len(keys)), [key.replace("fr_es_de_mean", "fr/es/de") for key in keys])
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(name)
    axes[0][0].set_ylabel("F1 difference, points (95% interval)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO_ROOT),
                        help="a checkout whose models/classifier/iter_<i> exist (default: this one, after make demo)")
    parser.add_argument("--baseline", type=int, default=0)
    parser.add_argument("--candidates", default="1,2")
    parser.add_argument("--sets", default="suite,suite_context,suite_cut")
    parser.add_argument("--resamples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--label", default=None, help="a name for this run (default: the root's folder)")
    parser.add_argument("--output", default=str(RESULTS / "significance.json"))
    args = parser.parse_args()
    from duelguard.evalset import evaluation_records

    root = Path(args.root).resolve()
    params = load_params(root / "params.yaml")
    layout = Layout.from_params(params, root)
    candidates = [int(c) for c in args.candidates.split(",") if c.strip()]
    for i in [args.baseline, *candidates]:
        if not layout.classifier_dir(i).is_dir():
            raise SystemExit(f"{layout.classifier_dir(i)}: missing (run the loop to iteration {i} first)")
    results: dict[str, dict[str, Any]] = {f"{c} vs {args.baseline}": {} for c in candidates}
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        records = evaluation_records(name, params, layout)
        truth = np.asarray([any(r["labels"]) for r in records])
        langs = np.asarray([r["lang"] for r in records])
        items = np.asarray([f'{r["lang"]}:{r.get("item", r["id"])}' for r in records])  # a prompt's variants: one draw
        print(f"== {name}: {len(records)} rows", flush=True)
        base = decisions(layout, args.baseline, records, params.classifier.predict_batch_size)
        for c in candidates:
            cand = decisions(layout, c, records, params.classifier.predict_batch_size)
            results[f"{c} vs {args.baseline}"][name] = compare(truth, langs, items, base, cand, args.resamples,
                                                                   args.seed)
            print(f"-- classifier {c} vs {args.baseline}", flush=True)
            for key, row in results[f"{c} vs {args.baseline}"][name].items():
                figures = f"{row['baseline_f1']} -> {row['candidate_f1']}, " if "baseline_f1" in row else ""
                print(f"   {key:14s} {figures}delta {row['delta']:+.1f} [{row['delta_ci95'][0]:+.1f}, "
                      f"{row['delta_ci95'][1]:+.1f}], not better in {100 * row['share_not_better']:.1f}% of "
                      "resamples", flush=True)
    out = Path(args.output)
    runs = json.loads(out.read_text()).get("runs", []) if out.exists() else []
    run = {"command": f"python bench/bench_significance.py --root <{args.label or root.name}> --baseline "
                      f"{args.baseline} --candidates {args.candidates} --sets {args.sets} --resamples "
                      f"{args.resamples} --seed {args.seed}",
           "label": args.label or root.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}
    atomic_write_json(out, {"runs": [*runs, run]})
    plot(results, f"{run['label']}: classifier - classifier {args.baseline}, suite report half", out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
