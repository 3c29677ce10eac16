"""The one way the project makes PNGs: matplotlib on the Agg backend (no display on CI or servers),
imported lazily (the CLI stays fast), written atomically (a killed run leaves no half PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duelguard.fsio import atomic_open


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Write `fig` to `path` as PNG atomically and close it."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    return path
