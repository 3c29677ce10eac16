"""Export a token model's network to ONNX and prove the export computes what torch computes; cache
the export `duelguard predict --runtime onnx|onnx-int8` runs.

Each kind exports itself (`export_network`: a token model with this module's export_onnx and
verify_onnx, a sentence classifier its head, duelguard.classifier.sentence), and what Triton serves,
promotion's load check and `predict --runtime onnx` run is that one export. Only the network goes to
ONNX (input_ids, attention_mask -> logits); tokenisation, chunking and the sigmoid/max aggregation
stay in Python (duelguard.classifier.units, .inference) so that Triton and `duelguard predict` share
one implementation. The legacy TorchScript exporter is used on purpose:
the dynamo exporter needs onnxscript (not in the stack) and the legacy one matches torch to ~1e-7
on this architecture (measured: max |diff| 6e-8). Batch and sequence axes are dynamic, so one file serves every
chunk batch the Triton model builds.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.classifier.runtime import OUTPUT_NAME, RUNTIMES, cpu_session
from duelguard.fsio import atomic_open

INPUT_NAMES = ("input_ids", "attention_mask")
DEFAULT_TOLERANCE = 1e-4
ONNX_FILE = "model.onnx"  # what export_network writes into its directory

# Random multilingual probe texts: the verification mixes scripts and lengths so that a broken
# dynamic axis, a padding bug or a tokenizer/vocabulary mismatch shows up as a large difference.
_PROBE_WORDS = (
    "how", "to", "make", "a", "bomb", "hello", "world", "please", "help", "me",
    "comment", "fabriquer", "une", "arme", "bonjour", "s'il", "vous", "plaît", "ça",
    "cómo", "hacer", "daño", "hola", "mañana", "niño", "por", "favor",
    "wie", "baue", "ich", "Größe", "Straße", "bitte", "schön", "über",
    "Привет", "мир", "你好", "世界", "こんにちは", "🙂", "!", "?", "1234",
)


class OnnxExportError(RuntimeError):
    """The ONNX export differs from torch by more than the tolerance."""


def probe_texts(count: int = 8, seed: int = 0) -> list[str]:
    """`count` random multilingual texts of varied length (deterministic for a seed)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_PROBE_WORDS) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def export_onnx(model: Any, out_path: Path, opset: int, vocab_size: int | None = None) -> Path:
    """Trace `model` (an HF sequence classifier) to `out_path` with dynamic batch/sequence axes.

    The model is switched to eager attention for tracing: SDPA mask construction in transformers
    emits data-dependent control flow that the TorchScript tracer freezes to the example shape.
    """
    import torch

    model = model.eval()
    config = model.config
    previous_attn = getattr(config, "_attn_implementation", None)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:  # older transformers
        config._attn_implementation = "eager"
    vocab = vocab_size or config.vocab_size
    example_ids = torch.randint(low=4, high=vocab, size=(2, 7), dtype=torch.long)
    example_mask = torch.ones_like(example_ids)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {0: "batch", 1: "sequence"}
    try:
        # Known-benign trace warnings: the mask's `padding_length > 0` branch is always false without a
        # KV cache, and the pooling index (last non-pad token) is never negative; verify_onnx checks the result.
        with warnings.catch_warnings(), torch.no_grad(), atomic_open(out_path, "wb", encoding=None) as handle:
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
            torch.onnx.export(
                _logits_module(model),
                (example_ids, example_mask),
                handle,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    "input_ids": dynamic,
                    "attention_mask": dynamic,
                    OUTPUT_NAME: {0: "batch"},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        if previous_attn and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(previous_attn)
    return out_path


def _logits_module(model: Any) -> Any:
    """Wrap the HF model so that tracing sees positional tensors in and one tensor out."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return LogitsOnly(model)


def verify_onnx(
    onnx_path: Path,
    model: Any,
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> float:
    """Max |logits_onnx - logits_torch| over `texts` (padded as one batch); raise above `tolerance`.

    One padded batch of mixed lengths exercises the dynamic axes and the last-non-pad-token pooling
    of the classification head at once.
    """
    import torch

    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    ids = enc["input_ids"].astype(np.int64)
    mask = enc["attention_mask"].astype(np.int64)
    with torch.no_grad():
        expected = model.eval()(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), use_cache=False
        ).logits.float().numpy()
    (got,) = cpu_session(onnx_path).run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})
    diff = float(np.max(np.abs(got - expected)))
    if not np.isfinite(diff) or diff > tolerance:
        raise OnnxExportError(f"{onnx_path}: ONNX logits differ from torch by {diff:.3g} (> {tolerance:g})")
    return diff


def quantize_int8(onnx_path: Path, out_path: Path) -> Path:
    """Dynamic INT8 quantisation of the network (MatMul/Gemm weights to int8 per channel, activations
    quantised on the fly): ~4x smaller linear layers, faster on CPUs without bf16. The embedding
    tables stay float (their lookup costs nothing; quantising them only loses accuracy). Its quality
    delta against the float model is measured, not assumed (bench/bench_classifier.py)."""
    import os
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        quantize_dynamic(str(onnx_path), tmp, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
        os.replace(tmp, out_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out_path


def onnx_network(classifier: Any, model_dir: Path, cache_dir: Path, runtime: str, opset: int = 17) -> Any:
    """`classifier`'s ONNX Runtime stand-in for its torch network (its export_network, INT8-quantised
    for "onnx-int8"), cached under `cache_dir`/onnx by the hash of the model's files: the export (~half
    a minute for e5-small) runs once per model, and is verified against torch before it is used."""
    import hashlib
    import tempfile

    if runtime not in RUNTIMES[1:]:
        raise ValueError(f"unknown ONNX runtime {runtime!r}; expected one of {RUNTIMES[1:]}")
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".json")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    base = Path(cache_dir) / "onnx" / digest.hexdigest()[:24]
    fp32 = base.with_suffix(".onnx")
    if not fp32.is_file():
        base.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{base.name}.", dir=base.parent) as tmp:
            classifier.export_network(Path(tmp), opset).onnx_path.replace(fp32)
    path = fp32
    if runtime == "onnx-int8":
        path = base.with_suffix(".int8.onnx")
        if not path.is_file():
            quantize_int8(fp32, path)
    return classifier.onnx_runtime(path)
