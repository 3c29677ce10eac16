"""The behavioural suite: every language x category cell filled, two disjoint halves that both
cover every cell, items aligned across languages, malformed rows rejected by name."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from duelguard.suite import LANGUAGES, SUITE_DIR, load_suite, suite_records
from duelguard.fsio import DataError
from duelguard.taxonomy import CATEGORY_CODES


def test_every_language_by_category_cell_is_filled() -> None:
    rows = suite_records()
    cells = Counter((r["lang"], r["group"], r["category"]) for r in rows)
    for lang in LANGUAGES:
        for code in CATEGORY_CODES:
            assert cells[lang, "unsafe", code] >= 10 and cells[lang, "lookalike", code] >= 5, (lang, code)
        assert cells[lang, "everyday", "none"] >= 20
    assert len(rows) >= 800
    assert all(any(r["labels"]) == (r["group"] == "unsafe") for r in rows)


def test_halves_are_disjoint_by_item_and_both_cover_every_cell() -> None:
    calib, report = suite_records("calib"), suite_records("report")
    assert len(calib) + len(report) == len(suite_records())
    assert not {r["item"] for r in calib} & {r["item"] for r in report}  # an item never straddles
    for half in (calib, report):
        cells = {(r["lang"], r["group"], r["category"]) for r in half}
        assert all((lang, g, c) in cells for lang in LANGUAGES for g in ("unsafe", "lookalike") for c in CATEGORY_CODES)
    assert 0.3 < len(calib) / len(suite_records()) < 0.5
    with pytest.raises(ValueError, match="unknown suite half"):
        suite_records("test")


def test_items_are_parallel_across_languages() -> None:
    by_lang = {lang: [(r["item"], r["group"], r["category"], r["labels"]) for r in suite_records() if r["lang"] == lang]
               for lang in LANGUAGES}
    assert all(by_lang[lang] == by_lang["en"] for lang in LANGUAGES)
    texts = {lang: [r["text"] for r in suite_records() if r["lang"] == lang] for lang in LANGUAGES}
    assert all(len(set(t)) == len(t) for t in texts.values())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda row: row.update(group="maybe"), "group 'maybe'"),
        (lambda row: row.update(labels=[]), "do not fit group 'unsafe'"),
        (lambda row: row.update(text="   "), "empty text"),
        (lambda row: row.pop("item"), "field 'item'"),
    ],
)
def test_malformed_rows_are_errors_naming_file_and_line(tmp_path: Path, edit, message: str) -> None:
    for lang in LANGUAGES:
        shutil.copy(SUITE_DIR / f"{lang}.jsonl", tmp_path / f"{lang}.jsonl")
    lines = (tmp_path / "fr.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[2])
    edit(row)
    lines[2] = json.dumps(row, ensure_ascii=False)
    (tmp_path / "fr.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"fr\.jsonl:3: .*{message}"):
        load_suite(tmp_path)
