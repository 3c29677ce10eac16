"""One reader per raw source under shared/data/raw (formats as found in the files, see MANIFEST.md).

Each reader yields `RawRow`s: the raw text, its language (every file is single-language except
MultiJail, whose columns are languages), the label `Outcome` from duelguard.seed.mapping and the
grouping keys that must stay in one split (HateCheck templates, MultiJail translations). A row that
cannot be read as the format promises (wrong field count, empty text, a label value the mapping table
does not know) raises DataError naming file and line: a new or corrupted raw file must never be
silently half-used. Rows dropped BY RULE are yielded with a drop Outcome so they get counted.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from duelguard.fsio import DataError
from duelguard.seed import mapping as M


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row as read, before normalisation and dedup."""

    text: str
    lang: str
    source: str
    ref: str  # "relative/path:line" (or "path item N" for JSON arrays): where the row came from
    outcome: M.Outcome
    category: str | None = None  # the dataset's own label value, kept as `label_source` provenance
    group_keys: tuple[str, ...] = ()  # rows sharing a key are kept in one split
    rule_text: str | None = None  # English text the keyword rules read (translations use their source)


Reader = Callable[[Path], Iterator[RawRow]]


def _text(value: Any, ref: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{ref}: empty or missing text in field {field!r}")
    return value


def _lookup(table: Mapping[Any, M.Outcome], value: Any, ref: str, field: str) -> M.Outcome:
    try:
        return table[value]
    except KeyError:
        raise DataError(
            f"{ref}: unknown {field} value {value!r}; add it to the mapping table in duelguard/seed/mapping.py"
        ) from None


def _csv_rows(handle: IO[str], rel: str, required: tuple[str, ...], delimiter: str = ",") -> Iterator[tuple[str, dict]]:
    """(ref, row dict) per CSV record; refs give the line the record starts on."""
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{rel}:1: empty file (expected a header)") from None
    except csv.Error as exc:
        raise DataError(f"{rel}:1: unreadable CSV header ({exc})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{rel}:1: missing column(s) {missing}; header is {header}")
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{rel}:{start}: unreadable CSV record ({exc})") from None
        ref = f"{rel}:{start}"
        start = reader.line_num + 1
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{ref}: expected {len(header)} fields ({','.join(header)}), got {len(row)}")
        yield ref, dict(zip(header, row))


def _open_csv(raw: Path, rel: str) -> IO[str]:
    path = raw / rel
    if not path.is_file():
        raise DataError(f"{path}: raw file not found")
    return path.open("r", encoding="utf-8-sig", newline="")


def _json(raw: Path, rel: str) -> Any:
    path = raw / rel
    if not path.is_file():
        raise DataError(f"{path}: raw file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{rel}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def _instructions(raw: Path, rel: str) -> Iterator[tuple[str, dict]]:
    """(ref, item) for the JSON lists of {"instruction": ...} objects."""
    data = _json(raw, rel)
    if not isinstance(data, list):
        raise DataError(f"{rel}: expected a JSON list of objects")
    for i, item in enumerate(data, 1):
        ref = f"{rel} item {i}"
        if not isinstance(item, dict) or "instruction" not in item:
            raise DataError(f"{ref}: expected an object with an 'instruction' field")
        yield ref, item


# --- readers ---------------------------------------------------------------------------------------


def read_harmbench(raw: Path) -> Iterator[RawRow]:
    """HarmBench behaviours; contextual behaviours are kept with their context (the request is about it)."""
    rel = "behaviors/harmbench_behaviors_text_all.csv"
    with _open_csv(raw, rel) as fh:
        for ref, row in _csv_rows(fh, rel, ("Behavior", "SemanticCategory", "ContextString")):
            cat = row["SemanticCategory"]
            behavior = _text(row["Behavior"], ref, "Behavior")
            text = f"{row['ContextString']}\n\n{behavior}" if row["ContextString"].strip() else behavior
            yield RawRow(text, "en", "harmbench", ref, _lookup(M.HARMBENCH, cat, ref, "SemanticCategory"), cat,
                         rule_text=behavior)


def read_strongreject(raw: Path) -> Iterator[RawRow]:
    rel = "behaviors/strongreject_dataset.csv"
    with _open_csv(raw, rel) as fh:
        for ref, row in _csv_rows(fh, rel, ("category", "forbidden_prompt")):
            cat = row["category"]
            yield RawRow(_text(row["forbidden_prompt"], ref, "forbidden_prompt"), "en", "strongreject", ref,
                         _lookup(M.STRONGREJECT, cat, ref, "category"), cat)


def read_simplesafetytests(raw: Path) -> Iterator[RawRow]:
    rel = "simplesafetytests/simplesafetytests_cases.csv"
    with _open_csv(raw, rel) as fh:
        for ref, row in _csv_rows(fh, rel, ("harm_area", "prompts_final")):
            cat = row["harm_area"]
            yield RawRow(_text(row["prompts_final"], ref, "prompts_final"), "en", "simplesafetytests", ref,
                         _lookup(M.SIMPLESAFETYTESTS, cat, ref, "harm_area"), cat)


def read_multijail(raw: Path) -> Iterator[RawRow]:
    """MultiJail: one row per prompt, one column per language; all columns of a row share a group."""
    rel = "multijail/MultiJail.csv"
    with _open_csv(raw, rel) as fh:
        for ref, row in _csv_rows(fh, rel, ("id", "tags", "en")):
            try:
                tags = ast.literal_eval(row["tags"])
            except (ValueError, SyntaxError):
                raise DataError(f"{ref}: 'tags' is not a list literal: {row['tags']!r}") from None
            if not isinstance(tags, list) or not tags:
                raise DataError(f"{ref}: 'tags' must be a non-empty list, got {row['tags']!r}")
            outcome = M.combine([_lookup(M.MULTIJAIL_TAGS, t, ref, "tags") for t in tags])
            english = _text(row["en"], ref, "en")
            langs = [c for c in row if c not in ("id", "source", "tags")]
            for lang in langs:
                yield RawRow(_text(row[lang], ref, lang), lang, "multijail", ref, outcome, "; ".join(tags),
                             (f"multijail:{row['id']}",), rule_text=english)


def read_refusal_direction(raw: Path) -> Iterator[RawRow]:
    """harmful_* (unsafe; a benchmark category or none -> keyword rules), harmless_* (Alpaca, benign)."""
    for part in ("train", "val", "test"):
        rel = f"refusal_direction/harmful_{part}.json"
        for ref, item in _instructions(raw, rel):
            cat = item.get("category")
            yield RawRow(_text(item["instruction"], ref, "instruction"), "en", "refusal_direction_harmful", ref,
                         _lookup(M.REFUSAL_HARMFUL, cat, ref, "category"), cat)
    for part in ("train", "val", "test"):
        rel = f"refusal_direction/harmless_{part}.json"
        for ref, item in _instructions(raw, rel):
            yield RawRow(_text(item["instruction"], ref, "instruction"), "en", "refusal_direction_harmless", ref,
                         M.SAFE)


def read_advbench(raw: Path) -> Iterator[RawRow]:
    rel = "behaviors/advbench_behaviors.csv"
    with _open_csv(raw, rel) as fh:
        for ref, row in _csv_rows(fh, rel, ("Behavior",)):
            yield RawRow(_text(row["Behavior"], ref, "Behavior"), "en", "advbench", ref, M.RULES)


def read_malicious_instruct(raw: Path) -> Iterator[RawRow]:
    rel = "behaviors/malicious_instruct.txt"
    path = raw / rel
    if not path.is_file():
        raise DataError(f"{path}: raw file not found")
    with path.open("r", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if line.strip():
                yield RawRow(line, "en", "malicious_instruct", f"{rel}:{line_no}", M.RULES)


def read_safety_tuned_llamas(raw: Path) -> Iterator[RawRow]:
    """The safety-only training instructions (unsafe, keyword rules) and the evaluation sets."""
    for ref, item in _instructions(raw, "safety_tuned_llamas/safety_only_data_Instructions.json"):
        text = _text(item["instruction"], ref, "instruction")
        if item.get("input"):
            text = f"{text}\n\n{item['input']}"
        yield RawRow(text, "en", "safety_tuned_llamas", ref, M.RULES)
    names = [*M.STL_EVALUATION, "I-MaliciousInstructions"]
    for name in names:
        rel = f"safety_tuned_llamas/evaluation/{name}.json"
        data = _json(raw, rel)
        if not isinstance(data, dict) or not isinstance(data.get("instructions"), list):
            raise DataError(f"{rel}: expected an object with an 'instructions' list")
        tags = data.get("tags")
        if name == "I-MaliciousInstructions" and (not isinstance(tags, list) or len(tags) != len(data["instructions"])):
            raise DataError(f"{rel}: 'tags' must be a list as long as 'instructions'")
        for i, instruction in enumerate(data["instructions"], 1):
            ref = f"{rel} item {i}"
            if tags is not None and name == "I-MaliciousInstructions":
                outcome, cat = _lookup(M.STL_MALICIOUS_TAGS, tags[i - 1], ref, "tags"), f"{name}:{tags[i - 1]}"
            else:
                outcome, cat = M.STL_EVALUATION[name], name
            yield RawRow(_text(instruction, ref, "instructions"), "en", "safety_tuned_llamas", ref, outcome, cat)


def _hatecheck(rel: str, source: str, lang: str, group_prefix: str, text_col: str) -> Reader:
    def read(raw: Path) -> Iterator[RawRow]:
        with _open_csv(raw, rel) as fh:
            for ref, row in _csv_rows(fh, rel, (text_col, "label_gold", "templ_id", "ref_templ_id")):
                label = row["label_gold"]
                keys = [f"{group_prefix}:templ:{_int_id(row['templ_id'], ref, 'templ_id')}"]
                if row["ref_templ_id"].strip():
                    keys.append(f"{group_prefix}:templ:{_int_id(row['ref_templ_id'], ref, 'ref_templ_id')}")
                yield RawRow(_text(row[text_col], ref, text_col), lang, source, ref,
                             _lookup(M.HATECHECK_LABEL, label, ref, "label_gold"), label, tuple(keys))

    return read


def _int_id(value: str, ref: str, field: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise DataError(f"{ref}: {field} must be a number, got {value!r}") from None


# HateCheck (en) and Multilingual HateCheck share no template numbering; MHC's templ_id is aligned
# across its languages (template 1 is "I hate [IDENT_P]" in fr, de and es), so MHC groups span
# languages: a translated template must not sit in train in one language and test in another.
read_hatecheck_en = _hatecheck("hatecheck_en/test_suite_cases.csv", "hatecheck_en", "en", "hatecheck_en", "test_case")
_MHC = {"fr": "french", "de": "german", "es": "spanish"}


def read_hatecheck_multilingual(raw: Path) -> Iterator[RawRow]:
    for lang, name in _MHC.items():
        rel = f"hatecheck_multilingual/hatecheck_cases_final_{name}.csv"
        yield from _hatecheck(rel, "hatecheck_multilingual", lang, "mhc", "test_case")(raw)


def read_germeval2018(raw: Path) -> Iterator[RawRow]:
    """Tab-separated: text, OFFENSE/OTHER, ABUSE/INSULT/PROFANITY/OTHER; no header, no quoting."""
    for part in ("training", "test"):
        rel = f"germeval2018/germeval2018.{part}.txt"
        path = raw / rel
        if not path.is_file():
            raise DataError(f"{path}: raw file not found")
        with path.open("r", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                ref = f"{rel}:{line_no}"
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 3:
                    raise DataError(f"{ref}: expected 3 tab-separated fields (text, coarse, fine), got {len(fields)}")
                text, coarse, fine = fields
                yield RawRow(_text(text, ref, "text"), "de", "germeval2018", ref,
                             _lookup(M.GERMEVAL, (coarse, fine), ref, "label pair"), f"{coarse}/{fine}")


def read_davidson(raw: Path) -> Iterator[RawRow]:
    rel = "davidson/labeled_data.csv"
    with _open_csv(raw, rel) as fh:
        for ref, row in _csv_rows(fh, rel, ("class", "tweet")):
            label = row["class"]
            yield RawRow(_text(row["tweet"], ref, "tweet"), "en", "davidson", ref,
                         _lookup(M.DAVIDSON_CLASS, label, ref, "class"), f"class {label}")


def read_mlma(raw: Path) -> Iterator[RawRow]:
    """MLMA from its zip: English (the with-stop-words file: the other one has stop words removed,
    which is not natural text) and French. Arabic is not a target language."""
    rel_zip = "mlma/hate_speech_mlma.zip"
    path = raw / rel_zip
    if not path.is_file():
        raise DataError(f"{path}: raw file not found")
    members = {"en": "hate_speech_mlma/en_dataset_with_stop_words.csv", "fr": "hate_speech_mlma/fr_dataset.csv"}
    with zipfile.ZipFile(path) as zf:
        for lang, member in members.items():
            rel = f"{rel_zip}!{member}"
            try:
                binary = zf.open(member)
            except KeyError:
                raise DataError(f"{rel}: member not found in the zip") from None
            with io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as fh:
                for ref, row in _csv_rows(fh, rel, ("tweet", "sentiment")):
                    try:
                        outcome = M.mlma_outcome(row["sentiment"])
                    except KeyError as exc:
                        raise DataError(f"{ref}: {exc.args[0]}") from None
                    yield RawRow(_text(row["tweet"], ref, "tweet"), lang, "mlma", ref, outcome, row["sentiment"])


def read_toxigen(raw: Path) -> Iterator[RawRow]:
    """ToxiGen prompt files: each line is a "- a\\n- b\\n..." list (literal backslash-n) of sentences,
    hate_* or neutral_* by target group. The lines are few-shot prompts sampled from a small pool,
    so each sentence recurs hundreds of times: a sentence is read once per file (at its first line)."""
    folder = raw / "toxigen" / "prompts"
    files = sorted(folder.glob("*_1k.txt"))
    if not files:
        raise DataError(f"{folder}: no ToxiGen prompt files (*_1k.txt) found")
    for path in files:
        rel = f"toxigen/prompts/{path.name}"
        side, _, group = path.stem.removesuffix("_1k").partition("_")
        outcome = _lookup(M.TOXIGEN_SIDE, side, rel, "file prefix")
        seen: set[str] = set()
        with path.open("r", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                for part in line.rstrip("\n").split("\\n"):
                    sentence = part.strip().removeprefix("-").strip()
                    if sentence and sentence not in seen:
                        seen.add(sentence)
                        yield RawRow(sentence, "en", "toxigen", f"{rel}:{line_no}", outcome, f"{side}:{group}")


# Source order is the dedup priority: when the same text is in several sources, the first source's
# row is kept (sources with their own category labels first, keyword-labelled ones after).
SOURCES: dict[str, Reader] = {
    "harmbench": read_harmbench,
    "strongreject": read_strongreject,
    "simplesafetytests": read_simplesafetytests,
    "multijail": read_multijail,
    "refusal_direction": read_refusal_direction,
    "advbench": read_advbench,
    "malicious_instruct": read_malicious_instruct,
    "safety_tuned_llamas": read_safety_tuned_llamas,
    "hatecheck_en": read_hatecheck_en,
    "hatecheck_multilingual": read_hatecheck_multilingual,
    "germeval2018": read_germeval2018,
    "mlma": read_mlma,
    "davidson": read_davidson,
    "toxigen": read_toxigen,
}


# What each source's rows are (the `source` field of its rows): requests written to an assistant
# ("instruction") or posts, tweets and templated statements ("statement"). Seed quotas are per kind,
# so benign instructions can be asked for in proportion to unsafe ones.
SOURCE_KINDS: dict[str, str] = {
    "harmbench": "instruction",
    "strongreject": "instruction",
    "simplesafetytests": "instruction",
    "multijail": "instruction",
    "refusal_direction_harmful": "instruction",
    "refusal_direction_harmless": "instruction",
    "advbench": "instruction",
    "malicious_instruct": "instruction",
    "safety_tuned_llamas": "instruction",
    "hatecheck_en": "statement",
    "hatecheck_multilingual": "statement",
    "germeval2018": "statement",
    "mlma": "statement",
    "davidson": "statement",
    "toxigen": "statement",
}


def read_source(name: str, raw: Path) -> list[RawRow]:
    """All rows of one source (raises DataError naming file and line on a malformed row)."""
    if name not in SOURCES:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    return list(SOURCES[name](Path(raw)))
