"""Would the promotion gate pass a candidate if champion and candidate were both
calibrated with the calibration code of this checkout?

A change to how thresholds are calibrated (duelguard.classifier.train.calibrate_classifier) or how
long text is scored moves both models of a promotion decision. This bench takes two saved classifiers
of one checkout (the champion, e.g. the seed-only classifier, and a loop candidate), recalibrates each
on the checkout's calibration rows exactly as the train stage does, and measures both on both suite
halves: as written (F1, AUROC, unsafe recall per language, benign and look-alike FPR), inside benign
context and inside cut context (benign FPR and unsafe recall per language: promotion.guard_sets).
Then the promotion rules themselves (duelguard.registry.rules.check_rules, the checkout's promotion
params) on those figures, all but the probe rule.
The calibration half informs choices; the report half is what the gate reads.

`--anchored`: the candidate is the champion's heads and the candidate's heads averaged as one ensemble
(duelguard.classifier.sentence.anchored), calibrated afresh: what classifier.anchor_members builds in the
train stage, for checkouts whose loop classifiers were trained before it (anchor_members: 0); on a
checkout that already anchors, it would join the champion's heads a second time.

`--retrain-seed K`: the candidate is trained again on its own rows as the train stage trains it, with
classifier.random_seed K, to see how much a verdict owes to one training seed.

`--language-fpr F` (a what-if, both models): every language's threshold is the lowest grid point that
flags at most F of that language's benign calibration rows (and, as in the stage, at most
classifier.max_context_calib_fpr of its benign prompts in context), above or below the global threshold.
The stage caps a language's threshold at the global one, so a language whose benign rows score high
(English: look-alikes) runs at whatever FPR the other languages' rows set; this compares two models at
the same per-language FPR on the calibration rows, so what differs is their ranking.

`--context-ceiling-all` (a what-if, both models): every language held to classifier.max_context_calib_fpr
in context, the global threshold raised where a language needs it.

Loop classifiers are calibrated with the stage's recall floor (classifier.guard_recall_margin,
duelguard.classifier.train.recall_floor) unless `--no-recall-floor`; `--recall-margin M` (points) sets
its margin instead of the checkout's; `--floor-from-champion` (a what-if) takes the candidate's floor
from the champion (as saved) instead of the seed-only classifier.

    python bench/bench_recalibrated_gate.py --root <checkout after the loop> --champion 0 --candidate 2 \
        [--anchored | --retrain-seed K] [--language-fpr F | --context-ceiling-all]
        [--no-recall-floor | --recall-margin M]

Results: bench/results/recalibrated_gate.json under --label (default: the two iterations).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "bench" / "results" / "recalibrated_gate.json"
LANGS = ("en", "fr", "es", "de")
HALVES = ("calib", "report")


def anchored(params: Any, layout: Any, champion: int, candidate: int) -> Any:
    """Classifier `candidate` with every member of classifier `champion`'s head joined
    (duelguard.classifier.sentence.anchored, what classifier.anchor_members does in the train stage)."""
    from duelguard.classifier.loader import load_classifier
    from duelguard.classifier.sentence import anchored as join, head_members

    anchor = load_classifier(layout.classifier_dir(champion), layout.weights_cache)
    clf = join(load_classifier(layout.classifier_dir(candidate), layout.weights_cache), anchor,
               len(head_members(anchor.model)))
    clf.embed_cache = layout.weights_cache
    return clf


def retrained(params: Any, layout: Any, iteration: int, seed: int) -> Any:
    """Classifier `iteration` trained again on its own files exactly as the train stage trains it
    (bench_loop_data.train_variant: fit_classifier, anchor included), with classifier.random_seed `seed`."""
    from bench_loop_data import train_variant

    from duelguard.classifier.data import training_files
    from duelguard.records import read_records

    records = [r for path in training_files(layout, iteration) for r in read_records(path)]
    cfg = params.classifier.model_copy(update={"random_seed": seed})
    return train_variant(params.model_copy(update={"classifier": cfg}), layout, iteration, records)


def per_language_fpr(target: float) -> None:
    """Make the train stage's calibration (duelguard.classifier.train.language_offsets) place every language at
    `target` benign FPR on its own calibration rows, above or below the global threshold (--language-fpr)."""
    import numpy as np

    import duelguard.classifier.train as train
    from duelguard.classifier.thresholds import context_bound
    from duelguard.classifier.units import logit

    def offsets(scores, truth, langs, threshold, languages, floor, max_fpr, context=None):  # noqa: ANN001, ANN202
        scores, truth, langs = np.asarray(scores), np.asarray(truth, dtype=bool), np.asarray(langs)
        out, report = {}, {}
        for lang in languages:
            benign = scores[(langs == lang) & ~truth]
            own = max(context_bound(benign, target), floor) if len(benign) else threshold
            if context is not None:
                ctx = np.asarray(context[0])[np.asarray(context[1]) == lang]
                own = max(own, context_bound(ctx, context[2])) if len(ctx) else own
            out[lang] = round(float(logit(threshold) - logit(own)), 6)
            report[lang] = {"threshold": float(own), "offset": out[lang], "reason": f"language_fpr_{target}"}
        return out, report

    train.language_offsets = offsets


def context_ceiling_everywhere() -> None:
    """Make the train stage's calibration hold every language to `classifier.max_context_calib_fpr` on its
    benign in-context calibration prompts, the global threshold raised where a language needs more
    (the other languages keep their thresholds through their offsets) (--context-ceiling-all)."""
    import numpy as np

    import duelguard.classifier.train as train
    from duelguard.classifier.units import logit

    original = train.calibrate_classifier

    def calibrate(clf, rows, params, progress=False, floor=None):  # noqa: ANN001, ANN202
        report = original(clf, rows, params, progress)  # without the floor: the ceiling would undo it
        langs = report.get("languages", {})
        own = {lang: max(r["threshold"], r.get("context_bound") or 0.0) for lang, r in langs.items()}
        top = max([float(clf.thresholds.max()), *own.values()])
        clf.thresholds = np.full_like(clf.thresholds, top)
        clf.language_offsets = {lang: round(max(0.0, float(logit(top) - logit(t))), 6) for lang, t in own.items()}
        for lang, r in langs.items():
            r.update(threshold=own[lang], offset=clf.language_offsets[lang])
        return report

    train.calibrate_classifier = calibrate


def measure(root: Path, iteration: int, anchor: int | None = None, seed: int | None = None,
            floor: bool = True, margin: float | None = None, reference: int = 0) -> dict[str, Any]:
    """One classifier of `root` (with `anchor`: its heads and those of iteration `anchor`, as one; with
    `seed`: retrained with that training seed), recalibrated as the train stage calibrates it (with
    `floor`, its recall floor, `margin` replacing classifier.guard_recall_margin), on both halves:
    plain, in context, in cut context."""
    from bench_head_ensemble import rates

    from duelguard.classifier.loader import load_classifier
    from duelguard.classifier.train import calibrate_classifier, calibration_rows, recall_floor
    from duelguard.config import load_params
    from duelguard.layout import Layout
    from duelguard.suite import suite_records
    from duelguard.suite.variants import in_context

    params = load_params(root / "params.yaml")
    layout = Layout.from_params(params, root)
    if seed is not None:
        clf = retrained(params, layout, iteration, seed)
    elif anchor is None:
        clf = load_classifier(layout.classifier_dir(iteration), layout.weights_cache)
    else:
        clf = anchored(params, layout, anchor, iteration)
    report = calibrate_classifier(clf, calibration_rows(params, layout), params,
                                  floor=recall_floor(params, layout, iteration, margin, reference) if floor else None)
    out: dict[str, Any] = {"threshold": round(float(clf.thresholds.max()), 4), "language_offsets": clf.language_offsets,
                           "languages": report.get("languages", {}), "recall_floor": report.get("recall_floor")}
    for half in HALVES:
        rows = suite_records(half)
        out[half] = {"plain": rates(clf, rows), "suite_context": rates(clf, in_context(rows)),
                     "suite_cut": rates(clf, in_context(rows, cut=True))}
    return out


def _metrics(measured: dict[str, Any], half: str, name: str = "plain") -> Any:
    """The promotion rules' VersionMetrics from one set's rates (percent) of `measured`."""
    from duelguard.registry.rules import VersionMetrics

    r = measured[half][name]
    f1 = {lang: r[f"f1_{lang}"] / 100 for lang in LANGS}
    return VersionMetrics(sum(f1.values()) / len(f1), f1, r["fpr"] / 100, lookalike_fpr=r["fpr_lookalike"] / 100,
                          recall_by_lang={lang: r[f"recall_{lang}"] / 100 for lang in LANGS},
                          fpr_by_lang={lang: r[f"fpr_{lang}"] / 100 for lang in LANGS})


def gate(params: Any, champion: dict[str, Any], candidate: dict[str, Any], half: str) -> list[str]:
    """The promotion rules the candidate fails on `half` (duelguard.registry.rules.check_rules, the
    stage's own rules), all but the probe's: a recalibrated or anchored head has no probe of its own."""
    from duelguard.registry.rules import check_rules

    guards = {name: (_metrics(candidate, half, name), _metrics(champion, half, name))
              for name in params.promotion.guard_sets}
    checks = check_rules(_metrics(candidate, half), _metrics(champion, half), params.promotion, guards)
    return [c.detail for c in checks if not c.passed and c.rule != "beats_probe"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="checkout whose models, params and weights cache to use")
    ap.add_argument("--champion", type=int, default=0, help="the champion's iteration")
    ap.add_argument("--candidate", type=int, required=True, help="the candidate's iteration")
    ap.add_argument("--anchored", action="store_true", help="the candidate averaged with the champion's heads")
    ap.add_argument("--retrain-seed", type=int, help="the candidate trained again as the stage trains it, with this "
                    "classifier.random_seed (how much a verdict owes to one training seed)")
    ap.add_argument("--language-fpr", type=float, help="what-if: every language at this benign FPR on its own "
                    "calibration rows, above or below the global threshold (both models)")
    ap.add_argument("--context-ceiling-all", action="store_true", help="what-if: every language held to "
                    "classifier.max_context_calib_fpr in context, the global threshold raised where needed (both models)")
    ap.add_argument("--no-recall-floor", action="store_true", help="what-if: loop classifiers calibrated without "
                    "the stage's recall floor (classifier.guard_recall_margin)")
    ap.add_argument("--recall-margin", type=float, help="the recall floor's margin in points, instead of the "
                    "checkout's classifier.guard_recall_margin")
    ap.add_argument("--floor-from-champion", action="store_true", help="what-if: the candidate's recall floor is "
                    "the champion's recall (+ the margin), not the seed-only classifier's")
    ap.add_argument("--label", help="key under which the results are kept "
                                    "(default: iter_<champion>_vs_<candidate>[_anchored][_seed<K>])")
    args = ap.parse_args()
    if args.anchored and args.retrain_seed is not None:
        raise SystemExit("--anchored and --retrain-seed do not go together: a retrained candidate is anchored as the "
                         "checkout's classifier.anchor_members says")
    from bench_generator import cpu_isa

    from duelguard.config import load_params

    if args.language_fpr is not None:
        per_language_fpr(args.language_fpr)
    if args.context_ceiling_all:
        context_ceiling_everywhere()
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    if args.no_recall_floor and args.recall_margin is not None:
        raise SystemExit("--no-recall-floor and --recall-margin do not go together")
    margin = None if args.recall_margin is None else args.recall_margin / 100
    floor = not args.no_recall_floor
    models = {"champion": measure(root, args.champion, floor=floor, margin=margin),
              "candidate": measure(root, args.candidate, args.champion if args.anchored else None, args.retrain_seed,
                                   floor, margin, args.champion if args.floor_from_champion else 0)}
    result: dict[str, Any] = {**models, "gate": {h: gate(params, models["champion"], models["candidate"], h) for h in HALVES}}
    for half in HALVES:
        for who in ("champion", "candidate"):
            m = models[who][half]
            row = lambda s, k: " / ".join(f"{m[s][f'{k}_{lang}']:.1f}" for lang in LANGS)  # noqa: E731
            print(f"{half:6s} {who:9s} F1 {row('plain', 'f1')} | AUROC {row('plain', 'auroc')} | "
                  f"context FPR {m['suite_context']['fpr']:.1f} recall {row('suite_context', 'recall')} | "
                  f"cut FPR {m['suite_cut']['fpr']:.1f} recall {row('suite_cut', 'recall')}")
        print(f"{half:6s} gate: {'; '.join(result['gate'][half]) or 'passes'}")
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    suffix = ("_anchored" if args.anchored else "") + (f"_seed{args.retrain_seed}" if args.retrain_seed is not None else "") + (
        f"_language_fpr{args.language_fpr}" if args.language_fpr is not None else "") + (
        "_context_ceiling_all" if args.context_ceiling_all else "") + (
        "_no_recall_floor" if args.no_recall_floor else "") + (
        f"_recall_margin{args.recall_margin:g}" if args.recall_margin is not None else "") + (
        "_floor_from_champion" if args.floor_from_champion else "")
    results[args.label or f"iter_{args.champion}_vs_{args.candidate}{suffix}"] = {
        "run": {"command": "python bench/bench_recalibrated_gate.py " + " ".join(
                    f"--{k} {v}" for k, v in (("champion", args.champion), ("candidate", args.candidate)))
                + (" --anchored" if args.anchored else "")
                + (f" --retrain-seed {args.retrain_seed}" if args.retrain_seed is not None else "")
                + (f" --language-fpr {args.language_fpr}" if args.language_fpr is not None else "")
                + (" --context-ceiling-all" if args.context_ceiling_all else "")
                + (" --no-recall-floor" if args.no_recall_floor else "")
                + (f" --recall-margin {args.recall_margin:g}" if args.recall_margin is not None else "")
                + (" --floor-from-champion" if args.floor_from_champion else ""),
                "checkout": str(root), "date": datetime.date.today().isoformat(),
                "cpu": platform.processor() or platform.machine(), "cpu_isa": cpu_isa()}, **result}
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(OUT)


if __name__ == "__main__":
    main()
