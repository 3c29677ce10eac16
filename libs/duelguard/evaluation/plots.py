"""PNG plots of an evaluation (matplotlib, Agg backend: no display, and `dvc plots` HTML would need a CDN).

Each function takes the metrics `evaluate` computed, writes one PNG atomically and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from duelguard.plotting import pyplot, save_png


def _value(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def language_bars(by_language: dict[str, dict[str, Any]], title: str, path: Path) -> Path:
    """Grouped bars: unsafe-class F1, precision and recall per language."""
    plt = pyplot()
    langs = list(by_language)
    names = ("f1", "precision", "recall")
    x = np.arange(len(langs))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(langs) + 2), 3.6))
    for k, name in enumerate(names):
        ax.bar(x + (k - 1) * width, [_value(by_language[lang][name]) for lang in langs], width, label=name)
    ax.set_xticks(x, [f"{lang}\n(n={by_language[lang]['n']})" for lang in langs])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("unsafe class")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def category_bars(per_category_f1: dict[str, float | None], title: str, path: Path) -> Path:
    """Horizontal bars: F1 of each category's own decision ("n/a": never labelled nor predicted)."""
    plt = pyplot()
    cats = list(per_category_f1)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.barh(np.arange(len(cats)), [_value(per_category_f1[c]) for c in cats], color="tab:purple")
    for i, c in enumerate(cats):  # label every bar, so 0.00 and "no examples" are told apart
        v = per_category_f1[c]
        ax.text(0.01 if v is None else v + 0.01, i, "n/a" if v is None else f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(np.arange(len(cats)), cats, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("F1")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return save_png(fig, path)


def pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float | None]], title: str, path: Path) -> Path:
    """Precision-recall curves of the unsafe score, one per slice: {label: (precision, recall, AP)}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (precision, recall, ap) in curves.items():
        if recall.size == 0:
            continue
        ap_text = "n/a" if ap is None else f"{ap:.3f}"
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="post", label=f"{label} (AP {ap_text})")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def cell_heatmaps(report: dict[str, Any], title: str, path: Path) -> Path:
    """Language x category heatmaps of unsafe-class F1 (each category's unsafe prompts against its
    look-alikes): the classifier, and its probe beside it when the report has one."""
    from duelguard.taxonomy import CATEGORY_CODES

    plt = pyplot()
    panels = [("classifier", report["cells"])] + ([("probe", report["probe_cells"])] if "probe_cells" in report else [])
    langs = list(report["cells"])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 0.55 * len(langs) + 2.0), squeeze=False)
    for ax, (label, cells) in zip(axes[0], panels):
        grid = np.array([[_value(cells[lang].get(c, {}).get("f1")) for c in CATEGORY_CODES] for lang in langs])
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(np.arange(len(CATEGORY_CODES)), CATEGORY_CODES, fontsize=8)
        ax.set_yticks(np.arange(len(langs)), langs)
        ax.set_title(label)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="F1")
    fig.suptitle(title)
    return save_png(fig, path)


def category_confusion(labels: np.ndarray, probs: np.ndarray, flagged: np.ndarray,
                       accuracy: dict[str, float | None], title: str, path: Path) -> Path:
    """Of the unsafe prompts the classifier flags: each one's own category (rows; its first label)
    against the category the classifier puts first (columns), as a share of the row, every language
    pooled; `accuracy` (the evaluation's category accuracy per language) in the title. Where the reported category goes when it
    is wrong (on a seed whose fr / es / de rows are hate speech only: "hate")."""
    from duelguard.metrics import category_confusion_counts
    from duelguard.taxonomy import CATEGORY_CODES

    counts = category_confusion_counts(labels, probs, flagged)
    with np.errstate(invalid="ignore"):
        shares = counts / counts.sum(axis=1, keepdims=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(shares, vmin=0.0, vmax=1.0, cmap="Blues", aspect="auto")
    for (i, j), n in np.ndenumerate(counts):
        if n:
            ax.text(j, i, f"{int(n)}", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(np.arange(len(CATEGORY_CODES)), CATEGORY_CODES, fontsize=8)
    ax.set_yticks(np.arange(len(CATEGORY_CODES)), CATEGORY_CODES, fontsize=8)
    ax.set_xlabel("top category (what the guard reports)")
    ax.set_ylabel("the prompt's own category")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row (counts in the cells)")
    ax.set_title(title + "\ncategory accuracy: " + ", ".join(
        f"{lang} {'n/a' if v is None else f'{100 * v:.0f}%'}" for lang, v in accuracy.items()), fontsize=9)
    return save_png(fig, path)
