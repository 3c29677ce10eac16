"""Which part of the loop's data moves which figure: the classifier of one iteration retrained on
variants of its training rows, over several training seeds.

A loop classifier gains fr/de F1 and AUROC and still loses the promotion gate, mostly on benign text
inside long context (in-context FPR). To find which rows do that, each variant below is trained the
way the train stage trains (an ensemble of classifier.head_members heads, member k on its own draw of
rows with random_seed + k; duelguard.classifier.train.training_rows) and calibrated the way it
calibrates (calibrate_classifier on calibration_rows), once per training seed:

- `seed_only`: iteration 0's files (the seed-only classifier, the champion to beat);
- `all`: every file of the iteration, as the stage trains it (with the seed-only members the
  checkout's classifier.anchor_members asks for, from its classifier 0);
- `no_synthetic_unsafe` / `no_synthetic_safe`: the loop's unsafe (safe) samples left out;
- `synthetic_safe_x2`: every safe loop sample twice;
- `unsafe_similarity_0.8`: unsafe loop samples kept only at seed similarity >= STRICT_SIMILARITY (stricter than curation.min_similarity);
- `no_context_windows`: classifier.context_augment 0 (no training row inside benign text);
  `seed_only_no_context_windows`: the same for the seed-only classifier.

Measured on both halves of the suite, as written and inside benign context (bench_head_ensemble.measure):
the calibration half informs choices, the report half is for reporting.

    python bench/bench_loop_data.py --root <checkout after the loop> --iteration 2 --seeds 2 [--variant all ...]

Results: bench/results/loop_data.json under iteration_<i> (per variant: per seed, and mean / min / max).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any


REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "bench" / "results" / "loop_data.json"
Rows = list[dict[str, Any]]
STRICT_SIMILARITY = 0.8  # a stricter bar for unsafe samples than curation.min_similarity (README, "Look-alike seeds and volume")


def _synthetic(rec: dict[str, Any], unsafe: bool) -> bool:
    return rec["origin"] == "synthetic" and bool(any(rec["labels"])) == unsafe


# variant -> (which iteration's files, row filter, classifier overrides)
VARIANTS: dict[str, tuple[str, Callable[[Rows], Rows], dict[str, Any]]] = {
    "seed_only": ("seed", lambda rows: rows, {}),
    "all": ("iteration", lambda rows: rows, {}),
    "no_synthetic_unsafe": ("iteration", lambda rows: [r for r in rows if not _synthetic(r, True)], {}),
    "no_synthetic_safe": ("iteration", lambda rows: [r for r in rows if not _synthetic(r, False)], {}),
    "synthetic_safe_x2": ("iteration", lambda rows: rows + [{**r, "id": f"{r['id']}#2"} for r in rows
                                                           if _synthetic(r, False)], {}),
    "unsafe_similarity_0.8": ("iteration", lambda rows: [r for r in rows if not _synthetic(r, True)
                                                         or r["similarity"] >= STRICT_SIMILARITY], {}),
    "no_context_windows": ("iteration", lambda rows: rows, {"context_augment": 0.0}),
    "seed_only_no_context_windows": ("seed", lambda rows: rows, {"context_augment": 0.0}),
}


def train_variant(params: Any, layout: Any, iteration: int, records: Rows) -> Any:
    """A classifier trained and calibrated on `records` exactly as the train stage trains classifier
    `iteration` (train.fit_classifier, then calibrate_classifier with its recall floor), with
    params.classifier.random_seed."""
    from duelguard.classifier.train import (calibrate_classifier, calibration_rows, fit_classifier, recall_floor,
                                            training_rows)

    train, weights = training_rows(records, params, params.classifier.random_seed)
    clf, _ = fit_classifier(params, layout, iteration, records, train, weights)
    calibrate_classifier(clf, calibration_rows(params, layout), params, floor=recall_floor(params, layout, iteration))
    return clf


def run_iteration(root: Path, iteration: int, seeds: int, variants: list[str]) -> dict[str, Any]:
    from bench_head_ensemble import measure, summary
    from tqdm.auto import tqdm

    from duelguard.classifier.data import training_files
    from duelguard.config import load_params
    from duelguard.layout import Layout
    from duelguard.records import read_records

    base = load_params(root / "params.yaml")
    layout = Layout.from_params(base, root)
    if base.classifier.backbone.kind != "sentence":
        raise SystemExit(f"classifier.backbone.kind is {base.classifier.backbone.kind!r}: this bench retrains sentence heads")
    files = {"seed": training_files(layout, 0), "iteration": training_files(layout, iteration)}
    out: dict[str, Any] = {}
    for name in variants:
        which, select, overrides = VARIANTS[name]
        records = select([r for path in files[which] for r in read_records(path)])
        models = []
        for k in tqdm(range(seeds), desc=f"iteration {iteration} {name}"):
            seed = base.classifier.random_seed + k
            cfg = base.classifier.model_copy(update={**overrides, "random_seed": seed})
            # a seed-only variant trains as classifier 0 does: no anchor (classifier.anchor_members)
            clf = train_variant(base.model_copy(update={"classifier": cfg}), layout, 0 if which == "seed" else iteration,
                                records)
            models.append({"seed": seed, "rows": len(records), **measure(clf)})
            show(iteration, name, models[-1])
        out[name] = {"models": models, "summary": summary(models)}
    return out


def show(iteration: int, name: str, model: dict[str, Any]) -> None:
    langs = ("en", "fr", "es", "de")
    for half in ("calib", "report"):
        plain, ctx = model[half]["plain"], model[half]["in_context"]
        f1 = " / ".join(f"{plain[f'f1_{lang}']:.1f}" for lang in langs)
        auroc = " / ".join(f"{plain[f'auroc_{lang}']:.1f}" for lang in langs)
        ctx_fpr = " / ".join(f"{ctx[f'fpr_{lang}']:.1f}" for lang in langs)
        print(f"iteration {iteration} {name:20s} seed {model['seed']} {half:6s} F1 {f1} | AUROC {auroc} | "
              f"look-alike FPR {plain['fpr_lookalike']:.1f} | in-context FPR {ctx['fpr']:.1f} ({ctx_fpr})", flush=True)


def save(iteration: int, result: dict[str, Any], command: str, **run_extra: Any) -> None:
    """Merge `result` (variant -> figures) into OUT under iteration_<iteration>, each variant with how it
    was run; other entries are kept (atomic write)."""
    from bench_generator import cpu_isa

    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    run = {"command": command, "date": datetime.date.today().isoformat(),
           "cpu": platform.processor() or platform.machine(), "cpu_isa": cpu_isa(), **run_extra}
    entry = results.setdefault(f"iteration_{iteration}", {})
    for name, value in result.items():
        entry[name] = {"run": run, **value}
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(OUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO_ROOT, help="checkout whose params, data and weights cache to use")
    ap.add_argument("--iteration", type=int, required=True, help="the loop iteration whose training rows to vary (>= 1)")
    ap.add_argument("--seeds", type=int, default=2, help="training seeds per variant (random_seed, +1, ...)")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                    help="variants to train (repeatable; default: all of them)")
    args = ap.parse_args()
    if args.iteration < 1:
        raise SystemExit("--iteration must be a loop iteration (>= 1): iteration 0 has no loop data to vary")
    variants = args.variant or list(VARIANTS)
    result = run_iteration(args.root.resolve(), args.iteration, args.seeds, variants)
    save(args.iteration, result, f"python bench/bench_loop_data.py --iteration {args.iteration} --seeds {args.seeds} "
         + " ".join(f"--variant {v}" for v in variants))


if __name__ == "__main__":
    main()
