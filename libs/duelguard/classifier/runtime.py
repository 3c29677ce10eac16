"""Run the exported network with ONNX Runtime wherever the torch network runs.

`OnnxNetwork` stands in for the torch network in duelguard.classifier.inference.score_chunks (same
windows, batches, sigmoid and max rule), so the benchmark can compare torch, ONNX float32 and ONNX
INT8 on exactly the same inputs, and measure what quantisation costs in quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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
        return self.session.run(["logits"], feeds)[0].astype(np.float32)


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


RUNTIMES = ("torch", "onnx", "onnx-int8")


def onnx_network(classifier: Any, model_dir: Path, cache_dir: Path, runtime: str, opset: int = 17) -> Any:
    """The classifier's network exported to ONNX (and INT8-quantised for "onnx-int8"), cached under
    `cache_dir`/onnx by the hash of the model's files: the export (~half a minute for e5-small) runs
    once per model, and is verified against torch before it is used."""
    import hashlib

    from duelguard.classifier.onnx_export import export_onnx, probe_texts, quantize_int8, verify_onnx

    if runtime not in RUNTIMES[1:]:
        raise ValueError(f"unknown ONNX runtime {runtime!r}; expected one of {RUNTIMES[1:]}")
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".json")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    base = Path(cache_dir) / "onnx" / digest.hexdigest()[:24]
    fp32 = base.with_suffix(".onnx")
    sentence = hasattr(classifier, "encoder")  # a SentenceGuard: only its head goes to ONNX
    if not fp32.is_file():
        tmp = base.with_suffix(".partial.onnx")
        if sentence:
            from duelguard.classifier.sentence import export_head_onnx

            export_head_onnx(classifier.model, tmp, int(classifier.head_config["dim"]), opset)
        else:
            export_onnx(classifier.model, tmp, opset)
            verify_onnx(tmp, classifier.model, classifier.tokenizer, probe_texts(8), classifier.max_length)
        tmp.replace(fp32)
    path = fp32
    if runtime == "onnx-int8":
        path = base.with_suffix(".int8.onnx")
        if not path.is_file():
            quantize_int8(fp32, path)
    if sentence:
        from duelguard.classifier.sentence import OnnxHead

        return OnnxHead(path)
    return OnnxNetwork(path)
