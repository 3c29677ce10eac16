"""GuardClassifier: the trained guardrail as one self-describing directory.

A saved classifier directory holds everything needed to score text, with no params.yaml:

    model.safetensors, config.json   the network (duelguard.classifier.network): a decoder's HF
                                     sequence-classification model, or an encoder + head.safetensors
    tokenizer files                  the backbone's tokenizer
    duelguard.json                   {"taxonomy": [12 names], "thresholds": [12 floats],
                                      "max_length": int, "chunk_overlap": int, "pooling": str,
                                      "long_input": {max_words, policy}, "threshold_rule": str, "training": {iteration, data_hash, ...}}

Decoders pool the LAST NON-PAD token (config.pad_token_id must be the tokenizer's pad id and
batches are right-padded, inference.pad_batch); encoders pool the mean of non-pad tokens or the
first token. A LoRA adapter is merged before saving, so the directory is always a plain model that
ONNX export and Triton load like any other.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.classifier.units import TOO_LONG, Scores, long_input_of, score_texts
from duelguard.config import LongInput
from duelguard.errors import ModelNotFoundError
from duelguard.fsio import DataError, publish_dir
from duelguard.taxonomy import CATEGORIES, NUM_CATEGORIES

METADATA_FILE = "duelguard.json"
DEFAULT_BATCH_SIZE = 16


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SavedClassifier:
    """What both kinds of classifier share (this module's token model, and the sentence classifier of
    duelguard.classifier.sentence): the atomic save of their directory and the output records,
    both built on what each kind defines (`metadata`, `_write_files`, `predict_scores`)."""

    thresholds: np.ndarray
    metadata: dict[str, Any]

    def _write_files(self, directory: Path) -> None:
        raise NotImplementedError

    def predict_scores(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> Scores:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write the directory atomically (temp dir + rename); an existing directory is replaced."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            self._write_files(tmp)
            (tmp / METADATA_FILE).write_text(json.dumps(self.metadata, indent=2) + "\n", encoding="utf-8")
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
        """The `duelguard predict` output objects: each input plus unsafe_score, unsafe, categories, truncated."""
        from duelguard.classifier.inference import text_of

        texts = [text_of(obj, f"input {i}") for i, obj in enumerate(objs, 1)]
        scores = self.predict_scores(texts, batch_size=batch_size, progress=progress)
        return [output_record(obj, row, self.thresholds, bool(t), bool(x))
                for obj, row, t, x in zip(objs, scores.probs, scores.truncated, scores.too_long)]


class GuardClassifier(SavedClassifier):
    """A 12-category multi-label classifier with its tokenizer, thresholds and metadata."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        thresholds: Sequence[float] | np.ndarray,
        max_length: int,
        chunk_overlap: int,
        threshold_rule: str = "fixed",
        training: dict[str, Any] | None = None,
        pooling: str = "last",
        long_input: LongInput | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if self.thresholds.shape != (NUM_CATEGORIES,):
            raise ValueError(f"thresholds must have {NUM_CATEGORIES} values, got shape {self.thresholds.shape}")
        self.max_length = int(max_length)
        self.chunk_overlap = int(chunk_overlap)
        self.threshold_rule = threshold_rule
        self.training: dict[str, Any] = dict(training or {})
        self.pooling = pooling
        self.long_input = long_input or LongInput()

    # construction -----------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone_dir: str | Path,
        max_length: int,
        chunk_overlap: int,
        default_threshold: float = 0.5,
        pooling: str = "last",
        long_input: LongInput | None = None,
    ) -> GuardClassifier:
        """A fresh 12-way head on a backbone directory (head randomly initialised)."""
        from transformers import AutoTokenizer

        from duelguard.classifier.network import build_network

        tokenizer = AutoTokenizer.from_pretrained(str(backbone_dir))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        model = build_network(backbone_dir, pooling, tokenizer.pad_token_id)
        model.to(_device())
        return cls(model, tokenizer, [default_threshold] * NUM_CATEGORIES, max_length, chunk_overlap,
                   pooling=pooling, long_input=long_input)

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Load a saved classifier directory of either kind: a token model (this class; see the
        module docstring) or, when duelguard.json names an `encoder`, a sentence-encoder classifier
        (duelguard.classifier.sentence.SentenceGuard, same scoring interface)."""
        path = Path(path)
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise ModelNotFoundError(f"{path}: not a duelguard classifier directory (no {METADATA_FILE})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta_path}: not valid JSON ({exc.msg})") from exc
        if list(meta.get("taxonomy", [])) != list(CATEGORIES):
            raise DataError(f"{meta_path}: taxonomy {meta.get('taxonomy')} differs from this code's {list(CATEGORIES)}")
        if meta.get("encoder"):
            from duelguard.classifier.sentence import SentenceGuard

            return SentenceGuard.load(path, meta)
        from transformers import AutoTokenizer

        from duelguard.classifier.network import load_network

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        tokenizer.padding_side = "right"
        pooling = meta.get("pooling", "last")
        model = load_network(path, pooling)
        model.to(_device()).eval()
        return cls(
            model,
            tokenizer,
            meta["thresholds"],
            meta["max_length"],
            meta["chunk_overlap"],
            meta.get("threshold_rule", "fixed"),
            meta.get("training", {}),
            pooling=pooling,
            long_input=long_input_of(meta),
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """The contents of duelguard.json."""
        return {
            "taxonomy": list(CATEGORIES),
            "thresholds": [round(float(t), 6) for t in self.thresholds],
            "max_length": self.max_length,
            "chunk_overlap": self.chunk_overlap,
            "threshold_rule": self.threshold_rule,
            "pooling": self.pooling,
            "long_input": self.long_input.model_dump(),
            "training": self.training,
        }

    def _write_files(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    # scoring ----------------------------------------------------------------------------------
    def predict_scores(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> Scores:
        """Every unit of every text (duelguard.classifier.units) cut into token windows and scored by
        the network (torch, or an ONNX Runtime session standing in for it), max over units."""
        import torch

        from duelguard.classifier.inference import token_unit_probs
        from duelguard.classifier.runtime import network_probs, num_labels

        if hasattr(self.model, "eval"):
            self.model.eval()
        labels = num_labels(self.model)

        def unit_probs(units: list[str]) -> np.ndarray:
            with torch.inference_mode():
                return token_unit_probs(self.tokenizer, units, self.max_length, self.chunk_overlap,
                                        batch_size or DEFAULT_BATCH_SIZE,
                                        lambda ids, mask: network_probs(self.model, ids, mask), labels, progress)

        return score_texts(texts, unit_probs, labels, self.max_length, self.chunk_overlap, self.long_input)


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
