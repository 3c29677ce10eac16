"""ONNX Runtime: every session the project opens, and the stand-ins for a kind's torch network.

`OnnxNetwork` (a token model's network: input_ids, attention_mask -> logits) and `OnnxHead` (a
sentence classifier's head: embedding -> logits) take the place of `classifier.model` (each kind's
`onnx_runtime`), so `duelguard predict --runtime onnx`, the benchmark and the load check score with
exactly the windows, batches, sigmoid and max rule of torch, and measure what quantisation costs.
The Triton model and the export's verification open their sessions here too (cpu_session).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("torch", "onnx", "onnx-int8")
OUTPUT_NAME = "logits"  # the one output of every exported network


def cpu_session(path: str | Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session on `path` (`threads` intra-op threads; 0 = ORT's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxNetwork:
    """An ONNX classifier network (input_ids, attention_mask -> logits) in an ORT CPU session."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.path = Path(path)
        self.session = cpu_session(path, threads)
        self.num_labels = int(self.session.get_outputs()[0].shape[-1])

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(batch, num_labels) float32 logits."""
        feeds = {"input_ids": np.asarray(input_ids, dtype=np.int64), "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
        return self.session.run([OUTPUT_NAME], feeds)[0].astype(np.float32)


class OnnxHead:
    """A sentence classifier's exported head (embedding -> logits) in an ORT CPU session."""

    INPUT_NAME = "embedding"

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.path = Path(path)
        self.session = cpu_session(path, threads)

    def logits(self, embedding: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {self.INPUT_NAME: np.asarray(embedding, dtype=np.float32)})[0]


def network_probs(model: Any, input_ids: Any, attention_mask: Any) -> np.ndarray:
    """Sigmoid probabilities of one padded batch, from a torch network or an OnnxNetwork."""
    if isinstance(model, OnnxNetwork):
        return 1.0 / (1.0 + np.exp(-model.logits(input_ids.numpy(), attention_mask.numpy())))
    import torch

    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    return torch.sigmoid(logits.float()).cpu().numpy()


def num_labels(model: Any) -> int:
    return model.num_labels if isinstance(model, OnnxNetwork) else model.config.num_labels
