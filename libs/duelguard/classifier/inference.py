"""Input handling of token models, and the chat flattening every scorer shares.

- text_of: an input object carries `text` (a string) or `messages` (a list of {role, content}),
  flattened to one "role: content" line per message, joined by newlines (each line is a sentence
  unit of duelguard.classifier.units, so one unsafe message is scored on its own).
- Which parts of a text are scored (sentences and word windows), the cost bound and the long-input
  policy live in duelguard.classifier.units, for every kind. A token model then cuts each unit into
  windows of `max_length - <special tokens>` tokens that overlap by `overlap` tokens (the last
  window aligned to the end, so every token is seen); each window gets the tokenizer's special
  tokens back, and a unit's score per category is the MAX over its windows.
- Batching: windows are sorted by length and padded (right, with the pad id) only to the longest
  window of their batch: far less compute than padding every input to max_length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

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


@lru_cache(maxsize=8)
def special_affixes_cached(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    prefix, suffix = special_affixes(tokenizer)
    return tuple(prefix), tuple(suffix)


def encode_chunks(tokenizer: Any, text: str, max_length: int, overlap: int) -> list[list[int]]:
    """Token id windows (special tokens included, each <= max_length) covering one text; none for blank text."""
    if not text.strip():
        return []
    prefix, suffix = special_affixes_cached(tokenizer)
    window = max_length - len(prefix) - len(suffix)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [list(prefix) + chunk + list(suffix) for chunk in chunk_token_ids(ids, window, min(overlap, window - 1))]


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


def batched_window_probs(window_probs: Callable[[Any, Any], np.ndarray], chunks: Sequence[Sequence[int]], pad_id: int,
                         num_labels: int, batch_size: int, pad_to: int | None = None, sort_by_length: bool = True,
                         progress: bool = False) -> np.ndarray:
    """(len(chunks), C) probabilities of token windows, in batches (length-sorted by default), each
    batch padded and passed to `window_probs(input_ids, attention_mask)` (torch tensors)."""
    from tqdm.auto import tqdm

    out = np.zeros((len(chunks), num_labels), dtype=np.float32)
    if sort_by_length:
        batches = length_sorted_batches([len(c) for c in chunks], batch_size)
    else:
        batches = [list(range(i, min(i + batch_size, len(chunks)))) for i in range(0, len(chunks), batch_size)]
    for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
        input_ids, attention = pad_batch([chunks[i] for i in batch], pad_id, pad_to)
        out[batch] = window_probs(input_ids, attention)
    return out


def token_unit_probs(tokenizer: Any, units: Sequence[str], max_length: int, overlap: int, batch_size: int,
                     window_probs: Callable[[Any, Any], np.ndarray], num_labels: int, progress: bool = False) -> np.ndarray:
    """(len(units), C): each unit's token windows scored by `window_probs(input_ids, attention_mask)`
    (the torch network, ONNX Runtime or a Triton call; batched_window_probs), max over its windows."""
    owners: list[int] = []
    chunks: list[list[int]] = []
    for i, unit in enumerate(units):
        windows = encode_chunks(tokenizer, unit, max_length, overlap)
        owners.extend([i] * len(windows))
        chunks.extend(windows)
    probs = np.zeros((len(units), num_labels), dtype=np.float32)
    if chunks:
        window_out = batched_window_probs(window_probs, chunks, tokenizer.pad_token_id, num_labels, batch_size,
                                          progress=progress)
        np.maximum.at(probs, np.asarray(owners), window_out)
    return probs
