"""Matplotlib without a display, and PNGs written atomically: the one place plots are saved from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from simo_merge.io.atomic import atomic_path
from simo_merge.runtime import on_rank_zero


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported lazily: plotting is optional at import time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG via a temporary name, then close it."""
    path = Path(path)
    with atomic_path(path, on_rank_zero()) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
    return path
