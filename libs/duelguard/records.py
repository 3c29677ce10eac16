"""The record schema shared by seed and synthetic data (one JSON object per JSONL line).

    id          stable string id (sha1 of source + normalised text for seed; parent + iteration + n for synthetic)
    text        the prompt or statement, NFC-normalised, non-empty
    lang        ISO 639-1 code
    labels      12 ints (0/1) in taxonomy order; all zeros = safe
    source      where it came from (e.g. "hatecheck_en", "synthetic")
    split       train | dev | test
    origin      seed | synthetic
    iteration   0 for seed, i >= 1 for data generated in loop iteration i
    parent_id   the seed id a synthetic record was generated from (None for seed)

Synthetic records may carry extra provenance fields (template, generator, ...); they are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from duelguard.fsio import DataError, iter_jsonl, write_jsonl
from duelguard.taxonomy import NUM_CATEGORIES

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
ORIGINS = ("seed", "synthetic")
REQUIRED_FIELDS = ("id", "text", "lang", "labels", "source", "split", "origin", "iteration", "parent_id")


def validate_record(rec: dict[str, Any], where: str = "record") -> dict[str, Any]:
    """Check one record against the schema; raise DataError naming `where` and the field at fault."""
    missing = [f for f in REQUIRED_FIELDS if f not in rec]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    if not isinstance(rec["id"], str) or not rec["id"]:
        raise DataError(f"{where}: 'id' must be a non-empty string")
    if not isinstance(rec["text"], str) or not rec["text"].strip():
        raise DataError(f"{where}: 'text' must be a non-empty string")
    if not isinstance(rec["lang"], str) or not (2 <= len(rec["lang"]) <= 3) or not rec["lang"].islower():
        raise DataError(f"{where}: 'lang' must be an ISO 639-1 code, got {rec['lang']!r}")
    labels = rec["labels"]
    if (
        not isinstance(labels, list)
        or len(labels) != NUM_CATEGORIES
        or any(type(v) is not int or v not in (0, 1) for v in labels)
    ):
        raise DataError(f"{where}: 'labels' must be a list of {NUM_CATEGORIES} ints in {{0,1}}, got {labels!r}")
    if rec["split"] not in SPLITS:
        raise DataError(f"{where}: 'split' must be one of {SPLITS}, got {rec['split']!r}")
    if rec["origin"] not in ORIGINS:
        raise DataError(f"{where}: 'origin' must be one of {ORIGINS}, got {rec['origin']!r}")
    if type(rec["iteration"]) is not int or rec["iteration"] < 0:
        raise DataError(f"{where}: 'iteration' must be an int >= 0, got {rec['iteration']!r}")
    if rec["origin"] == "synthetic" and not rec["parent_id"]:
        raise DataError(f"{where}: synthetic records need a 'parent_id'")
    if rec["parent_id"] is not None and not isinstance(rec["parent_id"], str):
        raise DataError(f"{where}: 'parent_id' must be a string or null")
    return rec


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a records file; the first bad line raises DataError naming file and line."""
    return [validate_record(obj, f"{path}:{line_no}") for line_no, obj in iter_jsonl(path)]


def write_records(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Validate then write atomically (nothing is written if any record is invalid)."""
    rows = [validate_record(r, f"{path} (record {i})") for i, r in enumerate(records, 1)]
    return write_jsonl(path, rows)
