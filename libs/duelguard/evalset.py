"""The frozen evaluation sets: which records every evaluation scores.

`evaluation_records(name)`: "suite" is the behavioural suite's report half (duelguard.suite);
"suite_context" the same rows inside benign context of 100, 400 and 1,000 words; "suite_cut" the same
again with the context cut mid-sentence and the row glued to the fragment; "test" (or "dev")
the frozen sample of that seed split described below.

Numbers must be comparable across iterations and across registry versions, so the sample depends only
on record ids: per language, the records of a split are ordered by sha1(record id) and the first
`max_per_lang` are kept (not file order, not a random state). Training calibrates its thresholds on
this sample of the dev split (plus the suite's calib half), evaluate scores the test one, and promotion re-evaluates old champions on it; a
sha256 of the chosen ids (eval_set_hash) proves two numbers came from the same set.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.fsio import DataError
from duelguard.layout import Layout
from duelguard.records import read_records
from duelguard.suite import suite_records

# The suite's report half inside benign context of several lengths (duelguard.suite.variants): is a
# request still found when it is not alone, is a look-alike still let through?
CONTEXT_SET = "suite_context"
# The same with the context cut mid-sentence: the row is glued to a sentence fragment (a reader that
# splits sentences sees one sentence of benign words and request). A promoted model missed such requests.
CUT_SET = "suite_cut"
# Sets of long texts: the probe embeds a text whole, as one vector, so it is no floor there.
LONG_TEXT_SETS = (CONTEXT_SET, CUT_SET)
# The sets built from the behavioural suite (either half); every other set is a seed split sample.
SUITE_SETS = ("suite", *LONG_TEXT_SETS)


def _id_rank(record_id: str) -> str:
    return hashlib.sha1(record_id.encode("utf-8")).hexdigest()


def eval_sample(path: Path, max_per_lang: int | None) -> list[dict[str, Any]]:
    """The frozen evaluation sample of one split file: per language, the first N ids by sha1 rank."""
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in read_records(path):
        by_lang[rec["lang"]].append(rec)
    sample: list[dict[str, Any]] = []
    for lang in sorted(by_lang):
        ranked = sorted(by_lang[lang], key=lambda r: _id_rank(r["id"]))
        sample.extend(ranked if max_per_lang is None else ranked[:max_per_lang])
    return sample


def eval_set_hash(records: Sequence[dict[str, Any]]) -> str:
    """sha256 of the sorted record ids: equal hashes mean the same frozen evaluation set."""
    return hashlib.sha256("\n".join(sorted(r["id"] for r in records)).encode("utf-8")).hexdigest()


def suite_set(name: str, half: str) -> list[dict[str, Any]]:
    """Suite set `name` (one of SUITE_SETS) built from the suite's `half`."""
    if name == "suite":
        return suite_records(half)
    if name in LONG_TEXT_SETS:
        from duelguard.suite.variants import in_context

        return in_context(suite_records(half), cut=name == CUT_SET)
    raise ValueError(f"{name!r} is not a suite set ({', '.join(SUITE_SETS)})")


def _seed_sample(split: str, params: Params, layout: Layout) -> list[dict[str, Any]]:
    path = layout.seed_split(split)
    if not path.exists():
        raise DataError(f"{path}: seed split missing (run prepare_seed)")
    return eval_sample(path, params.evaluate.max_examples_per_lang)


def evaluation_records(name: str, params: Params, layout: Layout) -> list[dict[str, Any]]:
    """The frozen records of evaluation set `name` (see the module docstring)."""
    return suite_set(name, "report") if name in SUITE_SETS else _seed_sample(name, params, layout)


def calibration_counterpart(name: str, params: Params, layout: Layout) -> list[dict[str, Any]]:
    """What evaluation set `name` is built from on the calibration side: a suite set from the suite's
    calibration half, a seed set from the frozen dev sample. Thresholds may be fitted on these; the
    report and the promotion gate read `evaluation_records(name)`, which shares no row with them."""
    return suite_set(name, "calib") if name in SUITE_SETS else _seed_sample("dev", params, layout)
