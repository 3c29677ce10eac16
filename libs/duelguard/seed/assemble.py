"""The prepare_seed stage: raw public files -> data/seed/{train,dev,test}.jsonl + data card + chart.

    read (sources.py) -> normalise + label (select.to_candidate, mapping.py) -> exact dedup with
    conflict rule -> per-language subsample with near-duplicate removal -> groups -> grouped split
    -> label-noise audit (audit.py; seed.noise_policy) -> validated records (records.write_records)
    -> card JSON (layout.seed_card) + PNG (layout.seed_card_plot); flagged rows in layout.seed_audit
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from duelguard.config import ConfigError, Params
from duelguard.fsio import DataError, atomic_write_json, write_jsonl
from duelguard.layout import Layout
from duelguard.records import SPLITS, write_records
from duelguard.seed.audit import audit
from duelguard.seed.card import build_card, plot_card
from duelguard.seed.select import Candidate, exact_dedup, select, to_candidate
from duelguard.seed.sources import SOURCES
from duelguard.seed.split import assign_groups, assign_splits

def _check_params(params: Params) -> None:
    seed = params.seed
    if seed.max_records == 0:
        raise ConfigError("seed.quotas: every quota is zero (or none is set): the seed would be empty")
    if seed.min_chars > seed.max_chars:
        raise ConfigError("seed.min_chars must not exceed seed.max_chars")


def _to_record(c: Candidate, split: str, group: str) -> dict[str, Any]:
    return {
        "id": c.id,
        "text": c.text,
        "lang": c.lang,
        "labels": list(c.labels),
        "source": c.source,
        "split": split,
        "origin": "seed",
        "iteration": 0,
        "parent_id": None,
        "label_source": c.label_source,
        "label_rule": c.label_rule,
        "group": group,
        "raw_ref": c.ref,
        "dup_sources": sorted(c.dup_sources),
    }


def prepare_seed(params: Params, layout: Layout) -> dict[str, Any]:
    """Assemble the seed dataset; returns a summary (counts per split x language, shares, drops)."""
    from tqdm.auto import tqdm

    _check_params(params)
    seed = params.seed
    raw = Path(layout.raw_data)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw data folder not found (set paths.raw_data in params.yaml)")
    started = time.perf_counter()

    drops: Counter = Counter()
    read: Counter = Counter()
    candidates: list[Candidate] = []
    for reader in tqdm(SOURCES.values(), desc="seed: read sources", unit="source", leave=False):
        for row in reader(raw):
            read[row.source] += 1
            cand = to_candidate(row, seed, drops)
            if cand is not None:
                candidates.append(cand)
    unique = exact_dedup(candidates, drops)

    with tqdm(total=seed.max_records, desc="seed: select + near-dedup", unit="row", leave=False) as bar:
        selector, quota_report = select(unique, seed, drops, progress=bar)
    chosen = sorted(selector.chosen.values(), key=lambda c: c.id)
    groups = assign_groups(chosen, selector.links)
    splits = assign_splits(chosen, groups, seed.split_fractions, seed.random_seed, seed.min_eval_per_class)

    records = [_to_record(c, splits[c.id], groups[c.id]) for c in chosen]
    noise = audit(records, layout.weights_cache, seed.noise_flag_above, seed.random_seed)
    noise["policy"] = seed.noise_policy
    flagged = [r for r in records if r["audit"]["flagged"]]
    if seed.noise_policy == "drop":
        dropped = {r["id"] for r in flagged if r["split"] == "train"}
        for r in flagged:
            if r["id"] in dropped:
                drops["label_noise", r["source"]] += 1
        records = [r for r in records if r["id"] not in dropped]
        noise["dropped_from_train"] = len(dropped)
    write_jsonl(layout.seed_audit, sorted(flagged, key=lambda r: (r["source"], r["audit"]["oof_unsafe"])))
    for split in SPLITS:
        write_records(layout.seed_split(split), [r for r in records if r["split"] == split])

    card = build_card(records, drops, read, quota_report)
    card["label_noise"] = noise
    summary = {
        "records": card["records"],
        "by_split": card["by_split"],
        "by_split_language": card["by_split_language"],
        "language_shares": card["language_shares"],
        "drops_total": card["drops_total"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    plot = plot_card(card, layout.seed_card_plot)
    atomic_write_json(
        layout.seed_card,
        {"profile": params.profile, "seed_params": seed.model_dump(), "plot": str(plot),
         "summary": summary, **card},
    )
    return summary


def prepare_seed_stage(params: Params, layout: Layout, iteration: int = 0) -> dict[str, Any]:
    """Stage-table entry "prepare_seed" (the seed does not depend on the loop iteration)."""
    return prepare_seed(params, layout)
