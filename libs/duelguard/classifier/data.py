"""What the classifier of iteration i trains on, and how much each example weighs.

- Every seed train row, always: synthetic data adds, it never displaces (a loop that swaps real
  French hate speech for generated French text can only lose what the seed knew).
- Synthetic rows (curated, from iterations 1..i) up to `classifier.max_synthetic_share` of each
  language's training rows; beyond that they are sampled down, stratified by safe/unsafe, so one
  prolific iteration cannot turn a language into mostly generated text.
- Context windows (`classifier.context_augment` of them per row): a row set inside other benign rows
  of its language, as one scoring window of `max_length` words would see it in a long prompt
  (duelguard.classifier.units scores every window of a text). Without them the classifier has
  only seen short rows, and a window of ordinary sentences is out of its distribution: measured
  here, 64-word windows of weather and office text scored 0.92-0.96 (flagged), and an unsafe
  request inside them could be diluted to benign. An unsafe row keeps its labels in its window; a
  benign row's window is benign.
- Framed requests (`classifier.framing_augment` of them per request): a request inside a jailbreak
  framing (unsafe rows: + jailbreak_prompts) or a harmless role-play one (safe rows), in its language
  (duelguard.classifier.framings): the seed has no jailbreak prompt at all.
- Example weights balance languages: a language with n rows gets weight proportional to
  n ** -language_balance (0: every row counts the same, so English dominates; 1: every language
  contributes the same total), rescaled so the mean weight is 1 and the learning rate keeps its meaning.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.fsio import DataError
from duelguard.layout import Layout


def training_files(layout: Layout, iteration: int) -> list[Path]:
    """The files iteration `iteration` trains on; a missing one is an error naming all missing."""
    files = layout.classifier_training_files(iteration)
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise DataError(
            f"train_classifier (iteration {iteration}) needs {', '.join(missing)}: "
            "run prepare_seed (and, for iteration >= 1, that iteration's generate/curate stages) first"
        )
    return files


def stratified_sample(records: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """n records sampled proportionally over (language, safe/unsafe) strata, largest remainder,
    every non-empty stratum keeping at least one record when n allows."""
    if n >= len(records):
        return list(records)
    strata: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: r["id"]):
        strata[(rec["lang"], any(rec["labels"]))].append(rec)
    keys = sorted(strata)
    quotas = {k: len(strata[k]) * n / len(records) for k in keys}
    take = {k: min(len(strata[k]), max(1, math.floor(quotas[k]))) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (quotas[k] - math.floor(quotas[k]), len(strata[k])), reverse=True)
    while sum(take.values()) > n:  # the max(1, .) minimums overshot: trim the largest strata
        biggest = max(keys, key=lambda k: take[k])
        take[biggest] -= 1
    i = 0
    while sum(take.values()) < n:
        k = by_remainder[i % len(keys)]
        if take[k] < len(strata[k]):
            take[k] += 1
        i += 1
    chosen: list[dict[str, Any]] = []
    for k in keys:
        chosen.extend(rng.sample(strata[k], take[k]))
    return chosen


def compose(records: list[dict[str, Any]], max_synthetic_share: float, seed: int) -> list[dict[str, Any]]:
    """All seed rows, plus synthetic rows up to `max_synthetic_share` of each language's rows."""
    if not 0.0 <= max_synthetic_share < 1.0:
        raise ValueError(f"classifier.max_synthetic_share must be in [0, 1), got {max_synthetic_share}")
    seed_rows = [r for r in records if r["origin"] != "synthetic"]
    synthetic_by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        if rec["origin"] == "synthetic":
            synthetic_by_lang[rec["lang"]].append(rec)
    seed_per_lang = Counter(r["lang"] for r in seed_rows)
    rng = random.Random(seed)
    kept: list[dict[str, Any]] = []
    for lang in sorted(synthetic_by_lang):
        # share = s / (seed + s) <= max  <=>  s <= max * seed / (1 - max)
        allowed = math.floor(max_synthetic_share * seed_per_lang[lang] / (1.0 - max_synthetic_share))
        kept += stratified_sample(synthetic_by_lang[lang], allowed, rng)
    return seed_rows + kept


def _sentence(text: str) -> str:
    """A row as a sentence of running text (ends with punctuation, so sentence units split there)."""
    text = text.strip()
    return text if text[-1:] in ".!?\u3002\uff01\uff1f" else text + "."


def context_windows(train: list[dict[str, Any]], per_row: float, window_words: int, seed: int) -> list[dict[str, Any]]:
    """About `per_row` x len(train) extra rows: a training row inside benign rows of its language, cut
    to at most `window_words` words with the row intact (see the module docstring)."""
    if not 0.0 <= per_row <= 1.0:
        raise ValueError(f"classifier.context_augment must be in [0, 1], got {per_row}")
    pools: dict[str, list[str]] = defaultdict(list)
    for rec in train:
        if not any(rec["labels"]):
            pools[rec["lang"]].append(_sentence(rec["text"]))
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for rec in sorted(train, key=lambda r: r["id"]):
        own = _sentence(rec["text"]).split()
        pool = pools[rec["lang"]]
        if rng.random() >= per_row or len(pool) < 2 or len(own) >= window_words:
            continue
        before = " ".join(rng.choice(pool) for _ in range(4)).split()
        after = " ".join(rng.choice(pool) for _ in range(4)).split()
        room = rng.randint(window_words // 2, window_words) - len(own)
        cut = rng.randint(0, max(0, room))
        words = before[len(before) - min(cut, len(before)):] + own + after[: max(0, room - cut)]
        out.append({**rec, "id": f"{rec['id']}@context", "text": " ".join(words), "origin": "context"})
    return out


def language_weights(langs: list[str], balance: float) -> np.ndarray:
    """Per-example weights ~ n_lang ** -balance, mean 1 (see the module docstring)."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"classifier.language_balance must be in [0, 1], got {balance}")
    counts = Counter(langs)
    raw = np.array([counts[lang] ** -balance for lang in langs], dtype=np.float64)
    return raw / raw.mean() if len(raw) else raw


def text_kind(record: dict[str, Any]) -> str:
    """What kind of text a training row is: "instruction" (a request to an assistant), "statement" (a
    post, tweet or templated statement) by its seed source, a synthetic row the kind of the seed it
    was written from; "in context" (a context window) and "framed request" (duelguard.classifier.framings)
    for the rows training adds. "unknown" when nothing says."""
    from duelguard.seed.sources import SOURCE_KINDS

    added = {"context": "in context", "framed": "framed request"}.get(record.get("origin", ""))
    if added:
        return added
    return SOURCE_KINDS.get(record.get("source", "")) or SOURCE_KINDS.get(record.get("seed_source") or "", "unknown")


def composition(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows per language x (origin, safe/unsafe); per language x category x origin under `categories` (a
    multi-label row counts in each of its categories; "safe" for all-zero labels); and per language x
    kind of text (`text_kind`) x origin x safe/unsafe under `kinds`: for the training metrics and the
    loop report, which show what the loop added, not only in which category."""
    from duelguard.taxonomy import CATEGORIES

    out: dict[str, Counter] = defaultdict(Counter)
    cats: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    kinds: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for rec in records:
        side = "unsafe" if any(rec["labels"]) else "safe"
        out[rec["lang"]][f"{rec['origin']}_{side}"] += 1
        names = [name for name, on in zip(CATEGORIES, rec["labels"]) if on] or ["safe"]
        for name in names:
            cats[rec["lang"]][name][rec["origin"]] += 1
        kinds[rec["lang"]][text_kind(rec)][f"{rec['origin']}_{side}"] += 1
    order = {name: k for k, name in enumerate(("safe", *CATEGORIES))}
    return {
        lang: {**dict(sorted(c.items())),
               "categories": {name: dict(sorted(cats[lang][name].items()))
                              for name in sorted(cats[lang], key=order.__getitem__)},
               "kinds": {kind: dict(sorted(n.items())) for kind, n in sorted(kinds[lang].items())}}
        for lang, c in sorted(out.items())
    }
