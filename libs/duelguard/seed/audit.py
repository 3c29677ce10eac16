"""Label-noise audit of the seed: out-of-fold predictions flag rows whose label is probably wrong.

The raw sets were labelled by crowds and by rules (MLMA "normal" holds a tweet wishing someone shot
in their sleep; keyword rules make every uncategorised request C2). Every chosen seed row is
embedded with the probe's frozen encoder (USE-m), and a class-balanced logistic regression is
fitted K times, each time on the other folds; folds follow the split groups, so a HateCheck
template or a duplicate cluster never predicts itself. A row is flagged when the out-of-fold
probability contradicts its label with high confidence: labelled safe but P(unsafe) >= `flag_above`,
or labelled unsafe but P(unsafe) <= 1 - `flag_above`.

Policy (`seed.noise_policy`):
- keep: flagged rows stay everywhere (the audit only reports);
- drop: flagged rows leave the TRAIN split only. Dev and test keep them, so that cleaning can never
  make the reported figures easier: an evaluation set is not edited to agree with a model.
Never relabel automatically: the audit's own model is what would decide the new label.
Counts per source and label direction go to the data card; flagged rows to audit.jsonl for people
to read.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

FOLDS = 5


def out_of_fold_unsafe(vectors: np.ndarray, unsafe: np.ndarray, groups: list[str], seed: int) -> np.ndarray:
    """P(unsafe) for every row from a logistic regression that never saw the row's group."""
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(seed)
    unique = sorted(set(groups))
    rng.shuffle(unique)
    fold_of = {g: k % FOLDS for k, g in enumerate(unique)}
    folds = np.array([fold_of[g] for g in groups])
    oof = np.zeros(len(groups), dtype=np.float64)
    for k in range(FOLDS):
        held = folds == k
        if not held.any():
            continue
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000, random_state=seed)
        model.fit(vectors[~held], unsafe[~held])
        oof[held] = model.predict_proba(vectors[held])[:, 1]
    return oof


def audit(records: list[dict[str, Any]], cache_dir: Path, flag_above: float, seed: int) -> dict[str, Any]:
    """Annotate each record with `audit` = {"oof_unsafe": p, "flagged": bool}; return counts."""
    from duelguard.encoder import embed_cached

    vectors = embed_cached([r["text"] for r in records], cache_dir, progress=True)
    unsafe = np.array([any(r["labels"]) for r in records])
    oof = out_of_fold_unsafe(vectors, unsafe, [r["group"] for r in records], seed)
    flagged_by: dict[str, Counter] = defaultdict(Counter)
    for rec, p, is_unsafe in zip(records, oof, unsafe):
        flagged = bool(p <= 1.0 - flag_above) if is_unsafe else bool(p >= flag_above)
        rec["audit"] = {"oof_unsafe": round(float(p), 4), "flagged": flagged}
        if flagged:
            flagged_by[rec["source"]]["labelled_unsafe" if is_unsafe else "labelled_safe"] += 1
    rows_by_source = Counter(r["source"] for r in records)
    return {
        "flag_above": flag_above,
        "rows": len(records),
        "flagged": sum(sum(c.values()) for c in flagged_by.values()),
        "flagged_by_source": {
            src: {**dict(flagged_by[src]), "rows": rows_by_source[src],
                  "share": round(sum(flagged_by[src].values()) / rows_by_source[src], 4)}
            for src in sorted(rows_by_source)
        },
    }
