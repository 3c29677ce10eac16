"""Grouped, stratified, deterministic train/dev/test split.

Rows that must not be separated form one group: a HateCheck / Multilingual HateCheck template (and
the template it references via ref_templ_id), the language columns of one MultiJail prompt, and any
near-duplicate pair that was kept (contrastive pairs, template variants). Groups are the connected
components of those links (union-find). Whole groups are then dealt to splits, largest first, each
to the split furthest below its targets in the language x safety cells the group holds, so every
cell gets close to split_fractions without any group crossing splits.

Per-language evaluation needs rows: dev and test each get at least min_eval_per_class rows of every
language x safety cell, capped at a quarter of the cell (a 5% language would otherwise have
~30 unsafe dev rows and an F1 too noisy to compare).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from duelguard.records import SPLITS
from duelguard.seed.select import Candidate


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_groups(cands: Iterable[Candidate], links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Record id -> group name (the smallest key of its component: a template key when it has one)."""
    uf = UnionFind()
    cands = list(cands)
    for c in cands:
        uf.find(c.id)
        for key in sorted(c.group_keys):
            uf.union(c.id, key)
    for a, b in links:
        uf.union(a, b)
    return {c.id: uf.find(c.id) for c in cands}


def split_targets(n: int, fractions: dict[str, float], min_eval: int) -> dict[str, float]:
    evals = {s: max(fractions[s] * n, min(min_eval, n / 4)) for s in ("dev", "test")}
    return {"train": max(n - evals["dev"] - evals["test"], 0.0), **evals}


def assign_splits(
    cands: list[Candidate], groups: dict[str, str], fractions: dict[str, float], seed: int, min_eval: int
) -> dict[str, str]:
    """Record id -> split; every group lands whole in one split.

    Cells are language x safety. Groups are dealt largest first (seeded random order within a size);
    each goes to the split whose cells, weighted by the group's rows in them, are furthest below
    target (relative deficit). Multilingual groups (MHC templates, MultiJail) thus count for every
    language they hold, not only their majority language.
    """
    members: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        members[groups[c.id]].append(c)
    cell_sizes = Counter((c.lang, c.unsafe) for c in cands)
    targets = {cell: split_targets(n, fractions, min_eval) for cell, n in cell_sizes.items()}
    filled = {cell: dict.fromkeys(SPLITS, 0) for cell in cell_sizes}

    def need(group: Counter, split: str) -> float:
        return sum(
            n * ((targets[cell][split] - filled[cell][split]) / targets[cell][split] if targets[cell][split] else -1.0)
            for cell, n in group.items()
        )

    names = sorted(members)
    random.Random(f"{seed}:split").shuffle(names)
    names.sort(key=lambda g: -len(members[g]))  # stable: largest first, shuffled within a size
    out: dict[str, str] = {}
    for name in names:
        group = Counter((r.lang, r.unsafe) for r in members[name])
        split = max(SPLITS, key=lambda s: need(group, s))  # ties: the first of train, dev, test
        for cell, n in group.items():
            filled[cell][split] += n
        for row in members[name]:
            out[row.id] = split
    return out
