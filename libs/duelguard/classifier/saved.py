"""The saved-model record: what makes a directory a saved classifier, what its duelguard.json says,
which kind of classifier it holds, and the interface both kinds share.

Every saved classifier directory has a duelguard.json: {"taxonomy": [12 names], "thresholds": [12
floats], "language_offsets", "max_length", "chunk_overlap", "long_input", "threshold_rule", "training",
...} plus what
its kind records (a token model: "pooling"; a sentence classifier: "encoder" and "head"). This
module is the one place that names the file (METADATA_FILE), answers "is this a classifier
directory?" (is_classifier_dir), reads and checks the record (read_metadata), writes it
(write_metadata) and decides the kind (kind_of). The kinds themselves (duelguard.classifier.model,
duelguard.classifier.sentence) build on SavedClassifier; duelguard.classifier.loader opens either.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.classifier.inference import text_of
from duelguard.classifier.units import TOO_LONG, Scores
from duelguard.errors import ModelNotFoundError
from duelguard.fsio import DataError, publish_dir
from duelguard.taxonomy import CATEGORIES

METADATA_FILE = "duelguard.json"
TOKEN, SENTENCE = "token", "sentence"  # the two kinds (kind_of)


def is_classifier_dir(path: str | Path) -> bool:
    """Whether `path` holds a saved classifier (its duelguard.json)."""
    return (Path(path) / METADATA_FILE).is_file()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The duelguard.json of the classifier directory `path`, checked against this code's taxonomy
    (ModelNotFoundError when there is none, DataError when it is unreadable or for other categories)."""
    meta_path = Path(path) / METADATA_FILE
    if not is_classifier_dir(path):
        raise ModelNotFoundError(f"{path}: not a duelguard classifier directory (no {METADATA_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{meta_path}: not valid JSON ({exc.msg})") from exc
    if list(meta.get("taxonomy", [])) != list(CATEGORIES):
        raise DataError(f"{meta_path}: taxonomy {meta.get('taxonomy')} differs from this code's {list(CATEGORIES)}")
    return meta


def write_metadata(directory: Path, meta: dict[str, Any]) -> Path:
    """Write `meta` as `directory`/duelguard.json (the directory is a staging one, published whole)."""
    path = Path(directory) / METADATA_FILE
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def kind_of(meta: dict[str, Any]) -> str:
    """The kind of classifier a duelguard.json describes: SENTENCE when it names a sentence `encoder`
    (scored on embeddings), else TOKEN (a tokenizer and a transformer network). The one place that decides."""
    return SENTENCE if meta.get("encoder") else TOKEN


@dataclass(frozen=True)
class NetworkExport:
    """What a kind's export_network wrote (what Triton serves), and how close it is to torch."""

    onnx_path: Path
    max_abs_diff: float  # ONNX vs torch logits on the probe inputs
    embedding_dim: int | None  # a sentence classifier's head input width; None for a token model


class SavedClassifier(ABC):
    """What both kinds of classifier share: the atomic save of their directory and the output records,
    built on what each kind defines (its metadata, its files, its scoring and its ONNX export)."""

    thresholds: np.ndarray
    # Logit offset per language (duelguard.classifier.thresholds.language_offsets), added to a unit's
    # logits once its language is identified; empty = one global threshold. Replaced, never mutated.
    language_offsets: dict[str, float] = {}  # noqa: RUF012 - a class-level default that is only ever replaced
    # Where a kind that embeds texts memoises the embeddings (duelguard.encoder.embed_cached); None embeds
    # afresh. Stages set it (duelguard.classifier.loader), since they score the same texts again and again.
    embed_cache: Path | None = None

    @classmethod
    @abstractmethod
    def from_saved(cls, path: Path, meta: dict[str, Any]) -> SavedClassifier:
        """The classifier in directory `path`, whose duelguard.json (read_metadata) is `meta`."""

    @property
    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """The contents of duelguard.json."""

    @abstractmethod
    def _write_files(self, directory: Path) -> None:
        """Write the kind's own files (weights, tokenizer) into `directory`."""

    @abstractmethod
    def predict_scores(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> Scores:
        """Scores of `texts` (duelguard.classifier.units.score_texts with the kind's unit scorer)."""

    @abstractmethod
    def export_network(self, directory: Path, opset: int) -> NetworkExport:
        """The kind's network as `directory`/model.onnx, verified against torch, plus whatever a caller
        needs beside it to feed that network (a token model's tokenizer files)."""

    @abstractmethod
    def onnx_runtime(self, onnx_path: Path) -> Any:
        """An ONNX Runtime stand-in for `self.model`, running the file export_network wrote."""

    def save(self, path: str | Path) -> Path:
        """Write the directory atomically (temp dir + rename); an existing directory is replaced."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            self._write_files(tmp)
            write_metadata(tmp, self.metadata)
            publish_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def predict_proba(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Per-category probabilities (n, 12) float32; long texts windowed + max-aggregated, blank -> 0."""
        return self.predict_scores(texts, batch_size, progress)[0]

    def predict_records(
        self, objs: Sequence[dict[str, Any]], batch_size: int | None = None, progress: bool = False
    ) -> list[dict[str, Any]]:
        """The `duelguard predict` output objects: each input plus unsafe_score, unsafe, categories,
        truncated and reason (output_record)."""
        texts = [text_of(obj, f"input {i}") for i, obj in enumerate(objs, 1)]
        scores = self.predict_scores(texts, batch_size=batch_size, progress=progress)
        return [output_record(obj, row, self.thresholds, bool(t), bool(x))
                for obj, row, t, x in zip(objs, scores.probs, scores.truncated, scores.too_long)]


def output_record(obj: dict[str, Any], probs: np.ndarray, thresholds: np.ndarray, truncated: bool = False,
                  too_long: bool = False) -> dict[str, Any]:
    """One output object: the input's fields + unsafe_score (max prob), unsafe (any prob > its threshold,
    or the text was past the cost bound under the `flag` policy), categories {name: prob}, truncated
    (head_tail policy: only the text's head and tail were scored) and reason ("too_long" for a text
    flagged for its length, else null). Shared by `predict` and the Triton client so both emit the
    same schema."""
    probs = np.asarray(probs, dtype=np.float32)
    out = dict(obj)
    out["unsafe_score"] = round(float(probs.max()), 6)
    out["unsafe"] = bool(too_long or np.any(probs > thresholds))
    out["categories"] = {name: round(float(p), 6) for name, p in zip(CATEGORIES, probs)}
    out["truncated"] = bool(truncated)
    out["reason"] = TOO_LONG if too_long else None
    return out
