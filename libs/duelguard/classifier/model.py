"""GuardClassifier: the token kind of classifier (a transformer network over token windows), saved
as one self-describing directory (duelguard.classifier.saved; opened by duelguard.classifier.loader).

A saved token-model directory holds everything needed to score text, with no params.yaml:

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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.classifier.inference import token_unit_probs
from duelguard.classifier.onnx_export import ONNX_FILE
from duelguard.classifier.runtime import OnnxNetwork, network_probs, num_labels
from duelguard.classifier.saved import NetworkExport, SavedClassifier
from duelguard.classifier.units import Scores, language_offsets_of, long_input_of, score_texts
from duelguard.config import LongInput
from duelguard.taxonomy import CATEGORIES, NUM_CATEGORIES

DEFAULT_BATCH_SIZE = 16


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class GuardClassifier(SavedClassifier):
    """A token model: a 12-category multi-label network with its tokenizer, thresholds and metadata."""

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
    def from_saved(cls, path: Path, meta: dict[str, Any]) -> GuardClassifier:
        """The token model saved in `path` (see the module docstring); open it with
        duelguard.classifier.loader.load_classifier, which reads and checks `meta`."""
        from transformers import AutoTokenizer

        from duelguard.classifier.network import load_network

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        tokenizer.padding_side = "right"
        pooling = meta.get("pooling", "last")
        model = load_network(path, pooling)
        model.to(_device()).eval()
        clf = cls(
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
        clf.language_offsets = language_offsets_of(meta)
        return clf

    @property
    def metadata(self) -> dict[str, Any]:
        """The contents of duelguard.json."""
        return {
            "taxonomy": list(CATEGORIES),
            "thresholds": [round(float(t), 6) for t in self.thresholds],
            "language_offsets": dict(self.language_offsets),
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

        if not isinstance(self.model, OnnxNetwork):  # a torch network: no dropout while scoring
            self.model.eval()
        labels = num_labels(self.model)

        def unit_probs(units: list[str]) -> np.ndarray:
            with torch.inference_mode():
                return token_unit_probs(self.tokenizer, units, self.max_length, self.chunk_overlap,
                                        batch_size or DEFAULT_BATCH_SIZE,
                                        lambda ids, mask: network_probs(self.model, ids, mask), labels, progress)

        return score_texts(texts, unit_probs, labels, self.max_length, self.chunk_overlap, self.long_input,
                           self.language_offsets)


    # ONNX ---------------------------------------------------------------------------------------
    def export_network(self, directory: Path, opset: int) -> NetworkExport:
        """The whole network to `directory`/model.onnx, verified against torch on probe texts, and the
        tokenizer files beside it (the ONNX network reads token ids)."""
        from duelguard.classifier.onnx_export import export_onnx, probe_texts, verify_onnx

        onnx_path = export_onnx(self.model, Path(directory) / ONNX_FILE, opset)
        diff = verify_onnx(onnx_path, self.model, self.tokenizer, probe_texts(16), self.max_length)
        self.tokenizer.save_pretrained(directory)
        return NetworkExport(onnx_path, float(diff), None)

    def onnx_runtime(self, onnx_path: Path) -> OnnxNetwork:
        return OnnxNetwork(onnx_path)
