"""How often does a classifier flag benign long text with nothing unsafe in it?

`suite_context` (promotion.guard_sets) places the suite's benign prompts inside 100-1,000 words of
everyday padding (duelguard.suite.variants), so its FPR mixes two causes: a look-alike prompt flagged
wherever it stands, and the padding itself read as unsafe. This bench separates them on one suite half:
for each classifier, the share of benign prompts flagged in context, of those the share whose prompt is
safe on its own, and the share of the **padding alone** (the very padding each of those texts holds,
without the prompt) that is flagged, per language and length. The padding alone is what a guard in
front of long documents (a RAG context, a pasted e-mail thread) sees most.

    python bench/bench_padding_fpr.py --root <checkout after the loop> --iteration 0 --iteration 1 [--half report]

Results: bench/results/padding_fpr.json under --label (default: <root name>-<half>), per iteration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "bench" / "results" / "padding_fpr.json"


def measure(root: Path, iteration: int, half: str) -> dict[str, Any]:
    """One classifier of `root`, as saved (its thresholds and language offsets), on `half`'s benign prompts."""
    import numpy as np

    from duelguard.classifier.loader import load_classifier
    from duelguard.config import load_params
    from duelguard.layout import Layout
    from duelguard.suite import suite_records
    from duelguard.suite.variants import in_context

    params = load_params(root / "params.yaml")
    layout = Layout.from_params(params, root)
    clf = load_classifier(layout.classifier_dir(iteration), layout.weights_cache)
    rows = [r for r in suite_records(half) if not any(r["labels"])]
    placed = in_context(rows)
    decide = lambda texts: (clf.predict_proba(texts) > np.asarray(clf.thresholds)).any(axis=1)  # noqa: E731
    alone = dict(zip([r["id"] for r in rows], decide([r["text"] for r in rows]), strict=True))
    in_ctx = decide([p["text"] for p in placed])
    # the padding each placed text holds, without the prompt: in_context's own draw (it depends on the
    # row's id only) around an empty text; scoring folds the doubled space away
    pads = decide([p["text"] for p in in_context([{**r, "text": ""} for r in rows])])
    by: dict[str, list[bool]] = defaultdict(list)
    for p, flag in zip(placed, pads, strict=True):
        by[f"{p['lang']}/{p['context_words']}"].append(bool(flag))
    flagged = [p for p, f in zip(placed, in_ctx, strict=True) if f]
    return {"benign_in_context": len(placed),
            "in_context_fpr": round(float(in_ctx.mean()), 4),
            "flagged_prompt_safe_alone": sum(not alone[p["id"].split("@")[0]] for p in flagged),
            "flagged_prompt_flagged_alone": sum(bool(alone[p["id"].split("@")[0]]) for p in flagged),
            "padding_alone_fpr": round(float(pads.mean()), 4),
            "padding_alone_fpr_by_lang_words": {k: round(float(np.mean(v)), 4) for k, v in sorted(by.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="checkout whose classifiers, params and weights cache to use")
    ap.add_argument("--iteration", type=int, action="append", required=True, help="classifier iteration (repeatable)")
    ap.add_argument("--half", choices=("calib", "report"), default="report", help="suite half (default: report)")
    ap.add_argument("--label", help="key under which the results are kept (default: <root name>-<half>)")
    args = ap.parse_args()
    from bench_generator import cpu_isa

    from duelguard.fsio import atomic_write_json

    root = args.root.resolve()
    out = {f"iter_{i}": measure(root, i, args.half) for i in args.iteration}
    for name, m in out.items():
        print(f"{name}: in-context FPR {100 * m['in_context_fpr']:.1f}% ({m['flagged_prompt_safe_alone']} of the flagged "
              f"hold a prompt safe alone); padding alone {100 * m['padding_alone_fpr']:.1f}%: "
              + ", ".join(f"{k} {100 * v:.0f}%" for k, v in m["padding_alone_fpr_by_lang_words"].items()))
    command = "python bench/bench_padding_fpr.py " + " ".join(f"--iteration {i}" for i in args.iteration)
    run = {"command": f"{command} --half {args.half}", "checkout": str(root), "date": datetime.date.today().isoformat(),
           "machine": f"{platform.processor() or platform.machine()} ({cpu_isa()})"}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[args.label or f"{root.name}-{args.half}"] = {"run": run, **out}
    atomic_write_json(OUT, results)


if __name__ == "__main__":
    main()
