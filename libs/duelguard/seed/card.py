"""The seed data card: counts (split x language x source x category), drops, language shares; PNG chart."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from duelguard.records import SPLITS
from duelguard.taxonomy import CATEGORIES

SAFE = "safe"


def _categories(rec: dict[str, Any]) -> list[str]:
    cats = [CATEGORIES[i] for i, v in enumerate(rec["labels"]) if v]
    return cats or [SAFE]


def _plain(d: Any) -> Any:
    return {k: _plain(v) for k, v in sorted(d.items())} if isinstance(d, dict) else d


def _nest(counter: Counter) -> dict:
    """{(a, b, c): n} -> {a: {b: {c: n}}}, keys sorted."""
    out: dict = {}
    for key, n in counter.items():
        node = out
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = n
    return _plain(out)


def build_card(records: list[dict[str, Any]], drops: Counter, read: Counter, quota_report: dict) -> dict[str, Any]:
    """Counts for the card. A multi-label record counts once under each of its categories in
    `counts`; `by_split_language` counts records."""
    counts: Counter = Counter()
    by_split_lang: dict[str, Counter] = {s: Counter() for s in SPLITS}
    safety: dict[str, dict[str, Counter]] = {s: defaultdict(Counter) for s in SPLITS}
    categories: dict[str, Counter] = {s: Counter() for s in SPLITS}
    provenance = Counter()
    rule_hits = Counter()
    groups = Counter(r["group"] for r in records)
    for r in records:
        s, lang = r["split"], r["lang"]
        by_split_lang[s][lang] += 1
        safety[s][lang]["unsafe" if any(r["labels"]) else SAFE] += 1
        for cat in _categories(r):
            counts[s, lang, r["source"], cat] += 1
            categories[s][cat] += 1
        if any(r["labels"]):
            provenance["keyword_rule" if r["label_rule"] else "dataset"] += 1
            rule_hits.update(r["label_rule"] or [])
    total = len(records)
    by_lang = Counter(r["lang"] for r in records)
    drops_by_reason: dict[str, dict[str, int]] = defaultdict(dict)
    for (reason, source), n in sorted(drops.items()):
        drops_by_reason[reason][source] = n
    return {
        "records": total,
        "by_split": {s: sum(by_split_lang[s].values()) for s in SPLITS},
        "by_language": dict(sorted(by_lang.items())),
        "by_split_language": {s: dict(sorted(by_split_lang[s].items())) for s in SPLITS},
        "safety_by_split_language": {s: _plain(safety[s]) for s in SPLITS},
        "language_shares": {lang: round(n / total, 4) for lang, n in sorted(by_lang.items())} if total else {},
        "quotas": quota_report,
        "category_counts": {s: {c: categories[s][c] for c in (*CATEGORIES, SAFE)} for s in SPLITS},
        "counts": _nest(counts),
        "label_provenance": dict(provenance),
        "keyword_rule_hits": dict(rule_hits.most_common()),
        "groups": {"count": len(groups), "largest": max(groups.values(), default=0)},
        "rows_read": dict(read),
        "drops": dict(drops_by_reason),
        "drops_total": {reason: sum(v.values()) for reason, v in drops_by_reason.items()},
    }


def plot_card(card: dict[str, Any], path: Path) -> Path:
    """Two panels: unsafe/safe rows per language x split (log scale), and category counts per split."""
    import numpy as np

    from duelguard.plotting import pyplot, save_png

    plt = pyplot()

    langs = sorted(card["by_language"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    xs, labels, unsafe, safe = [], [], [], []
    x = 0.0
    for lang in langs:
        for s in SPLITS:
            cell = card["safety_by_split_language"][s].get(lang, {})
            xs.append(x)
            labels.append(f"{lang}\n{s}")
            unsafe.append(cell.get("unsafe", 0))
            safe.append(cell.get(SAFE, 0))
            x += 1
        x += 0.6
    xs = np.array(xs)
    ax1.bar(xs - 0.2, unsafe, width=0.4, color="#c0392b", label="unsafe")
    ax1.bar(xs + 0.2, safe, width=0.4, color="#2e86c1", label="safe")
    for x_, u, s_ in zip(xs, unsafe, safe):
        ax1.text(x_ - 0.2, u, str(u), ha="center", va="bottom", fontsize=6, rotation=90)
        ax1.text(x_ + 0.2, s_, str(s_), ha="center", va="bottom", fontsize=6, rotation=90)
    ax1.set_xticks(xs, labels, fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("records (log scale)")
    ax1.set_title("Seed records per language x split")
    ax1.legend()
    cats = [*CATEGORIES, SAFE]
    y = np.arange(len(cats))
    left = np.zeros(len(cats))
    for s, color in zip(SPLITS, ("#34495e", "#e67e22", "#27ae60")):
        vals = np.array([card["category_counts"][s][c] for c in cats], dtype=float)
        ax2.barh(y, vals, left=left, color=color, label=s)
        left += vals
    ax2.set_yticks(y, cats, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("records (multi-label rows count once per category)")
    ax2.set_title("Category counts per split")
    ax2.legend()
    fig.tight_layout()
    return save_png(fig, path, tight=False)
