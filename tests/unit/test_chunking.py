"""Windowing of long inputs, message flattening and padding (duelguard.classifier.inference)."""

from __future__ import annotations

import pytest

from duelguard.classifier.inference import (
    chunk_token_ids,
    encode_chunks,
    length_sorted_batches,
    pad_batch,
    special_affixes,
    text_of,
)
from duelguard.fsio import DataError


@pytest.mark.parametrize("n", [11, 16, 17, 50, 101])
def test_windows_cover_every_token_with_overlap(n: int) -> None:
    ids = list(range(n))
    chunks = chunk_token_ids(ids, window=10, overlap=3)
    assert all(len(c) == 10 for c in chunks)
    assert sorted(set(i for c in chunks for i in c)) == ids
    assert chunks[0][0] == 0 and chunks[-1][-1] == n - 1
    for a, b in zip(chunks, chunks[1:]):
        assert len(set(a) & set(b)) >= 3  # consecutive windows overlap by at least `overlap`
        assert b[0] > a[0]


def test_short_input_is_one_window_and_empty_is_none() -> None:
    assert chunk_token_ids([5, 6, 7], window=10, overlap=3) == [[5, 6, 7]]
    assert chunk_token_ids(list(range(10)), window=10, overlap=3) == [list(range(10))]
    assert chunk_token_ids([], window=10, overlap=3) == []


def test_exact_stride_positions() -> None:
    assert chunk_token_ids(list(range(12)), window=6, overlap=2) == [
        [0, 1, 2, 3, 4, 5],
        [4, 5, 6, 7, 8, 9],
        [6, 7, 8, 9, 10, 11],
    ]


def test_bad_window_arguments() -> None:
    with pytest.raises(ValueError):
        chunk_token_ids([1, 2], window=0, overlap=0)
    with pytest.raises(ValueError):
        chunk_token_ids([1, 2], window=4, overlap=4)


def test_text_of_text_and_messages() -> None:
    assert text_of({"text": "hello", "id": 3}) == "hello"
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "how can I help?"}]}
    assert text_of(chat) == "user: hi\nassistant: how can I help?"
    assert text_of({"messages": []}) == ""


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"text": 3}, "'text' must be a string"),
        ({"messages": "hi"}, "'messages' must be a list"),
        ({"messages": [{"role": "user"}]}, r"messages\[0\]"),
        ({"prompt": "x"}, "needs a 'text' string or a 'messages' list"),
        (["text"], "expected a JSON object"),
    ],
)
def test_text_of_errors_name_the_problem(obj: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        text_of(obj, "in.jsonl:4")


@pytest.fixture(scope="module")
def tokenizer():
    from duelguard.backbones import train_tiny_tokenizer

    return train_tiny_tokenizer(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=300)


def test_encode_chunks_keep_special_tokens_and_fit_max_length(tokenizer) -> None:
    prefix, suffix = special_affixes(tokenizer)
    assert prefix == [tokenizer.bos_token_id] and suffix == []
    text = "the quick brown fox jumps over the lazy dog " * 30
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = encode_chunks(tokenizer, text, max_length=32, overlap=8)
    assert len(chunks) > 1
    assert all(len(c) <= 32 and c[0] == tokenizer.bos_token_id for c in chunks)
    assert chunks[0][1:] == plain[:31] and chunks[-1][1:] == plain[-31:]
    assert encode_chunks(tokenizer, "the fox", 32, 8) == [tokenizer("the fox")["input_ids"]]
    assert encode_chunks(tokenizer, " \n\t ", 32, 8) == []


def test_pad_batch_right_pads_and_masks() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, _ = pad_batch([[5]], pad_id=0, pad_to=4)
    assert ids.tolist() == [[5, 0, 0, 0]]


def test_length_sorted_batches_group_similar_lengths() -> None:
    batches = length_sorted_batches([3, 50, 4, 49, 5, 48], batch_size=2)
    assert batches == [[1, 3], [5, 4], [2, 0]]
