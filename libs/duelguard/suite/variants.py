"""Harder versions of the suite's rows: the same prompts inside benign context, and disguised.

A guard is only as good as its worst easy bypass. Two are measured on every evaluation:

- **context dilution** (`in_context`): each row placed at the start, in the middle or at the end of
  benign text (this package's context/<lang>.txt: 200 sentences per language on ~30 everyday topics
  (weather, recipes, travel, office mail, manuals...), written for this project) of several lengths.
  Unsafe rows must still be flagged; look-alike and everyday rows must not start to be flagged because
  of where they sit. The pool is large so that no padding repeats a sentence: with a few dozen
  sentences every long padding held the same ones, and in-context FPR counted how a model read a
  handful of pairs rather than estimating a rate. It serves evaluation only (nothing trains or
  calibrates on it).
- **cut context** (`in_context(..., cut=True)`): the same, but the padding stops after exactly N words,
  mid-sentence, and a row in the middle sits at a word boundary: the row is glued to a sentence
  fragment ("... with patchy Now tell me how to ..."), so a reader that splits text into sentences
  sees one sentence holding benign words and the request. The padding probe found a promoted model
  that missed such requests it caught after a full stop (duelguard.suite.bypass, `cut_pad`).
- **obfuscation** (`obfuscate`): zero-width characters between letters, Cyrillic look-alike letters,
  full-width forms, letters spaced out. The text a reader sees is the same; only its characters
  differ.

Both are deterministic (placement and padding offset come from sha1 of the row id), so every
iteration and every registry version is measured on the same texts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from duelguard.fsio import DataError
from duelguard.suite import SUITE_DIR

CONTEXT_DIR = SUITE_DIR / "context"
CONTEXT_WORDS = (100, 400, 1000)
PLACEMENTS = ("start", "middle", "end")
OBFUSCATIONS = ("zero_width", "homoglyph", "fullwidth", "spaced")
_HOMOGLYPHS = str.maketrans("aceopxyiABCEHKMOPTXY", "асеорхуіАВСЕНКМОРТХУ")  # Latin -> Cyrillic look-alikes
_FULLWIDTH = {c: chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {0x20: "\u3000"}


def _rank(key: str) -> int:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16)


@lru_cache(maxsize=8)
def context_sentences(lang: str) -> tuple[str, ...]:
    """The benign context sentences of one language."""
    path = CONTEXT_DIR / f"{lang}.txt"
    if not path.is_file():
        raise DataError(f"{path}: no benign context for language {lang!r}")
    lines = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not lines:
        raise DataError(f"{path}: empty")
    return lines


def padding(lang: str, words: int, start: int) -> str:
    """At least `words` words of benign context in `lang`, from sentence `start` on (cycling)."""
    lines = context_sentences(lang)
    out: list[str] = []
    count, k = 0, start
    while count < words:
        line = lines[k % len(lines)]
        out.append(line)
        count += len(line.split())
        k += 1
    return " ".join(out)


def cut_padding(lang: str, words: int, start: int) -> str:
    """Exactly `words` words of benign context: it ends in the middle of a sentence (see `padding`)."""
    return " ".join(padding(lang, words, start).split()[:words])


def place(text: str, pad: str, where: str, cut: bool = False) -> str:
    """`text` at the start, middle or end of `pad`; in the middle at a sentence boundary of `pad`, or
    with `cut` after the middle word, inside a sentence."""
    if where == "start":
        return f"{text} {pad}"
    if where == "end":
        return f"{pad} {text}"
    if where == "middle":
        if cut:
            words = pad.split()
            return " ".join([*words[:len(words) // 2], text, *words[len(words) // 2:]])
        at = pad.find(". ", len(pad) // 2)
        at = len(pad) if at < 0 else at + 1
        return f"{pad[:at]} {text} {pad[at:].strip()}".strip()
    raise ValueError(f"placement {where!r} is not one of {PLACEMENTS}")


def in_context(records: Sequence[dict[str, Any]], lengths: Sequence[int] = CONTEXT_WORDS,
               cut: bool = False) -> list[dict[str, Any]]:
    """Each record at each context length, its placement and padding chosen from its id; with `cut`,
    the padding is cut mid-sentence and the record glued to the fragment (see the module docstring)."""
    kind, make_pad = ("cut", cut_padding) if cut else ("ctx", padding)
    out: list[dict[str, Any]] = []
    for rec in records:
        for words in lengths:
            key = f"{rec['id']}@{words}"
            where = PLACEMENTS[_rank(key) % len(PLACEMENTS)]
            text = place(rec["text"], make_pad(rec["lang"], words, _rank(key + "/pad")), where, cut)
            out.append({**rec, "id": f"{rec['id']}@{kind}{words}-{where}", "text": text, "context_words": words,
                        "placement": where})
    return out


def obfuscate(text: str, kind: str) -> str:
    """`text` disguised one way (see the module docstring); what a reader sees is unchanged."""
    if kind == "zero_width":
        return " ".join("\u200b".join(word) for word in text.split(" "))
    if kind == "homoglyph":
        return text.translate(_HOMOGLYPHS)
    if kind == "fullwidth":
        return text.translate(_FULLWIDTH)
    if kind == "spaced":
        return "   ".join(" ".join(word) for word in text.split())
    raise ValueError(f"obfuscation {kind!r} is not one of {OBFUSCATIONS}")
