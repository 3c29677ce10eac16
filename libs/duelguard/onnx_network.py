"""The network part of a saved classifier as ONNX, verified against torch: what Triton serves.

A token model's whole network goes to ONNX (plus its tokenizer files); a sentence classifier's head
only (the encoder is a package the Python model embeds with). Either way the file is checked
against torch on probe inputs before anyone uses it, so writing it also runs an inference through
ONNX Runtime. One function, used by the Triton export (duelguard.serving.triton_repository) and by
promotion's load check (duelguard.registry.loadcheck), so the check exercises the export serving
runs. A module of its own below both, so that the registry need not import serving (which imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class NetworkExport:
    onnx_path: Path
    max_abs_diff: float  # ONNX vs torch logits on the probe inputs
    embedding_dim: int | None  # a sentence classifier's head input width; None for a token model


def export_network(classifier: Any, version_dir: Path, opset: int) -> NetworkExport:
    """Write `classifier`'s network as version_dir/model.onnx (+ tokenizer files for a token model),
    verified against torch (OnnxExportError past the tolerance)."""
    version_dir = Path(version_dir)
    if hasattr(classifier, "encoder"):  # a sentence classifier: the head goes to ONNX, the encoder is a package
        import numpy as np

        from duelguard.classifier.sentence import OnnxHead, export_head_onnx, head_logits

        embedding_dim = int(classifier.head_config["dim"])
        onnx_path = export_head_onnx(classifier.model, version_dir / "model.onnx", embedding_dim, opset)
        probe = np.random.default_rng(1).standard_normal((16, embedding_dim)).astype(np.float32)
        diff = float(np.abs(OnnxHead(onnx_path).logits(probe) - head_logits(classifier.model, probe)).max())
        return NetworkExport(onnx_path, diff, embedding_dim)
    from duelguard.classifier.onnx_export import export_onnx, probe_texts, verify_onnx

    onnx_path = export_onnx(classifier.model, version_dir / "model.onnx", opset)
    diff = verify_onnx(onnx_path, classifier.model, classifier.tokenizer, probe_texts(16), classifier.max_length)
    classifier.tokenizer.save_pretrained(version_dir)
    return NetworkExport(onnx_path, float(diff), None)
