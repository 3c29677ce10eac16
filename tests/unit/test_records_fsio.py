"""Record schema validation, JSONL errors that name file and line, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from duelguard.fsio import DataError, atomic_open, iter_jsonl, write_jsonl
from duelguard.records import read_records, validate_record, write_records


def _record(**over) -> dict:
    rec = {"id": "a1", "text": "hello", "lang": "en", "labels": [0] * 12, "source": "t", "split": "train",
           "origin": "seed", "iteration": 0, "parent_id": None}
    rec.update(over)
    return rec


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"text": "   "}, "'text' must be a non-empty string"),
        ({"labels": [0] * 11}, "'labels' must be a list of 12 ints"),
        ({"labels": [0.0] * 12}, "'labels' must be a list of 12 ints"),
        ({"labels": [2] + [0] * 11}, "'labels' must be a list of 12 ints"),
        ({"split": "val"}, "'split' must be one of"),
        ({"origin": "synthetic", "parent_id": None, "iteration": 1}, "synthetic records need a 'parent_id'"),
        ({"lang": "English"}, "'lang' must be an ISO 639-1 code"),
        ({"iteration": -1}, "'iteration' must be an int >= 0"),
    ],
)
def test_validate_record_names_the_field(override: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        validate_record(_record(**override), "f.jsonl:3")


def test_missing_fields_are_listed() -> None:
    rec = _record()
    del rec["lang"], rec["split"]
    with pytest.raises(DataError, match="missing field\\(s\\) lang, split"):
        validate_record(rec)


def test_bad_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.jsonl:3: not valid JSON"):
        list(iter_jsonl(path))


def test_non_object_line_and_invalid_utf8_are_named(tmp_path: Path) -> None:
    path = tmp_path / "y.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"y\.jsonl:2: expected a JSON object"):
        list(iter_jsonl(path))
    bad = tmp_path / "z.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"z\.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(bad))


def test_write_records_validates_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_records(path, [_record()])
    with pytest.raises(DataError):
        write_records(path, [_record(id="b"), _record(id="c", labels=[1])])
    assert [r["id"] for r in read_records(path)] == ["a1"]  # the old file is intact


def test_atomic_open_leaves_no_partial_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_open(path) as handle:
            handle.write("half")
            raise RuntimeError("killed")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
    assert write_jsonl(path, [{"a": 1}]) == 1
    assert path.read_text() == '{"a": 1}\n'
