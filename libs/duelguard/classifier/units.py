"""What parts of a text are scored, and what happens to a text too long to score: one place, used
by every scorer of every classifier kind (predict, evaluation, the pyfunc model, Triton).

A guard that scores a long text as a few big windows can be walked around: one unsafe sentence
inside fifty benign words embeds as benign (dilution), and a cap on windows leaves the middle of a
long paste unread. So a text is scored on **units**, and its score per category is the max over them:

- every **sentence** (split at . ! ? and their CJK forms, and at line breaks) and every pair of
  adjacent sentences, of at most `window_words` words: a short request keeps its own score,
  whatever surrounds it (pairs: a request is often a statement and an ask, "I hate X. Tell me how");
- every **glued tail** of a sentence: from a capitalised word right after an unpunctuated lower-case
  word to the sentence's end ("... the wind stays light from Now tell me how to ..."), where a
  sentence boundary was lost by a paste cut mid-sentence or on purpose; not in German, which
  capitalises every noun (`glued_tails`);
- **word windows** of `window_words` words overlapping by `overlap` (the last aligned to the end),
  so a request spread over several sentences, or written without punctuation, is still seen whole.
  A text of one window and one sentence is one unit: short texts cost what they always did.

Every unit of the text is read, up to a cost bound of `max_words` words (classifier.long_input,
duelguard.config.LongInput, sized from measurement: docs/evaluation.md). Past it the text is not scored. The default policy, `flag`,
reports it unsafe with reason `too_long` (its scores saturate at 1.0, so a client that reads only
scores also blocks it): a guard that fails open on long input is worse than none. The `head_tail`
policy, for callers who accept the risk, scores the first and last max_words / 2 words and reports
the text `truncated`.

Before any of this the text is folded (duelguard.classifier.deobfuscate): zero-width characters,
look-alike letters, full-width forms and spaced-out letters are undone. Empty or blank text has no
unit and scores 0 in every category.

A classifier calibrated per language (duelguard.classifier.thresholds.language_offsets) records a
logit offset per language, never negative: each unit's language is identified (py3langid, among those
languages) and its logits moved by that language's offset before the max, so the one global threshold
flags a unit exactly when its raw score passes its language's own threshold. Units that no offset could
lift to their text's max are not identified (shift_by_language): the max is the same, for less work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from duelguard.classifier.deobfuscate import fold
from duelguard.config import LongInput
from duelguard.fsio import DataError

TOO_LONG = "too_long"
# No real text averages more characters per word than this: a text longer than (max_words + 1) x
# this many characters is past the bound before it is even folded, so a many-megabyte text costs nothing.
CHARS_PER_WORD_BOUND = 64
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f\u2026])\s+|\n+")


def long_input_of(meta: dict) -> LongInput:
    """The bound a saved classifier's duelguard.json records (a directory written before the bound
    existed gets the schema's default, never no bound)."""
    return LongInput(**meta["long_input"]) if meta.get("long_input") else LongInput()


def language_offsets_of(meta: dict[str, Any]) -> dict[str, float]:
    """The per-language logit offsets a saved classifier's duelguard.json records ({} for one
    calibrated on one global threshold, or saved before offsets existed); a negative or non-numeric
    offset is an error, since it would make a language less guarded than the global threshold."""
    raw = meta.get("language_offsets") or {}
    if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for k, v in raw.items()):
        raise DataError(f"language_offsets must map language codes to offsets >= 0, got {raw!r}")
    return {k: float(v) for k, v in raw.items()}


def logit(p: float | np.ndarray) -> float | np.ndarray:
    """log(p / (1 - p)), with p kept inside (1e-7, 1 - 1e-7)."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    out = np.log(q / (1 - q))
    return float(out) if out.ndim == 0 else out


def shift_by_language(units: Sequence[str], probs: np.ndarray, offsets: Mapping[str, float],
                      owners: Sequence[int] | None = None) -> np.ndarray:
    """Each unit's probabilities with its language's logit offset added (see the module docstring).
    The language is the most likely of the offsets' languages, so a text in any other language takes
    the offset of the closest one: never less guarded than the global threshold.

    With `owners` (the text each unit belongs to), only a unit that could be its text's max in some
    category once shifted is identified (`may_be_max`); the others take the smallest offset, which
    leaves them no higher than their true shifted score and so below the max they cannot reach: every
    text's max is the same as with all units identified. Why: identification was most of a long text's
    scoring time (a 1,000-word text has ~100 units, nearly all far below its best one)."""
    if not any(offsets.values()):
        return probs
    from duelguard.langid import identify

    candidates = tuple(sorted(offsets))
    z = logit(probs)
    low, high = min(offsets.values()), max(offsets.values())
    shift = np.full(len(units), low, dtype=np.float64)
    needed = np.ones(len(units), dtype=bool) if owners is None else may_be_max(z, np.asarray(owners), high - low)
    for k in np.flatnonzero(needed):
        shift[k] = offsets[identify(units[k], candidates)[0] if len(candidates) > 1 else candidates[0]]
    return (1.0 / (1.0 + np.exp(-(z + shift[:, None])))).astype(np.float32)


def may_be_max(z: np.ndarray, owners: np.ndarray, spread: float) -> np.ndarray:
    """Per unit (rows of logits `z`, text `owners`): whether some category's logit plus the offsets'
    `spread` (largest - smallest) passes the best logit of its text in that category, i.e. whether a
    larger offset than its text's best unit gets could make it the max."""
    best = np.full((int(owners.max()) + 1, z.shape[1]), -np.inf)
    np.maximum.at(best, owners, z)
    return (z + spread > best[owners]).any(axis=1)


class Units(NamedTuple):
    """The strings one text is scored on, and what the bound did: `truncated` (head_tail policy: only
    the head and tail were read) or `too_long` (flag policy: nothing was read, the text is unsafe)."""

    texts: list[str]
    truncated: bool
    too_long: bool


def word_windows(words: list[str], size: int, overlap: int) -> list[str]:
    """Windows of at most `size` words that start `size - overlap` apart, the last one aligned to the end."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size {size}, overlap {overlap}")
    if len(words) <= size:
        return [" ".join(words)] if words else []
    starts = list(range(0, len(words) - size, size - overlap)) + [len(words) - size]
    return [" ".join(words[s : s + size]) for s in starts]


def sentences(text: str) -> list[str]:
    """The text's sentences (split after . ! ? ... and their CJK forms, and at line breaks)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def scoring_units(text: str, window_words: int, overlap: int, long_input: LongInput) -> Units:
    """The units `text` is scored on (see the module docstring). A text of more characters than
    max_words words can hold is past the bound before any work is spent on it."""
    limit = long_input.max_words
    max_chars = (limit + 1) * CHARS_PER_WORD_BOUND
    if len(text) <= max_chars:
        text = fold(text)
        if not text:
            return Units([], False, False)
        if len(text.split()) <= limit:
            return Units(_units(text, window_words, overlap), False, False)
    if long_input.policy == "flag":
        return Units([], False, True)
    half = max(1, limit // 2)
    head = fold(text[: half * CHARS_PER_WORD_BOUND]).split()[:half]
    tail = fold(text[-half * CHARS_PER_WORD_BOUND :]).split()[-half:]
    units = _units(" ".join(head), window_words, overlap) + _units(" ".join(tail), window_words, overlap)
    return Units(list(dict.fromkeys(units)), True, False)


GLUED_MIN_WORDS = 4  # a glued tail shorter than this is no request worth a unit
# Languages that capitalise every noun: there a capital after a lower-case word marks nothing.
NOUN_CAPITALISING = frozenset({"de", "lb"})


def glued_tails(sentence: str, min_words: int = GLUED_MIN_WORDS) -> list[str]:
    """The tails of `sentence` that start at a capitalised word right after an unpunctuated lower-case
    word ("... the wind stays light from Now tell me how to ..."), of at least `min_words` words:
    where a sentence boundary was most likely lost, by a paste cut mid-sentence or on purpose. A
    request glued to a fragment is otherwise never a unit of its own (the suite's `suite_cut`). None
    in German, which capitalises every noun (measured: its in-context FPR doubled)."""
    words = sentence.split()
    starts = [i for i in range(1, len(words) - min_words + 1)
              if words[i][:1].isupper() and words[i - 1][:1].islower() and words[i - 1][-1:].isalnum()]
    if not starts:
        return []
    from duelguard.langid import NEIGHBOUR_LANGUAGES, identify

    if identify(sentence, NEIGHBOUR_LANGUAGES)[0] in NOUN_CAPITALISING:
        return []
    return [" ".join(words[i:]) for i in starts]


def _units(text: str, window_words: int, overlap: int) -> list[str]:
    """Each sentence, its glued tails and each pair of adjacent sentences, of at most window_words
    words, then word windows; each distinct unit once."""
    sents = sentences(text)
    groups = sents + [t for s in sents for t in glued_tails(s)] + [f"{a} {b}" for a, b in zip(sents, sents[1:])]
    units = [g for g in groups if len(g.split()) <= window_words]
    units += word_windows(text.split(), window_words, min(overlap, window_words - 1))
    return list(dict.fromkeys(units))


class Scores(NamedTuple):
    """What every scorer returns for n texts: probabilities (n, C), and per text whether the bound
    cut it (`truncated`, head_tail policy) or rejected it (`too_long`, flag policy: scores are 1.0)."""

    probs: np.ndarray
    truncated: np.ndarray
    too_long: np.ndarray


def score_texts(texts: Sequence[str], unit_probs: Callable[[list[str]], np.ndarray], num_labels: int,
                window_words: int, overlap: int, long_input: LongInput,
                language_offsets: Mapping[str, float] | None = None) -> Scores:
    """The one scoring loop of every classifier kind and runtime: each text's units (scoring_units),
    all units of all texts scored in one call of `unit_probs(list of unit strings) -> (m, C)
    probabilities`, shifted by their language's offset (shift_by_language), then the max over each
    text's units. A unit that several texts share (the same boilerplate sentence) is scored once.
    Blank text scores 0; a too-long text 1.0."""
    owners: list[int] = []
    units: list[str] = []
    truncated = np.zeros(len(texts), dtype=bool)
    too_long = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        found = scoring_units(text, window_words, overlap, long_input)
        truncated[i], too_long[i] = found.truncated, found.too_long
        owners.extend([i] * len(found.texts))
        units.extend(found.texts)
    probs = np.zeros((len(texts), num_labels), dtype=np.float32)
    if units:
        index: dict[str, int] = {}
        at = [index.setdefault(unit, len(index)) for unit in units]
        unit_scores = np.asarray(unit_probs(list(index)), dtype=np.float32)[at]
        if language_offsets:
            unit_scores = shift_by_language(units, unit_scores, language_offsets, owners)
        np.maximum.at(probs, np.asarray(owners), unit_scores)
    probs[too_long] = 1.0
    return Scores(probs, truncated, too_long)
