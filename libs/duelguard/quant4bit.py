"""bitsandbytes 4-bit (NF4) models on CPU that behave the same on every x86 CPU kind.

bitsandbytes 0.50 takes a second CPU code path on CPUs with AVX512-BF16 only
(`bitsandbytes.functional.has_avx512bf16()`; AVX2-only CPUs never take it): the first forward of a
`Linear4bit` in eval mode on an input that needs no gradient (any `torch.no_grad()` forward) repacks
that layer's weight, in place and for good, into an inference-only layout
(`bitsandbytes.functional._convert_weight_packed_for_cpu`). Measured on this project's tiny generator
(bitsandbytes 0.50.2, an AMD EPYC with avx512_bf16), that has two consequences:

- the repack asserts `out_features % 32 == 0` ("N must be divisible by block_n") and needs
  `in_features` to be a multiple of the quantisation block (64): a model with any narrower or odd
  layer (the tiny profile's k_proj/v_proj have 16 outputs) crashes on its first no-grad forward;
- a repacked layer multiplies with the `gemv_4bit` kernel, which has no backward: a model trained
  after one no-grad forward (DPO measures its log-prob margin first) sends no gradient through its
  frozen 4-bit weights, so every LoRA below the top layer gets a wrong gradient, silently (layer 0's
  q_proj LoRA-A gradient: |g|₁ 0.53 instead of 1.21, loss unchanged).

Two remedies, one per use:

- training (`keep_4bit_trainable`, the QLoRA base of duelguard.loop.dpo): turn the repack off on every
  4-bit layer. Linear4bit keeps a per-layer flag, `support_avx512bf16_for_cpu`, set from the CPU when
  the layer is built; with it off every forward takes the dequantise-then-matmul path AVX2 CPUs take,
  which autograd differentiates and which takes any shape. Same gradients on every CPU kind.
- inference (`cpu_skip_modules`, the generator's 4-bit load): keep bitsandbytes' fast path, and
  leave out of 4-bit quantisation (`llm_int8_skip_modules`) the linear layers the repack cannot take,
  on AVX512-BF16 CPUs only; they stay in full precision.
"""

from __future__ import annotations

from typing import Any

REPACK_FLAG = "support_avx512bf16_for_cpu"  # Linear4bit's per-layer switch for the CPU repack
REPACK_BLOCK_N = 32  # the repack's block of output rows (its `block_n`)
QUANT_BLOCKSIZE = 64  # bitsandbytes' 4-bit blocksize on CPU: the repack reshapes absmax per row of blocks


def cpu_repacks_4bit() -> bool:
    """Whether bitsandbytes takes its AVX512-BF16 repack path on this CPU (what Linear4bit asks)."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def repack_unsafe(in_features: int, out_features: int) -> bool:
    """A linear layer of this shape cannot be repacked (the repack would raise)."""
    return bool(out_features % REPACK_BLOCK_N or in_features % QUANT_BLOCKSIZE)


def cpu_skip_modules(config: Any, avx512_bf16: bool | None = None) -> list[str] | None:
    """`llm_int8_skip_modules` for loading `config`'s causal LM in 4-bit on a CPU.

    None (transformers' default list) on CPUs without AVX512-BF16 (`avx512_bf16`, default: this
    CPU's), or when every linear layer can be repacked. Otherwise transformers' defaults (the output
    embedding and tied weights: passing a list replaces them) plus the full names of the linear
    layers that cannot be repacked. Shapes come from a weightless model built on the meta device.
    """
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM
    from transformers.quantizers.base import get_keys_to_not_convert

    if avx512_bf16 is None:
        avx512_bf16 = cpu_repacks_4bit()
    if not avx512_bf16:
        return None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    defaults = set(get_keys_to_not_convert(model))
    unsafe = {name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and repack_unsafe(module.in_features, module.out_features)} - defaults
    return sorted(defaults | unsafe) if unsafe else None


def keep_4bit_trainable(model: Any) -> Any:
    """Turn off the CPU repack on every 4-bit layer of `model` (before any forward), so that it trains
    with true gradients whatever the shapes and the CPU. Returns `model`.

    Raises RuntimeError, naming the layer, when a layer was already repacked (a no-grad forward ran:
    reload the model) or when this bitsandbytes has no per-layer switch on a CPU that repacks.
    """
    import bitsandbytes as bnb

    repacks = cpu_repacks_4bit()
    for name, layer in model.named_modules():
        if not isinstance(layer, bnb.nn.Linear4bit):
            continue
        if getattr(getattr(layer.weight, "quant_state", None), "packing_format_for_cpu", False):
            raise RuntimeError(
                f"{name}: this 4-bit layer was repacked for inference by a no-grad forward on an AVX512-BF16 CPU; "
                "it cannot be trained any more (no gradient flows through it): reload the model before training"
            )
        if repacks and not hasattr(layer, REPACK_FLAG):
            raise RuntimeError(
                f"bitsandbytes {bnb.__version__}: Linear4bit has no '{REPACK_FLAG}' switch, so its AVX512-BF16 CPU "
                "repack cannot be turned off and QLoRA training on this CPU would crash or get wrong gradients; "
                "install the pinned bitsandbytes (requirements.lock), or train on a GPU or an AVX2-only CPU"
            )
        setattr(layer, REPACK_FLAG, False)
    return model
