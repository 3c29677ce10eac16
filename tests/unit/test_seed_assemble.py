"""prepare_seed end to end on the tiny profile: schema, grouped split (no leakage), language mix,
per-language eval coverage, card + chart, determinism."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from duelguard.config import load_params
from duelguard.layout import Layout
from duelguard.records import SPLITS, read_records
from duelguard.pipeline.spec import stage_function
from duelguard.seed.assemble import prepare_seed, prepare_seed_stage
from duelguard.seed.sources import read_source
from duelguard.taxonomy import CATEGORIES
from duelguard.textnorm import NearDuplicateIndex, dedup_key

REPO = Path(__file__).resolve().parents[2]
RAW = REPO.parent / "shared" / "data" / "raw"


def tiny_layout(root: Path) -> tuple:
    params = load_params(REPO / "params.yaml", profile="tiny")
    return params, dataclasses.replace(Layout.from_params(params, root=root), raw_data=RAW)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    if not RAW.is_dir():
        pytest.fail(f"raw seed data not found at {RAW} (shared/ must sit beside the checkout)")
    params, layout = tiny_layout(tmp_path_factory.mktemp("seed"))
    summary = prepare_seed(params, layout)
    records = {s: read_records(layout.seed_split(s)) for s in SPLITS}
    return params, layout, summary, records


def all_records(seed_run) -> list[dict]:
    return [r for rows in seed_run[3].values() for r in rows]


def test_stage_table_points_here() -> None:
    assert stage_function("prepare_seed") is prepare_seed_stage


def test_records_are_valid_and_sized(seed_run) -> None:
    params, _, summary, records = seed_run
    rows = all_records(seed_run)
    assert len(rows) == summary["records"] == params.seed.max_records  # every tiny quota cell can be filled
    for split, split_rows in records.items():
        assert split_rows and all(r["split"] == split for r in split_rows)
    assert all(r["origin"] == "seed" and r["iteration"] == 0 and r["parent_id"] is None for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({dedup_key(r["text"]) for r in rows}) == len(rows), "exact duplicates left in the seed"
    assert {r["lang"] for r in rows} == set(params.seed.languages)  # MultiJail zh/it/... not listed: gone
    unsafe = [r for r in rows if any(r["labels"])]
    assert all(r["label_rule"] or r["label_source"] for r in unsafe)  # every category has a provenance


def test_no_template_or_group_crosses_splits(seed_run) -> None:
    rows = all_records(seed_run)
    split_of_group = defaultdict(set)
    for r in rows:
        split_of_group[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of_group.values())
    # independently of the `group` field: re-read the templates from the raw HateCheck files
    templ_of_ref = {row.ref: row.group_keys for name in ("hatecheck_en", "hatecheck_multilingual")
                    for row in read_source(name, RAW)}
    splits_of_templ = defaultdict(set)
    for r in rows:
        for key in templ_of_ref.get(r["raw_ref"], ()):
            splits_of_templ[key].add(r["split"])
    assert len(splits_of_templ) > 50
    leaking = {k: v for k, v in splits_of_templ.items() if len(v) > 1}
    assert not leaking, f"templates in several splits: {list(leaking.items())[:5]}"


def test_no_near_duplicates_across_splits(seed_run) -> None:
    params = seed_run[0]
    rows = all_records(seed_run)
    index = NearDuplicateIndex(params.seed.near_dup_threshold, params.seed.minhash_num_perm)
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        index.add(r["id"], r["text"])
    crossing = [(r["id"], hit) for r in rows for hit in index.query(r["text"]) if by_id[hit]["split"] != r["split"]]
    assert not crossing


def test_quotas_per_language_and_kind_and_eval_coverage(seed_run) -> None:
    from duelguard.seed.sources import SOURCE_KINDS

    params, layout, summary, records = seed_run
    rows = all_records(seed_run)
    cells = Counter((r["lang"], SOURCE_KINDS[r["source"]], any(r["labels"])) for r in rows)
    for lang, kinds in params.seed.quotas.items():
        for kind, quota in kinds.items():
            assert cells[lang, kind, True] == quota.unsafe and cells[lang, kind, False] == quota.benign, (lang, kind)
    assert sum(cells.values()) == sum(cells[k] for k in cells if k[1] in params.seed.quotas[k[0]])
    # the benign English instructions start with the hard negatives: safe requests with alarming words
    card = json.loads(layout.seed_card.read_text())
    assert card["quotas"]["en"]["instruction"]["chosen_hard_negatives"] > 0
    for split in ("dev", "test"):
        cells = Counter((r["lang"], bool(any(r["labels"]))) for r in records[split])
        for lang in params.seed.languages:
            assert cells[lang, True] >= 5 and cells[lang, False] >= 5, (split, lang, cells)
    # dev and test each get the eval minimum per language x safety (capped at a quarter of the cell)
    for split in ("dev", "test"):
        for lang in params.seed.languages:
            for unsafe in (True, False):
                cell = sum(r["lang"] == lang and any(r["labels"]) == unsafe for r in all_records(seed_run))
                got = sum(r["lang"] == lang and any(r["labels"]) == unsafe for r in records[split])
                assert got >= min(params.seed.min_eval_per_class, cell // 4), (split, lang, unsafe, got, cell)


def test_all_categories_but_jailbreak_represented(seed_run) -> None:
    counts = Counter(CATEGORIES[i] for r in seed_run[3]["train"] for i, v in enumerate(r["labels"]) if v)
    missing = [c for c in CATEGORIES if counts[c] == 0 and c != "jailbreak_prompts"]
    assert not missing


def test_card_and_chart(seed_run) -> None:
    _, layout, summary, records = seed_run
    card = json.loads(layout.seed_card.read_text())
    assert card["summary"] == summary and card["records"] == summary["records"]
    assert card["by_split_language"]["dev"] == dict(Counter(r["lang"] for r in records["dev"]))
    safe_in_card = sum(src.get("safe", 0) for lang in card["counts"]["train"].values() for src in lang.values())
    assert safe_in_card == sum(not any(r["labels"]) for r in records["train"])
    assert card["drops_total"]["offensive_not_hate"] > 0 and card["drops_total"]["language_not_selected"] > 0
    png = layout.seed_card_plot
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_is_deterministic(seed_run, tmp_path: Path) -> None:
    params, layout, summary, _ = seed_run
    _, other = tiny_layout(tmp_path)
    again = prepare_seed(params, other)
    assert again["by_split_language"] == summary["by_split_language"]
    for split in SPLITS:
        assert other.seed_split(split).read_bytes() == layout.seed_split(split).read_bytes()
