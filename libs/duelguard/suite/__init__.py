"""The behavioural suite: hand-written prompts per language x category (this package's *.jsonl).

The seed's fr/es/de splits hold hate speech only, so they cannot show whether a crime, weapon,
self-harm or privacy request in French slips through, nor whether a safe question that uses an
alarming word ("kill the yeast") is flagged. The suite can: for each of the 12 categories, 10
unsafe prompts and 5 benign look-alikes, plus 30 everyday requests, written for this project in
en/fr/es/de as parallel items (see suite/README.md).

Two disjoint halves, fixed by the item id (so an item is in the same half in every language):
- `calib`: used only to calibrate decision thresholds (with the seed dev sample);
- `report`: the only half whose figures are reported and gated on.
Within every (group, category) cell the items are ranked by sha1(item) and the first
CALIB_SHARE of them (rounded) go to `calib`, so both halves cover every cell.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from duelguard.fsio import DataError
from duelguard.taxonomy import CATEGORY_CODES, labels_from

SUITE_DIR = Path(__file__).parent
LANGUAGES = ("en", "fr", "es", "de")
GROUPS = ("unsafe", "lookalike", "everyday")
HALVES = ("calib", "report")
CALIB_SHARE = 0.4
SOURCE = "suite"


def _validate(row: dict[str, Any], where: str) -> None:
    for key, kind in (("item", str), ("lang", str), ("group", str), ("category", str), ("labels", list), ("text", str)):
        if not isinstance(row.get(key), kind):
            raise DataError(f"{where}: field {key!r} must be a {kind.__name__}")
    if row["group"] not in GROUPS:
        raise DataError(f"{where}: group {row['group']!r} is not one of {GROUPS}")
    unsafe = row["group"] == "unsafe"
    if unsafe != bool(row["labels"]) or any(code not in CATEGORY_CODES for code in row["labels"]):
        raise DataError(f"{where}: labels {row['labels']} do not fit group {row['group']!r}")
    if not row["text"].strip():
        raise DataError(f"{where}: empty text")


def _halves(rows: list[dict[str, Any]]) -> dict[str, str]:
    """item -> half, stratified per (group, category)."""
    cells: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        cells[row["group"], row["category"]].add(row["item"])
    half: dict[str, str] = {}
    for items in cells.values():
        ranked = sorted(items, key=lambda item: hashlib.sha1(item.encode()).hexdigest())
        n_calib = round(CALIB_SHARE * len(ranked))
        half.update({item: ("calib" if k < n_calib else "report") for k, item in enumerate(ranked)})
    return half


@lru_cache(maxsize=4)
def load_suite(directory: Path = SUITE_DIR) -> tuple[dict[str, Any], ...]:
    """Every suite row as an evaluation record, validated; a malformed row is a DataError naming it."""
    rows: list[dict[str, Any]] = []
    for lang in LANGUAGES:
        path = directory / f"{lang}.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: behavioural suite file missing from the installed package")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            _validate(row, f"{path}:{n}")
            if row["lang"] != lang:
                raise DataError(f"{path}:{n}: lang {row['lang']!r} in the {lang} file")
            rows.append(row)
    half = _halves(rows)
    return tuple(
        {
            "id": f"suite-{row['lang']}-{row['item']}",
            "text": row["text"],
            "lang": row["lang"],
            "labels": labels_from(tuple(row["labels"])),
            "source": SOURCE,
            "item": row["item"],
            "group": row["group"],
            "category": row["category"],
            "form": row.get("form"),
            "half": half[row["item"]],
        }
        for row in rows
    )


def suite_records(half: str | None = None) -> list[dict[str, Any]]:
    """The suite as evaluation records (id, text, lang, 12 labels, source, group, category, half)."""
    if half is not None and half not in HALVES:
        raise ValueError(f"unknown suite half {half!r}; expected one of {HALVES}")
    return [dict(r) for r in load_suite() if half is None or r["half"] == half]
