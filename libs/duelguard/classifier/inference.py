"""Input handling shared by every scorer of the classifier (`duelguard predict`, evaluation, the
Triton model): one place decides how a chat becomes text, how long text is windowed and how
batches are padded, so a text gets the same score everywhere.

- text_of: an input object carries `text` (a string) or `messages` (a list of {role, content}),
  flattened to one "role: content" line per message, joined by newlines.
- Long inputs: the text is tokenised without special tokens and cut into windows of
  `max_length - <special tokens>` tokens that overlap by `overlap` tokens (the last window is
  aligned to the end, so every token is seen and no window is a short tail); each window gets the
  tokenizer's special tokens back and is scored; a text's score per category is the MAX over its
  windows (an unsafe passage anywhere makes the text unsafe).
- Bounded cost: a text never costs more than `max_windows` windows. Beyond that the policy is
  head + tail: the first ceil(max_windows / 2) windows and the last floor(max_windows / 2) are
  scored and the text is reported `truncated` (a jailbreak or an unsafe request sits at the start
  or the end of a long paste far more often than in its middle; a caller that must see every token
  splits the text itself). Tokenising is bounded too: a text longer than
  max_windows x window x CHARS_PER_TOKEN_BOUND characters is cut to that many characters of head and
  tail before tokenising, so a 1 MB paste costs what a few thousand characters cost.
- Empty or whitespace-only text has no tokens to score: its probabilities are defined as all zeros
  (so unsafe=false), instead of the 0.5-ish score an empty forward pass would produce.
- Batching: windows are sorted by length and padded (right, with the pad id) only to the longest
  window of their batch: far less compute than padding every input to max_length.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from duelguard.fsio import DataError


def text_of(obj: Any, where: str = "input") -> str:
    """The text to classify in an input object: `text`, or `messages` flattened to "role: content" lines."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "text" in obj:
        text = obj["text"]
        if not isinstance(text, str):
            raise DataError(f"{where}: 'text' must be a string, got {type(text).__name__}")
        return text
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list):
            raise DataError(f"{where}: 'messages' must be a list of {{role, content}} objects")
        lines = []
        for k, message in enumerate(messages):
            if (
                not isinstance(message, dict)
                or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)
            ):
                raise DataError(f"{where}: messages[{k}] must be an object with string 'role' and 'content'")
            lines.append(f"{message['role']}: {message['content']}")
        return "\n".join(lines)
    raise DataError(f"{where}: needs a 'text' string or a 'messages' list")


def chunk_token_ids(ids: Sequence[int], window: int, overlap: int) -> list[list[int]]:
    """Overlapping windows of at most `window` ids that together cover every id.

    Consecutive windows start `window - overlap` apart; the last one ends at the last id. An input
    that fits is one window; an empty input is no window.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for window {window}")
    ids = list(ids)
    if len(ids) <= window:
        return [ids] if ids else []
    starts = list(range(0, len(ids) - window, window - overlap)) + [len(ids) - window]
    return [ids[s : s + window] for s in starts]


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text (e.g. Gemma's <bos>), found by probing."""
    probe = "duelguard probe"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise ValueError("cannot locate the text inside the tokenizer's special-token template")


# No tokenizer we use averages more characters per token than this on real text, so cutting the
# head and tail at (tokens wanted) x this many characters keeps every token the windows need.
CHARS_PER_TOKEN_BOUND = 16


class Windows(NamedTuple):
    """The windows one text is scored on (token-id lists; word-window strings for a sentence
    classifier, duelguard.classifier.sentence.word_windows), and whether the window cap dropped any."""

    ids: list[Any]
    truncated: bool


@lru_cache(maxsize=8)
def special_affixes_cached(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    prefix, suffix = special_affixes(tokenizer)
    return tuple(prefix), tuple(suffix)


def encode_chunks(tokenizer: Any, text: str, max_length: int, overlap: int, max_windows: int | None = None) -> Windows:
    """Token id windows (special tokens included, each <= max_length) for one text, at most
    `max_windows` of them (head + tail policy, see the module docstring); none for blank text."""
    if not text.strip():
        return Windows([], False)
    prefix, suffix = special_affixes_cached(tokenizer)
    window = max_length - len(prefix) - len(suffix)
    overlap = min(overlap, window - 1)

    def windows_of(part: str) -> list[list[int]]:
        return chunk_token_ids(tokenizer(part, add_special_tokens=False)["input_ids"], window, overlap)

    if max_windows is None:
        chunks, truncated = windows_of(text), False
    else:
        if max_windows < 2:
            raise ValueError(f"max_windows must be >= 2 (a head and a tail window), got {max_windows}")
        head_n, tail_n = (max_windows + 1) // 2, max_windows // 2
        budget = max_windows * window * CHARS_PER_TOKEN_BOUND
        if len(text) > budget:
            head_chars, tail_chars = head_n * window * CHARS_PER_TOKEN_BOUND, tail_n * window * CHARS_PER_TOKEN_BOUND
            chunks, truncated = windows_of(text[:head_chars])[:head_n] + windows_of(text[-tail_chars:])[-tail_n:], True
        else:
            chunks = windows_of(text)
            truncated = len(chunks) > max_windows
            if truncated:
                chunks = chunks[:head_n] + chunks[-tail_n:]
    return Windows([list(prefix) + chunk + list(suffix) for chunk in chunks], truncated)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, pad_to: int | None = None) -> tuple[Any, Any]:
    """(input_ids, attention_mask) long tensors, right-padded to the longest sequence (or `pad_to`)."""
    import torch

    width = pad_to or max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        attention[row, : len(seq)] = 1
    return input_ids, attention


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def score_chunks(
    model: Any,
    chunks: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int,
    pad_to: int | None = None,
    sort_by_length: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Sigmoid probabilities (len(chunks), C) for token windows, batched (length-sorted by default);
    `model` is the torch network or an ONNX Runtime one (duelguard.classifier.runtime)."""
    import torch
    from tqdm.auto import tqdm

    from duelguard.classifier.runtime import network_probs, num_labels

    out = np.zeros((len(chunks), num_labels(model)), dtype=np.float32)
    if sort_by_length:
        batches = length_sorted_batches([len(c) for c in chunks], batch_size)
    else:
        batches = [list(range(i, min(i + batch_size, len(chunks)))) for i in range(0, len(chunks), batch_size)]
    if hasattr(model, "eval"):
        model.eval()
    with torch.inference_mode():
        for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
            input_ids, attention = pad_batch([chunks[i] for i in batch], pad_id, pad_to)
            out[batch] = network_probs(model, input_ids, attention)
    return out


def score_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    overlap: int,
    batch_size: int,
    max_windows: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (len(texts), C), truncated (len(texts),) bool): each text's windows scored and
    max-aggregated; blank text -> zeros."""
    owners: list[int] = []
    chunks: list[list[int]] = []
    truncated = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        windows = encode_chunks(tokenizer, text, max_length, overlap, max_windows)
        truncated[i] = windows.truncated
        owners.extend([i] * len(windows.ids))
        chunks.extend(windows.ids)
    from duelguard.classifier.runtime import num_labels

    probs = np.zeros((len(texts), num_labels(model)), dtype=np.float32)
    if chunks:
        chunk_probs = score_chunks(model, chunks, tokenizer.pad_token_id, batch_size, progress=progress)
        np.maximum.at(probs, np.asarray(owners), chunk_probs)
    return probs, truncated
