"""`duelguard predict`: score a JSONL file (or a few texts) with a classifier directory or MLflow model URI.

Contract (docs/contracts.md): each input line is a JSON object with `text` (or a `messages` chat list);
each output line is that object plus `unsafe_score`, `unsafe` and `categories`, in input order.
Every input line is checked before anything is scored, so a bad line fails fast with its line
number and no output file is created; the output is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duelguard.classifier.inference import text_of
from duelguard.classifier.model import GuardClassifier
from duelguard.fsio import DataError, iter_jsonl, write_jsonl


def load_classifier(model: str | Path) -> tuple[GuardClassifier, Path]:
    """(classifier, its local directory) from a directory or an MLflow model URI (models:/name@alias, runs:/...)."""
    path = Path(model)
    if not path.is_dir():
        from duelguard.registry.models import local_model_dir

        path = local_model_dir(str(model))
    return GuardClassifier.load(path), path


def read_inputs(path: str | Path) -> list[dict[str, Any]]:
    """All input objects of a JSONL file; the first bad line raises DataError naming file:line."""
    objs = []
    for line_no, obj in iter_jsonl(path):
        text_of(obj, f"{path}:{line_no}")
        objs.append(obj)
    if not objs:
        raise DataError(f"{path}: no input lines")
    return objs


def predict_file(
    clf: GuardClassifier, input_path: str | Path, output_path: str | Path, batch_size: int | None = None
) -> int:
    """Score every line of `input_path` into `output_path`; returns the number of lines written."""
    objs = read_inputs(input_path)
    return write_jsonl(output_path, clf.predict_records(objs, batch_size=batch_size, progress=True))
