"""Plots of what data-dependent merges learned (e.g. AdaMerging's task × layer coefficients)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simo_merge.plotting import save_png


def lambda_heatmap(record: Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Write a task × group heatmap of ``record["lambdas"]`` (as filled by AdaMerging) to the PNG ``path``.

    Rows are ``record["tasks"]``, columns ``record["groups"]``; the colour scale is fixed to [0, 1] (λ's
    range) so plots of different runs compare. Cells are annotated with their value when the grid is small.
    """
    for key in ("lambdas", "tasks", "groups"):
        if key not in record:
            raise ValueError(f"lambda_heatmap: record has no {key!r} (keys: {sorted(record)})")
    lambdas = np.asarray(record["lambdas"], dtype=float)
    tasks, groups = list(record["tasks"]), list(record["groups"])
    if lambdas.shape != (len(tasks), len(groups)):
        raise ValueError(
            f"lambda_heatmap: record['lambdas'] has shape {lambdas.shape}, expected (tasks, groups) = "
            f"({len(tasks)}, {len(groups)})"
        )
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # per-tensor λ (a ViT-B has ~150 tensors): cap the width and label only some columns
    fig = Figure(figsize=(min(24.0, max(4.0, 0.6 * len(groups) + 2.5)), max(2.5, 0.5 * len(tasks) + 1.5)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(lambdas, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    every = max(1, len(groups) // 40)
    ax.set_xticks(range(0, len(groups), every), groups[::every], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_xlabel("parameter group")
    ax.set_ylabel("task")
    ax.set_title(title or f"{record.get('method', 'merge')} coefficients λ")
    if lambdas.size <= 300 and len(groups) <= 40:
        for (row, col), value in np.ndenumerate(lambdas):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")  # fmt: skip
    fig.colorbar(image, ax=ax, label="λ")
    fig.tight_layout()
    return save_png(fig, path, dpi=120)
