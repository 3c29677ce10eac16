"""The input side of `duelguard predict` and `duelguard classify`: reading and checking JSONL inputs.

Contract (docs/contracts.md): each input line is a JSON object with `text` (or a `messages` chat
list); each output line is that object plus `unsafe_score`, `unsafe` and `categories`, in input order.
Every input line is checked before anything is scored, so a bad line fails fast with its line
number and no output file is created; the output is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duelguard.classifier.inference import text_of
from duelguard.fsio import DataError, iter_jsonl


def read_inputs(path: str | Path) -> list[dict[str, Any]]:
    """All input objects of a JSONL file; the first bad line raises DataError naming file:line."""
    objs = []
    for line_no, obj in iter_jsonl(path):
        text_of(obj, f"{path}:{line_no}")
        objs.append(obj)
    if not objs:
        raise DataError(f"{path}: no input lines")
    return objs
