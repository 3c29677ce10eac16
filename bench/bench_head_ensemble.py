"""How much does one sentence head depend on its training seed, and what does averaging heads buy?

A text is scored on ~100 units and flagged if any one passes, so which benign sentences a head
happens to overrate decides its false positives on long text, and that can change with the seed
alone. For each iteration given, in a checkout whose loop has written that iteration's training files:

- `--seeds` single heads, head k initialised and trained on classifier.random_seed + k, each
  calibrated as training calibrates (calibrate_classifier on calibration_rows). `--draws own` (what
  the train stage does): head k trains on its own draw of rows, training_set(..., random_seed + k)
  (synthetic samples, framings and context windows drawn with that seed); `--draws shared`: every
  head on the draw of random_seed (the stage before each member had its own);
- ensembles of consecutive groups of `classifier.head_members` of those heads (HeadEnsemble), recalibrated.
  (The stage draws members 2.. from one seeded stream instead: the same kind of draw.)

Every model is measured on both halves of the suite, as written and inside benign context
(duelguard.suite.variants.in_context): F1 and AUROC per language, benign FPR, look-alike FPR. The
calibration half informs choices; the report half is for reporting, never for choosing.

    python bench/bench_head_ensemble.py --root <checkout> --iteration 0 --iteration 1 --seeds 6 --draws own

Results: bench/results/head_ensemble.json under iteration_<i>_<draws> (per model, and mean / min / max
per kind).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "bench" / "results" / "head_ensemble.json"
LANGS = ("en", "fr", "es", "de")
HALVES = ("calib", "report")


def rates(clf: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """F1, AUROC, unsafe recall and benign FPR per language, benign and look-alike FPR overall, in percent."""
    from sklearn.metrics import f1_score, roc_auc_score

    scored = clf.predict_records([{"text": r["text"]} for r in rows])
    flagged = np.array([p["unsafe"] for p in scored])
    score = np.array([p["unsafe_score"] for p in scored])
    truth = np.array([bool(np.any(r["labels"])) for r in rows])
    langs = np.array([r["lang"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    out = {"fpr": 100 * float(flagged[~truth].mean()), "fpr_lookalike": 100 * float(flagged[groups == "lookalike"].mean())}
    for lang in LANGS:
        m = langs == lang
        out[f"f1_{lang}"] = 100 * float(f1_score(truth[m], flagged[m]))
        out[f"auroc_{lang}"] = 100 * float(roc_auc_score(truth[m], score[m]))
        out[f"recall_{lang}"] = 100 * float(flagged[m & truth].mean())
        out[f"fpr_{lang}"] = 100 * float(flagged[m & ~truth].mean())
    return {k: round(v, 2) for k, v in out.items()}


def measure(clf: Any) -> dict[str, Any]:
    from duelguard.suite import suite_records
    from duelguard.suite.variants import in_context

    out: dict[str, Any] = {"threshold": round(float(clf.thresholds.max()), 4), "language_offsets": clf.language_offsets}
    for half in HALVES:
        rows = suite_records(half)
        out[half] = {"plain": rates(clf, rows), "in_context": rates(clf, in_context(rows))}
    return out


def summary(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, min and max over models of every figure (per half and setting)."""
    out: dict[str, Any] = {}
    for half in HALVES:
        for setting in ("plain", "in_context"):
            keys = models[0][half][setting]
            values = {k: [m[half][setting][k] for m in models] for k in keys}
            out[f"{half}/{setting}"] = {k: {"mean": round(float(np.mean(v)), 2), "min": min(v), "max": max(v)}
                                        for k, v in values.items()}
    return out


def run_iteration(root: Path, iteration: int, seeds: int, draws: str) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from duelguard.classifier.sentence import SentenceGuard, first_window, fit_head
    from duelguard.classifier.train import calibrate_classifier, calibration_rows, training_set
    from duelguard.config import load_params
    from duelguard.encoder import ENCODER, ENCODER_DIM, embed_cached
    from duelguard.layout import Layout

    params = load_params(root / "params.yaml")
    layout = Layout.from_params(params, root)
    cfg = params.classifier
    if cfg.backbone.kind != "sentence":
        raise SystemExit(f"classifier.backbone.kind is {cfg.backbone.kind!r}: this bench is about sentence heads")
    calib = calibration_rows(params, layout)

    def draw(seed: int) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        _, _, train, weights = training_set(params, layout, iteration, seed)
        vectors = embed_cached([first_window(r["text"], cfg.max_length) for r in train], layout.weights_cache)
        return len(train), (vectors, np.array([r["labels"] for r in train]), weights)

    shared = draw(cfg.random_seed)

    def fresh(members: int) -> SentenceGuard:
        clf = SentenceGuard.fresh(ENCODER, ENCODER_DIM, cfg.head_hidden, cfg.head_dropout, cfg.max_length,
                                  cfg.chunk_overlap, cfg.long_input, cfg.default_threshold, members=members)
        clf.embed_cache = layout.weights_cache
        return clf

    singles, results = [], {"single": [], "ensemble": []}
    for k in tqdm(range(seeds), desc=f"iteration {iteration}: single heads"):
        seed = cfg.random_seed + k
        torch.manual_seed(seed)
        clf = fresh(1)
        rows, data = shared if draws == "shared" else draw(seed)
        fit_head(clf, [data], cfg.learning_rate, cfg.batch_size, int(cfg.epochs),
                 cfg.early_stopping_patience, cfg.weight_decay, seed, progress=False)
        calibrate_classifier(clf, calib, params)
        singles.append(clf)
        results["single"].append({"seed": seed, "training_rows": rows, **measure(clf)})
    size = cfg.head_members
    for start in range(0, seeds - size + 1, size):
        group = singles[start : start + size]
        ensemble = fresh(size)
        for member, single in zip(ensemble.model.members, group):
            member.load_state_dict(single.model.state_dict())
        calibrate_classifier(ensemble, calib, params)
        results["ensemble"].append({"seeds": [cfg.random_seed + start + j for j in range(size)], **measure(ensemble)})
    return {"draws": draws, "head_members": size, **results,
            "summary": {kind: summary(models) for kind, models in results.items() if models}}


def show(iteration: int, result: dict[str, Any]) -> None:
    for kind in ("single", "ensemble"):
        for model in result[kind]:
            for half in HALVES:
                plain, ctx = model[half]["plain"], model[half]["in_context"]
                f1 = " / ".join(f"{plain[f'f1_{lang}']:.1f}" for lang in LANGS)
                auroc = " / ".join(f"{plain[f'auroc_{lang}']:.1f}" for lang in LANGS)
                print(f"iteration {iteration} {kind:8s} {str(model.get('seed', model.get('seeds'))):12s} {half:6s} "
                      f"F1 {f1} | AUROC {auroc} | look-alike FPR {plain['fpr_lookalike']:.1f} | "
                      f"in-context FPR {ctx['fpr']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO_ROOT, help="checkout whose params, data and weights cache to use")
    ap.add_argument("--iteration", type=int, action="append", required=True, help="classifier iteration (repeatable)")
    ap.add_argument("--seeds", type=int, default=6, help="single heads per iteration")
    ap.add_argument("--draws", choices=("own", "shared"), default="own",
                    help="head k on its own draw of training rows (seed + k, as the stage does) or all on one")
    args = ap.parse_args()
    from bench_generator import cpu_isa

    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    run = {"command": "python bench/bench_head_ensemble.py " + " ".join(
        [f"--iteration {i}" for i in args.iteration] + [f"--seeds {args.seeds}", f"--draws {args.draws}"]),
        "date": datetime.date.today().isoformat(), "cpu": platform.processor() or platform.machine(),
        "cpu_isa": cpu_isa()}
    for iteration in args.iteration:
        result = run_iteration(args.root.resolve(), iteration, args.seeds, args.draws)
        results[f"iteration_{iteration}_{args.draws}"] = {"run": run, **result}
        show(iteration, result)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(OUT)


if __name__ == "__main__":
    main()
