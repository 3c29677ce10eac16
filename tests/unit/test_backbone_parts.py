"""kind=gguf_parts: a GGUF file split across installed packages is joined in order and sha256-verified
(here: three small part packages written to a temp dir and put on sys.path; dequantising a real GGUF is
what `duelguard fetch-weights` and bench/bench_generator.py do)."""

from __future__ import annotations

import hashlib
import sys

import pytest

from duelguard.backbones import assemble_parts
from duelguard.config import Backbone
from duelguard.errors import BackboneError

PARTS = [b"GGUF" + bytes(range(7)), b"middle part " * 3, b"the end"]


@pytest.fixture()
def part_packages(tmp_path, monkeypatch):
    for n, blob in enumerate(PARTS, 1):
        pkg = tmp_path / "site" / f"fakeparts{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield tmp_path
    for n in range(1, len(PARTS) + 1):
        sys.modules.pop(f"fakeparts{n}", None)


def _backbone(sha256: str | None, parts: int = len(PARTS)) -> Backbone:
    return Backbone(kind="gguf_parts", name_or_path="fakeparts{n}:data/part{n:02d}.bin", parts=parts,
                    architecture="qwen2", sha256=sha256, tokenizer=None, tokenizer_sha256=None,
                    tiny_hidden_size=64, tiny_layers=2, tiny_heads=4, tiny_vocab_size=2000)


def test_parts_are_joined_in_order_and_verified(part_packages):
    joined = b"".join(PARTS)
    path, digest = assemble_parts(_backbone(hashlib.sha256(joined).hexdigest()), part_packages / "cache")
    assert path.read_bytes() == joined and digest == hashlib.sha256(joined).hexdigest()
    again, _ = assemble_parts(_backbone(digest), part_packages / "cache")  # reused, checksum re-verified
    assert again == path
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file left behind"


def test_wrong_checksum_is_an_error_and_leaves_nothing(part_packages):
    with pytest.raises(BackboneError, match="3 parts of 'fakeparts"):
        assemble_parts(_backbone("0" * 64), part_packages / "cache")
    assert not list((part_packages / "cache" / "gguf").iterdir())


def test_missing_part_package_and_missing_checksum_are_clear_errors(part_packages):
    with pytest.raises(BackboneError, match="package 'fakeparts4' is not installed"):
        assemble_parts(_backbone("0" * 64, parts=4), part_packages / "cache")
    with pytest.raises(BackboneError, match="needs backbone.sha256"):
        assemble_parts(_backbone(None), part_packages / "cache")
