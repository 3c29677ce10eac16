"""The generator's preference pairs (loop stage `build_pairs`): what DPO learns from.

Honest pairs (select_pairs): the generator is rewarded for faithful samples the classifier gets
WRONG, and pushed away from faithful samples it gets right and from UNFAITHFUL samples (those curation
dropped because the generator failed at its job: see duelguard.loop.curation.UNFAITHFUL). A drifting
generator is thus never rewarded for drifting, however high the classifier's loss on its drift would be.
The scores the pairs are chosen by come from duelguard.loop.game.score.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json, iter_jsonl, write_jsonl
from duelguard.layout import Layout
from duelguard.loop.prompts import is_chat
from duelguard.records import read_records
from duelguard.taxonomy import is_unsafe

# The generation prompt is identified by these provenance fields of a generated record.
PROMPT_FIELDS = ("template", "task", "seed_text")


def _group_key(rec: dict[str, Any]) -> tuple[str, str, str, str]:
    """One group = one generation prompt: the same seed, target language, task and template."""
    return (rec["parent_id"], rec["lang"], str(rec.get("task")), str(rec.get("template")))


def _check_scored(rec: dict[str, Any]) -> None:
    if rec.get("parent_id") is None or not isinstance(rec.get("loss"), (int, float)) or not isinstance(
            rec.get("correct"), bool):
        raise DataError(f"record {rec.get('id')!r}: scored synthetic records need parent_id, a numeric loss and "
                        "a boolean 'correct'")
    if not math.isfinite(rec["loss"]):
        raise DataError(f"record {rec['id']!r}: loss is not finite ({rec['loss']})")


def select_pairs(scored: Iterable[dict[str, Any]], unfaithful: Iterable[dict[str, Any]],
                 min_margin: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """At most one honest (chosen, rejected) pair per generation prompt.

    The rule (issue: "chosen = faithful samples the classifier gets wrong; rejected = faithful samples
    it gets right, or unfaithful ones"):

    - Samples are grouped by the prompt that generated them (parent seed, language, task, template):
      DPO compares two continuations of the same prompt.
    - `scored` holds the FAITHFUL samples (curated, scored by the previous classifier); `unfaithful`
      the samples curation dropped for a reason in curation.UNFAITHFUL (each with `dropped_by`).
    - chosen: the faithful sample the classifier got WRONG (predicted class != inherited label) with
      the highest loss. A group with no such sample gives no pair: nothing there is worth more of.
    - rejected: an unfaithful sample of the group if there is one (a drifting generator is pushed
      away from drifting; no loss margin applies, the sample's label cannot be trusted), else the
      faithful sample the classifier got RIGHT with the lowest loss, kept only when
      loss(chosen) - loss(rejected) >= min_margin.
    - Ties are broken by record id (smallest first), so the result does not depend on file order.

    Returns (pair stubs {chosen, rejected, margin, rejected_kind}, counts by rule).
    """
    from duelguard.loop.curation import UNFAITHFUL

    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    drift: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in scored:
        _check_scored(rec)
        groups[_group_key(rec)].append(rec)
    for rec in unfaithful:
        if rec.get("dropped_by") not in UNFAITHFUL or rec.get("parent_id") is None:
            raise DataError(f"record {rec.get('id')!r}: not an unfaithful sample (dropped_by must be one of "
                            f"{', '.join(UNFAITHFUL)}, parent_id set), got {rec.get('dropped_by')!r}")
        drift[_group_key(rec)].append(rec)
    counts = {"groups": len(set(groups) | set(drift)), "pairs": 0, "pairs_vs_unfaithful": 0, "pairs_vs_correct": 0,
              "no_wrong_sample": 0, "no_rejected_sample": 0, "dropped_below_margin": 0}
    pairs = []
    for key in sorted(set(groups) | set(drift)):
        members = groups.get(key, [])
        wrong = [r for r in members if not r["correct"]]
        if not wrong:
            counts["no_wrong_sample"] += 1
            continue
        chosen = min(wrong, key=lambda r: (-r["loss"], r["id"]))
        off = sorted((r for r in drift.get(key, []) if r["text"] != chosen["text"]), key=lambda r: r["id"])
        right = [r for r in members if r["correct"]]
        if off:
            pairs.append({"chosen": chosen, "rejected": off[0], "margin": None, "rejected_kind": off[0]["dropped_by"]})
            counts["pairs_vs_unfaithful"] += 1
            continue
        if not right:
            counts["no_rejected_sample"] += 1
            continue
        rejected = min(right, key=lambda r: (r["loss"], r["id"]))
        margin = chosen["loss"] - rejected["loss"]
        if margin < min_margin:
            counts["dropped_below_margin"] += 1
            continue
        pairs.append({"chosen": chosen, "rejected": rejected, "margin": round(margin, 6), "rejected_kind": "correct"})
        counts["pairs_vs_correct"] += 1
    counts["pairs"] = len(pairs)
    return pairs, counts


def read_unfaithful(layout: Layout, iteration: int) -> list[dict[str, Any]]:
    """The samples curation dropped because the generator failed (curation.UNFAITHFUL reasons)."""
    from duelguard.loop.curation import UNFAITHFUL

    path = layout.rejected(iteration)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the curate stage of iteration {iteration} first)")
    return [row for _, row in iter_jsonl(path) if row.get("dropped_by") in UNFAITHFUL]


def generation_prompt(record: dict[str, Any], tokenizer: Any = None) -> str:
    """The exact prompt the generator was given for this sample, re-rendered by duelguard.loop.prompts.

    `tokenizer` (the generator's) is needed only for chat-template records.
    """
    from duelguard.loop.prompts import render

    missing = [f for f in PROMPT_FIELDS if record.get(f) in (None, "")]
    if missing:
        raise DataError(f"record {record['id']!r}: missing generation provenance field(s) {', '.join(missing)}")
    return render(
        tokenizer,
        record["template"],
        record["task"],
        record["seed_text"],
        record["lang"],
        is_unsafe(record["labels"]),
    )


def build_pairs(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `build_pairs`: DPO preference pairs from the scored samples (rule: see select_pairs).

    Each pair line: prompt (the generation prompt, as rendered for generation), template, chosen,
    rejected (sample texts), margin (loss gap; null when the rejected side is unfaithful),
    rejected_kind ("correct" or the curation filter that dropped it), chosen_loss, rejected_loss,
    parent_id, lang, task, seed_text, unsafe, chosen_id, rejected_id. Counts go to
    layout.pairs_metrics(iteration).
    """
    scored = read_records(layout.scored(iteration))
    unfaithful = read_unfaithful(layout, iteration)
    stubs, counts = select_pairs(scored, unfaithful, params.pairs.min_margin)
    tokenizer = None
    if any(is_chat(stub["chosen"].get("template", "")) for stub in stubs):
        from duelguard.loop.generator import generator_tokenizer

        tokenizer = generator_tokenizer(params, layout)
    rows = []
    for stub in stubs:
        chosen, rejected = stub["chosen"], stub["rejected"]
        rows.append(
            {
                "prompt": generation_prompt(chosen, tokenizer),
                "template": chosen["template"],
                "chosen": chosen["text"],
                "rejected": rejected["text"],
                "margin": stub["margin"],
                "rejected_kind": stub["rejected_kind"],
                "chosen_loss": chosen["loss"],
                "rejected_loss": rejected.get("loss"),
                "parent_id": chosen["parent_id"],
                "lang": chosen["lang"],
                "task": chosen["task"],
                "seed_text": chosen["seed_text"],
                "unsafe": is_unsafe(chosen["labels"]),
                "chosen_id": chosen["id"],
                "rejected_id": rejected["id"],
            }
        )
    write_jsonl(layout.pairs(iteration), rows)
    per_lang: dict[str, int] = defaultdict(int)
    for row in rows:
        per_lang[row["lang"]] += 1
    metrics = {
        "iteration": iteration,
        "min_margin": params.pairs.min_margin,
        "samples": len(scored),
        "unfaithful_samples": len(unfaithful),
        **counts,
        "mean_margin": _mean([r["margin"] for r in rows if r["margin"] is not None]),
        "pairs_per_language": dict(sorted(per_lang.items())),
    }
    atomic_write_json(layout.pairs_metrics(iteration), metrics)
    return metrics


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None
