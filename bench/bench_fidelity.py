"""How well do curation's fidelity filters tell faithful samples from unfaithful ones?

    python bench/bench_fidelity.py [--fixture tests/fixtures/fidelity_hand_labelled.jsonl] [--params params.yaml]

The fixture holds generated rows (Gemma-3-270M few-shot and Qwen2.5-Coder-1.5B chat, both sampled by
CTranslate2 int8 in `bench/bench_generator.py`), each read by hand and labelled `faithful` (it says
what its seed says, in the requested language, so the seed's label holds) with a note on why not.
Each row keeps the scores curation computed when it ran (USE-m similarity to the seed, the seed-only
probe's unsafe score of sample and seed, the identified language) and the verdict it gave.

Printed and written to bench/results/fidelity.json, per generator and overall:
- the whole of curation (kept = judged faithful): precision and recall against the hand labels;
- each fidelity filter alone, as a detector of unfaithful rows (precision: share of the rows it
  drops that are unfaithful; recall: share of the unfaithful rows it drops), at the thresholds of
  params.yaml, and the similarity filter swept over thresholds (to choose `curation.min_similarity`).
Not a test: the labels are one reader's judgement, kept so that a new filter is measured on the same rows.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duelguard.config import load_params
from duelguard.fsio import atomic_write_json, iter_jsonl
from duelguard.taxonomy import is_unsafe

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "fidelity_hand_labelled.jsonl"
SWEEP = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


def _pr(rows: list[dict[str, Any]], flagged: Callable[[dict[str, Any]], bool], target: bool) -> dict[str, Any]:
    """Precision and recall of `flagged` as a detector of rows whose `faithful` equals target."""
    hits = [r for r in rows if flagged(r)]
    relevant = [r for r in rows if r["faithful"] == target]
    tp = sum(r["faithful"] == target for r in hits)
    return {"flagged": len(hits), "relevant": len(relevant),
            "precision": round(tp / len(hits), 3) if hits else None,
            "recall": round(tp / len(relevant), 3) if relevant else None}


def measure(rows: list[dict[str, Any]], min_similarity: float, max_contradiction: float) -> dict[str, Any]:
    def contradicts(r: dict[str, Any]) -> bool:
        p = r["probe_unsafe"]
        return p is not None and (1.0 - p if is_unsafe(r["labels"]) else p) >= max_contradiction

    filters: dict[str, Callable[[dict[str, Any]], bool]] = {
        "wrong_language": lambda r: r["langid"] != r["lang"],
        "low_similarity": lambda r: (r["similarity"] or 0.0) < min_similarity,
        "label_contradiction": contradicts,
    }
    return {
        "rows": len(rows),
        "faithful": sum(r["faithful"] for r in rows),
        "curation_kept": _pr(rows, lambda r: r["curation_verdict"] == "kept", True),
        "filters_as_unfaithful_detectors": {name: _pr(rows, f, False) for name, f in filters.items()},
        "similarity_sweep_kept": {str(t): _pr(rows, lambda r, t=t: (r["similarity"] or 0.0) >= t
                                              and r["langid"] == r["lang"], True) for t in SWEEP},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", default=str(FIXTURE))
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--output", default=str(REPO_ROOT / "bench" / "results" / "fidelity.json"))
    args = parser.parse_args()
    cur = load_params(args.params).curation
    rows = [row for _, row in iter_jsonl(Path(args.fixture))]
    groups = {"all": rows}
    for name in sorted({r["generator"] for r in rows}):
        groups[name] = [r for r in rows if r["generator"] == name]
    result = {"fixture": str(Path(args.fixture).relative_to(REPO_ROOT)), "min_similarity": cur.min_similarity,
              "max_label_contradiction": cur.max_label_contradiction,
              "groups": {g: measure(rs, cur.min_similarity, cur.max_label_contradiction) for g, rs in groups.items()}}
    print(json.dumps(result, indent=1))
    atomic_write_json(Path(args.output), result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
