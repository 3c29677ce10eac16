"""What the label-noise policy does to quality: the seed audit's flags (duelguard.seed.audit) at
several confidence levels, and the USE-m + logistic-regression probe trained on the train split with
the flagged rows kept or dropped, scored on the seed test sample and the suite's report half.

    python bench/bench_noise_policy.py [--levels 0.95,0.9,0.85]

Needs data/seed written by prepare_seed (its records carry the audit's out-of-fold score). The
probe is the measuring instrument because it costs seconds per fit; the classifier's own figures
come from the pipeline run with the chosen policy. Writes bench/results/noise_policy.json.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.config import load_params
from duelguard.evalset import evaluation_records
from duelguard.fsio import atomic_write_json
from duelguard.layout import Layout
from duelguard.records import read_records

REPO_ROOT = Path(__file__).resolve().parents[1]
LANGS = ("en", "fr", "es", "de")


def flagged(rec: dict[str, Any], level: float) -> bool:
    p = rec["audit"]["oof_unsafe"]
    return p <= 1.0 - level if any(rec["labels"]) else p >= level


def f1_by_lang(records: list[dict[str, Any]], scores: np.ndarray, threshold: float) -> dict[str, float]:
    from duelguard.metrics import binary_metrics

    out = {}
    for lang in LANGS:
        idx = [i for i, r in enumerate(records) if r["lang"] == lang]
        truth = np.array([any(records[i]["labels"]) for i in idx])
        out[lang] = round(100 * (binary_metrics(truth, scores[idx] > threshold)["f1"] or 0.0), 1)
    return out


def main() -> None:
    from duelguard.classifier.thresholds import best_f1_threshold
    from duelguard.classifier.train import calibration_rows
    from duelguard.encoder import embed_cached
    from duelguard.probe import PROBE_C, Probe

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="0.95,0.9,0.85")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench/results/noise_policy.json")
    args = parser.parse_args()
    params = load_params(REPO_ROOT / "params.yaml", profile="default")
    layout = Layout.from_params(params, root=REPO_ROOT)
    seed = {s: read_records(layout.seed_split(s)) for s in ("train", "dev", "test")}
    if "audit" not in seed["train"][0]:
        raise SystemExit(f"{layout.seed_split('train')}: no audit scores (rerun prepare_seed)")
    # the train split before the policy: under "drop" the flagged train rows live in layout.seed_audit
    present = {r["id"] for r in seed["train"]}
    train = seed["train"] + [r for r in read_records(layout.seed_audit) if r["split"] == "train" and r["id"] not in present]
    calib = calibration_rows(params, layout)
    sets = {name: evaluation_records(name, params, layout) for name in ("test", "suite")}
    vec = {name: embed_cached([r["text"] for r in rows], layout.weights_cache)
           for name, rows in {"train": train, "calib": calib, **sets}.items()}
    every = train + seed["dev"] + seed["test"]
    results: dict[str, Any] = {"rows_audited": len(every), "policy_in_params": params.seed.noise_policy,
                               "flag_above_in_params": params.seed.noise_flag_above, "levels": {}}
    for level in [0.0] + [float(x) for x in args.levels.split(",")]:
        keep = np.array([level == 0.0 or not flagged(r, level) for r in train])
        truth = np.array([any(r["labels"]) for r in train])
        probe = Probe.fit(vec["train"][keep], truth[keep], PROBE_C, seed=0)
        calib_truth = np.array([any(r["labels"]) for r in calib])
        threshold, _ = best_f1_threshold(probe.scores(vec["calib"]), calib_truth, max_fpr=params.classifier.max_calib_fpr)
        entry = {
            "dropped_from_train": int((~keep).sum()),
            "flagged_all_splits_by_source": dict(Counter(r["source"] for r in every if level and flagged(r, level))),
            **{f"{name}_f1": f1_by_lang(rows, probe.scores(vec[name]), threshold) for name, rows in sets.items()},
        }
        results["levels"]["keep_all" if level == 0.0 else f"drop_at_{level}"] = entry
    atomic_write_json(args.output, results)
    print("| policy | rows dropped from train | probe suite F1 en/fr/es/de | probe seed-test F1 en/fr/es/de |")
    print("|---|---|---|---|")
    for name, e in results["levels"].items():
        print(f"| {name} | {e['dropped_from_train']} | {' / '.join(str(v) for v in e['suite_f1'].values())} | "
              f"{' / '.join(str(v) for v in e['test_f1'].values())} |")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
