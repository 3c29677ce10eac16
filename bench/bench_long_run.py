"""The record of one long loop run (profile `long`, README "The long run"), collected from its checkout.

    python bench/bench_long_run.py --root <checkout after `duelguard loop`> [--label NAME] [--wall-s S]
        [--hand-check-draw 15 --draw-seed 20261207]

A long run takes 1.5-2 hours, so its figures are read once, from what the stages left behind, rather
than re-measured: the stage wall times (metrics/timings, as bench_loop.py reads them), what generation
wrote and curation kept per iteration and language (with each filter's drops), and per classifier what
the promotion gate read (suite report half: F1 per language, benign and look-alike FPR; the gate's
verdict and every refusal reason) beside the evaluate stage's threshold-free figures (AUROC, AUPRC per
language) and its long-text figures (benign FPR and unsafe recall inside benign and cut context). The
gain over the seed-only classifier, with its interval over the draw of prompts, is
bench_significance.py's (`--root` the same checkout).

`--hand-check-draw N` also writes, for people to read, N kept rows drawn at random
(random.Random(draw_seed).sample) from each iteration's curated.jsonl beside their English seeds:
bench/results/long_run_hand_check_<label>.md, with an empty verdict per row to fill in by hand. The
draw depends only on the seed and the files, so anyone can redraw the same rows.

Results: bench/results/long_run.json, one entry per --label (default: the checkout's commit and date).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

from bench_generator import cpu_isa
from bench_loop import stage_timings

from duelguard.config import load_params
from duelguard.fsio import DataError, atomic_write_json, atomic_write_text, read_json
from duelguard.layout import Layout
from duelguard.records import read_records
from duelguard.taxonomy import CATEGORIES, is_unsafe

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "bench" / "results" / "long_run.json"
LANGS = ("en", "fr", "es", "de")


def pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def per_lang(metrics: dict[str, Any], key: str) -> dict[str, float | None]:
    return {lang: pct(metrics.get(f"{key}_{lang}")) for lang in LANGS}


def classifier_record(layout: Layout, iteration: int) -> dict[str, Any]:
    """What the gate read and the evaluate stage measured for classifier `iteration`."""
    evaluation = read_json(layout.metrics / "eval" / f"iter_{iteration}.json")
    promotion_path = layout.metrics / "promotion" / f"iter_{iteration}.json"
    if not promotion_path.exists():
        raise DataError(f"{promotion_path}: classifier {iteration} was never put to the gate; finish the loop first")
    promotion = read_json(promotion_path)
    gate = promotion["candidate_metrics"]
    train = read_json(layout.metrics / "train" / f"iter_{iteration}.json")
    suite, context, cut = evaluation["suite"], evaluation["suite_context"], evaluation["suite_cut"]
    return {
        "suite_report": {
            "f1": {lang: pct(v) for lang, v in gate["f1_by_lang"].items()},
            "recall": {lang: pct(v) for lang, v in gate["recall_by_lang"].items()},
            "auroc": per_lang(suite, "auroc"),
            "auprc": per_lang(suite, "auprc"),
        },
        "benign_fpr": pct(gate["benign_fpr"]),
        "lookalike_fpr": pct(gate.get("lookalike_fpr")),
        "in_context_fpr": pct(context["fpr"]),
        "in_context_recall": per_lang(context, "recall"),
        "cut_context_fpr": pct(cut["fpr"]),
        "threshold": round(evaluation["thresholds"][0], 2),
        "promoted": bool(promotion["promote"]),
        "refused_for": list(promotion.get("reasons", [])),
        "training_rows_per_origin": train.get("examples_per_origin"),
    }


def curation_record(layout: Layout, iteration: int) -> dict[str, Any]:
    report = read_json(layout.curation_report(iteration))
    return {
        "written": report["input"],
        "kept": report["kept"],
        "kept_per_language": {lang: block["kept"] for lang, block in report["per_language"].items()},
        "dropped": {name: n for name, n in report["dropped"].items() if n},
    }


def wall_seconds(layout: Layout) -> float | None:
    """First stage start to last stage end, from the timing records (None if they hold no timestamps)."""
    spans = []
    for path in layout.timings_dir.glob("*.json"):
        rec = read_json(path)
        if "finished_at" in rec:
            end = datetime.datetime.fromisoformat(rec["finished_at"]).timestamp()
            spans.append((end - rec["seconds"], end))
    return round(max(e for _, e in spans) - min(s for s, _ in spans), 1) if spans else None


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cpus": os.cpu_count(), "isa": cpu_isa(), "platform": platform.platform()}


def hand_check_markdown(layout: Layout, iterations: list[int], n: int, seed: int, label: str) -> str:
    """N kept rows per iteration, drawn with random.Random(seed).sample, beside their seeds."""
    lines = [f"# Hand check of kept rows drawn at random from the long run `{label}`", "",
             f"Drawn with `random.Random({seed}).sample(rows, {n})` from each iteration's "
             "`data/synthetic/iter_<i>/curated.jsonl` (bench/bench_long_run.py --hand-check-draw). Faithful = the "
             "sample asks what its English seed asked, details kept (clumsy grammar allowed). Verdicts by hand.", ""]
    k = 0
    for i in iterations:
        rows = read_records(layout.curated(i))
        lines += [f"Iteration {i} ({n} of {len(rows):,} kept rows):", ""]
        for rec in random.Random(seed).sample(rows, n):
            k += 1
            cats = [c for c, on in zip(CATEGORIES, rec["labels"]) if on]
            label_words = "unsafe: " + ", ".join(cats) if is_unsafe(rec["labels"]) else "safe"
            lines.append(f"{k}. {rec['lang']} {label_words} — \"{rec['seed_text']}\" → \"{rec['text']}\" — verdict: ")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="the checkout the long run ran in")
    parser.add_argument("--label", help="entry name in long_run.json (default: <commit>-<date>)")
    parser.add_argument("--wall-s", type=float, help="the run's wall time as `time` measured it (default: "
                        "first stage start to last stage end, from the timing records)")
    parser.add_argument("--command", default="duelguard profile long && duelguard loop --iterations 2",
                        help="how the run was started, for the record")
    parser.add_argument("--hand-check-draw", type=int, metavar="N", help="write N random kept rows per iteration to read")
    parser.add_argument("--draw-seed", type=int, default=20261207)
    args = parser.parse_args()

    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    layout = Layout.from_params(params, root)
    iterations = sorted(int(p.stem.split("_")[1]) for p in (layout.metrics / "eval").glob("iter_*.json"))
    if not iterations or iterations[0] != 0:
        raise DataError(f"{layout.metrics / 'eval'}: no evaluated classifiers; run the loop first")
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    label = args.label or f"{commit}-{datetime.date.today().isoformat()}"
    timings = stage_timings(layout)
    record = {
        "run": {"checkout": commit, "profile": params.profile, "command": args.command, "date": datetime.date.today().isoformat(),
                "loop_stop_min_gain": params.loop.stop_min_gain, "machine": machine(),
                "wall_s": args.wall_s or wall_seconds(layout)},
        "timings_s": {stage: s for stages in timings.values() for stage, s in stages.items()},
        "curation": {f"iter_{i}": curation_record(layout, i) for i in iterations if i >= 1},
        "classifiers": {f"iter_{i}": classifier_record(layout, i) for i in iterations},
    }
    record["kept_total"] = sum(c["kept"] for c in record["curation"].values())
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[label] = record
    atomic_write_json(OUT, results)
    for name, c in record["classifiers"].items():
        f1 = " / ".join(str(c["suite_report"]["f1"][lang]) for lang in LANGS)
        auroc = " / ".join(str(c["suite_report"]["auroc"][lang]) for lang in LANGS)
        print(f"{name}: F1 {f1} | AUROC {auroc} | benign FPR {c['benign_fpr']} look-alike {c['lookalike_fpr']} "
              f"in-context {c['in_context_fpr']} | promoted {c['promoted']}")
        for reason in c["refused_for"]:
            print(f"    refused: {reason}")
    print(f"kept {record['kept_total']:,} rows; wall {record['run']['wall_s']} s; wrote {OUT} [{label}]")
    if args.hand_check_draw:
        path = OUT.with_name(f"long_run_hand_check_{label}.md")
        atomic_write_text(path, hand_check_markdown(layout, [i for i in iterations if i >= 1], args.hand_check_draw,
                                                    args.draw_seed, label))
        print(f"wrote {path} (verdicts to fill in by hand)")


if __name__ == "__main__":
    main()
