"""From raw rows to the chosen seed candidates: normalise, label, deduplicate, subsample.

Rules (all counted in the data card under `drops`, by reason and source):
- language_not_selected: the row's language is not in seed.languages (MultiJail zh/it/...).
- the mapping table's drop reasons (offensive_not_hate, annotator_disagreement, unlabelled_mixed).
- too_short / too_long: normalised text outside [seed.min_chars, seed.max_chars]; no_letters: the
  text has no letter or digit at all (its dedup key would be empty).
- exact_duplicate: same dedup key as a row of a higher-priority source (sources.SOURCES order), or a
  repeat inside one source. The kept row takes the union of the members' template groups.
- label_conflict: an exact-duplicate cluster where one member is unsafe and another benign. The
  whole cluster is dropped: the same words labelled both ways are bad training signal and worse
  evaluation data, and we have no way to tell which source is right.
- near_duplicate: MinHash-Jaccard >= seed.near_dup_threshold with an already chosen row of the SAME
  safety (unsafe/benign). Near duplicates of opposite safety ("I hate X" / "I don't hate X") are the
  contrastive pairs HateCheck is built from: both are kept, and tied into one split group instead.
  Rows of the same source and template are kept too (template variation is the point), same group.
Label merge rule for duplicates of the same safety: dataset categories beat keyword-rule categories
(a dataset annotator saw the row); within the same kind the union of categories is kept.

Subsampling: `seed.quotas[lang][kind]` gives the unsafe and benign rows wanted per language and text
kind (instruction / statement, sources.SOURCE_KINDS); a cell that runs short gives fewer rows (the
card reports target vs achieved). Within a cell, rows are taken round-robin over buckets (unsafe:
the row's rarest category; benign: its source), smallest bucket first, each bucket in seeded random
order: every category and source is represented and rare categories are taken whole before the big
ones (hate) are cut. Benign rows that a keyword rule fires on ("hard negatives": "How do I kill a
stuck process?", "the history of nuclear weapons") come first: they are the scarce safe-but-
sensitive examples that keep a guardrail from flagging every alarming word. Near-duplicate checks
run while taking rows, so only the rows that can end up in the seed are hashed (hashing all ~250k
raw rows would take minutes).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from duelguard.config import Seed
from duelguard.seed import mapping as M
from duelguard.seed.sources import SOURCE_KINDS, RawRow
from duelguard.taxonomy import CATEGORIES, NUM_CATEGORIES, is_unsafe, labels_from
from duelguard.textnorm import NearDuplicateIndex, dedup_key, normalize_text

Drops = Counter  # (reason, source) -> count


@dataclass
class Candidate:
    """A normalised, labelled row that may become a seed record."""

    id: str
    text: str
    key: str  # dedup_key(text)
    lang: str
    labels: list[int]
    source: str
    ref: str
    label_source: str | None
    label_rule: list[str] | None
    group_keys: set[str] = field(default_factory=set)
    dup_sources: set[str] = field(default_factory=set)

    @property
    def unsafe(self) -> bool:
        return is_unsafe(self.labels)

    @property
    def rule_labelled(self) -> bool:
        return self.label_rule is not None

    @property
    def kind(self) -> str:
        return SOURCE_KINDS[self.source]

    @cached_property
    def hard_negative(self) -> bool:
        """A benign English row that a keyword rule fires on (alarming words, safe request)."""
        return not self.unsafe and self.lang == "en" and any(rule.fires(self.text) for rule in M.KEYWORD_RULES)


def record_id(source: str, lang: str, text: str) -> str:
    """Stable id: the same source, language and normalised text always give the same id."""
    return "seed-" + hashlib.sha1(f"{source}\x1f{lang}\x1f{text}".encode()).hexdigest()[:16]


def to_candidate(row: RawRow, seed: Seed, drops: Drops) -> Candidate | None:
    """Normalise and label one raw row; None (and a counted drop) when a rule removes it."""
    if row.lang not in seed.languages:
        drops["language_not_selected", row.source] += 1
        return None
    if row.outcome.kind == "drop":
        drops[row.outcome.reason, row.source] += 1
        return None
    text = normalize_text(row.text)
    if len(text) < seed.min_chars:
        drops["too_short", row.source] += 1
        return None
    if len(text) > seed.max_chars:
        drops["too_long", row.source] += 1
        return None
    key = dedup_key(text)
    if not key:
        drops["no_letters", row.source] += 1
        return None
    label_rule = None
    if row.outcome.kind == "unsafe":
        labels = labels_from(row.outcome.codes)
    elif row.outcome.kind == "rules":
        labels, label_rule = M.keyword_labels(normalize_text(row.rule_text or row.text))
    else:
        labels = [0] * NUM_CATEGORIES
    return Candidate(
        id=record_id(row.source, row.lang, text),
        text=text,
        key=key,
        lang=row.lang,
        labels=labels,
        source=row.source,
        ref=row.ref,
        label_source=row.category,
        label_rule=label_rule,
        group_keys=set(row.group_keys),
    )


def absorb(keep: Candidate, other: Candidate) -> None:
    """Merge a same-safety duplicate into the kept row (labels by the merge rule, groups, provenance)."""
    if keep.unsafe:
        if keep.rule_labelled and not other.rule_labelled:
            keep.labels, keep.label_rule, keep.label_source = list(other.labels), None, other.label_source
        elif keep.rule_labelled == other.rule_labelled:
            keep.labels = [a | b for a, b in zip(keep.labels, other.labels)]
            if keep.label_rule is not None:
                keep.label_rule = sorted(set(keep.label_rule) | set(other.label_rule or []))
    keep.group_keys |= other.group_keys
    if other.source != keep.source:
        keep.dup_sources.add(other.source)
    keep.dup_sources |= other.dup_sources - {keep.source}


def exact_dedup(candidates: Iterable[Candidate], drops: Drops) -> list[Candidate]:
    """One candidate per dedup key (first = highest-priority source), conflicts dropped whole."""
    clusters: dict[str, list[Candidate]] = {}
    for cand in candidates:
        clusters.setdefault(cand.key, []).append(cand)
    kept: list[Candidate] = []
    for members in clusters.values():
        if len({m.unsafe for m in members}) > 1:
            for m in members:
                drops["label_conflict", m.source] += 1
            continue
        keep = members[0]
        for other in members[1:]:
            absorb(keep, other)
            drops["exact_duplicate", other.source] += 1
        kept.append(keep)
    return kept


def priority_order(pool: list[Candidate], unsafe: bool, rng: random.Random) -> list[Candidate]:
    """Round-robin over buckets (unsafe: rarest category of the row; benign: source), smallest first;
    for benign pools the hard negatives come first (in the same round-robin), then the rest."""
    if not unsafe:
        hard = [c for c in pool if c.hard_negative]
        rest = [c for c in pool if not c.hard_negative]
        if hard and rest:
            return _round_robin(hard, unsafe, rng) + _round_robin(rest, unsafe, rng)
    return _round_robin(pool, unsafe, rng)


def _round_robin(pool: list[Candidate], unsafe: bool, rng: random.Random) -> list[Candidate]:
    freq = Counter(i for c in pool for i, v in enumerate(c.labels) if v)

    def bucket(c: Candidate) -> str:
        if not unsafe:
            return c.source
        return CATEGORIES[min((i for i, v in enumerate(c.labels) if v), key=lambda i: (freq[i], i))]

    buckets: dict[str, list[Candidate]] = defaultdict(list)
    for cand in pool:
        buckets[bucket(cand)].append(cand)
    queues = []
    for name in sorted(buckets, key=lambda b: (len(buckets[b]), b)):
        items = sorted(buckets[name], key=lambda c: c.id)
        rng.shuffle(items)
        queues.append(items)
    order: list[Candidate] = []
    depth = 0
    while queues:
        queues = [q for q in queues if len(q) > depth]
        order.extend(q[depth] for q in queues)
        depth += 1
    return order


class Selector:
    """Takes candidates in priority order, skipping near duplicates of already chosen rows."""

    def __init__(self, seed: Seed, drops: Drops, progress=None) -> None:
        self.index = NearDuplicateIndex(seed.near_dup_threshold, seed.minhash_num_perm, seed=seed.random_seed)
        self.chosen: dict[str, Candidate] = {}
        self.links: list[tuple[str, str]] = []  # near-duplicate pairs kept: must share a split
        self.drops = drops
        self.progress = progress

    def take(self, order: Iterator[Candidate], n: int) -> int:
        """Choose up to n more rows from `order`; returns how many were chosen."""
        taken = 0
        while taken < n:
            cand = next(order, None)
            if cand is None:
                break
            mh = self.index.minhash(cand.text)
            hits = [self.chosen[k] for k in self.index.query(cand.text, mh)]
            twin = next(
                (
                    h
                    for h in hits
                    if h.unsafe == cand.unsafe and not (h.source == cand.source and h.group_keys & cand.group_keys)
                ),
                None,
            )
            if twin is not None:
                absorb(twin, cand)
                self.drops["near_duplicate", cand.source] += 1
                continue
            self.index.add(cand.id, cand.text, mh)
            self.chosen[cand.id] = cand
            self.links.extend((cand.id, h.id) for h in hits)
            taken += 1
            if self.progress is not None:
                self.progress.update(1)
        return taken


def select(candidates: list[Candidate], seed: Seed, drops: Drops, progress=None) -> tuple[Selector, dict]:
    """Take each language x kind cell's quota with near-duplicate removal; returns the selector and
    a report of target / available / chosen per cell."""
    pools: dict[tuple[str, str, bool], list[Candidate]] = defaultdict(list)
    for cand in candidates:
        pools[cand.lang, cand.kind, cand.unsafe].append(cand)
    selector = Selector(seed, drops, progress)
    report: dict[str, dict[str, dict[str, int]]] = {}
    for lang in seed.languages:
        for kind, quota in sorted(seed.quotas.get(lang, {}).items()):
            cell: dict[str, int] = {}
            for unsafe, want in ((True, quota.unsafe), (False, quota.benign)):
                pool = pools[lang, kind, unsafe]
                order = iter(priority_order(pool, unsafe, random.Random(f"{seed.random_seed}:{lang}:{kind}:{unsafe}")))
                name = "unsafe" if unsafe else "benign"
                cell[f"target_{name}"] = want
                cell[f"available_{name}"] = len(pool)
                cell[f"chosen_{name}"] = selector.take(order, want)
                if not unsafe:
                    cell["chosen_hard_negatives"] = sum(
                        1 for c in selector.chosen.values() if c.lang == lang and c.kind == kind and c.hard_negative
                    )
            report.setdefault(lang, {})[kind] = cell
    return selector, report
