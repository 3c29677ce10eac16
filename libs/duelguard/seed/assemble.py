"""The prepare_seed stage: raw public files -> data/seed/{train,dev,test}.jsonl + data card + chart.

    read (sources.py) -> normalise + label (select.to_candidate, mapping.py) -> exact dedup with
    conflict rule -> per-language subsample with near-duplicate removal -> groups -> grouped split
    -> label-noise audit (audit.py; seed.noise_policy) -> validated records (records.write_records)
    -> card JSON (layout.seed_card) + PNG; the audited rows in data/seed/audit.jsonl

A rerun with the same seed params, the same raw files and the same code returns the stored summary
without recomputing (the card holds a fingerprint of all three); `force=True` recomputes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from duelguard.config import ConfigError, Params
from duelguard.fsio import DataError, atomic_write_json, read_json, write_jsonl
from duelguard.layout import Layout
from duelguard.records import SPLITS, write_records
from duelguard.seed.audit import audit
from duelguard.seed.card import build_card, plot_card
from duelguard.seed.select import Candidate, exact_dedup, select, to_candidate
from duelguard.seed.sources import SOURCES
from duelguard.seed.split import assign_groups, assign_splits

PLOT_NAME = "seed_card.png"
AUDIT_FILE = "audit.jsonl"  # the rows the label-noise audit flagged, for people to read


def _check_params(params: Params) -> None:
    seed = params.seed
    if seed.max_records == 0:
        raise ConfigError("seed.quotas: every quota is zero (or none is set): the seed would be empty")
    if seed.min_chars > seed.max_chars:
        raise ConfigError("seed.min_chars must not exceed seed.max_chars")


def fingerprint(params: Params, raw: Path) -> str:
    """Hash of the seed params, every raw file's content and this package's code."""
    h = hashlib.sha256(json.dumps(params.seed.model_dump(), sort_keys=True).encode())
    files = sorted(p for p in raw.rglob("*") if p.is_file())
    code_dir = Path(__file__).parent
    files += sorted(code_dir.glob("*.py")) + [code_dir.parent / "textnorm.py"]
    for p in files:
        h.update(str(p.relative_to(raw) if p.is_relative_to(raw) else p.name).encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _outputs_current(layout: Layout, fp: str) -> dict[str, Any] | None:
    paths = [layout.seed_split(s) for s in SPLITS] + [layout.seed_card, layout.plots_dir("seed") / PLOT_NAME]
    if not all(p.is_file() for p in paths):
        return None
    try:
        card = read_json(layout.seed_card)
    except DataError:
        return None
    return card.get("summary") if card.get("fingerprint") == fp else None


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


def prepare_seed(params: Params, layout: Layout, force: bool = False) -> dict[str, Any]:
    """Assemble the seed dataset; returns a summary (counts per split x language, shares, drops)."""
    from tqdm.auto import tqdm

    _check_params(params)
    seed = params.seed
    raw = Path(layout.raw_data)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw data folder not found (set paths.raw_data in params.yaml)")
    fp = fingerprint(params, raw)
    if not force and (cached := _outputs_current(layout, fp)) is not None:
        return {**cached, "skipped": True}
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
    write_jsonl(layout.seed_dir / AUDIT_FILE, sorted(flagged, key=lambda r: (r["source"], r["audit"]["oof_unsafe"])))
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
        "skipped": False,
    }
    plot = plot_card(card, layout.plots_dir("seed") / PLOT_NAME)
    atomic_write_json(
        layout.seed_card,
        {"fingerprint": fp, "profile": params.profile, "seed_params": seed.model_dump(), "plot": str(plot),
         "summary": summary, **card},
    )
    return summary


def prepare_seed_stage(params: Params, layout: Layout, iteration: int = 0) -> dict[str, Any]:
    """Stage-table entry "prepare_seed" (the seed does not depend on the loop iteration)."""
    return prepare_seed(params, layout)
