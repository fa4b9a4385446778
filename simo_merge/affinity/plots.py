"""PNG figures of the affinity analysis (matplotlib, Agg backend); every file is written atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simo_merge.plotting import pyplot, save_png

#: Cells are annotated with their value up to this many tasks.
ANNOTATE_MAX = 12


def _save(fig, path: str | os.PathLike) -> Path:
    return save_png(fig, path)


def heatmap(
    ax,
    matrix: np.ndarray,
    names: Sequence[str],
    vmin: float,
    vmax: float,
    cmap: str,
    title: str,
    fmt: str = "{:.2f}",
    col_names: Sequence[str] | None = None,
):
    """Draw ``matrix`` on ``ax`` (NaN cells grey), rows/cols labelled, values written in small tasks."""
    col_names = list(col_names) if col_names is not None else list(names)
    data = np.ma.masked_invalid(np.asarray(matrix, dtype=np.float64))
    colormap = pyplot().get_cmap(cmap).with_extremes(bad="#d0d0d0")
    image = ax.imshow(data, vmin=vmin, vmax=vmax, cmap=colormap)
    ax.set_xticks(range(len(col_names)), col_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title(title, fontsize=9)
    if max(len(names), len(col_names)) <= ANNOTATE_MAX:
        span = max(vmax - vmin, 1e-12)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = float(matrix[i][j])
                if not math.isfinite(v):
                    continue
                r, g, b, _ = colormap(min(max((v - vmin) / span, 0.0), 1.0))
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5  # text colour readable on the cell colour
                ax.text(
                    j,
                    i,
                    fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if light else "white",
                )
    return image


def _symmetric_limit(matrices: Sequence[np.ndarray], floor: float = 0.05) -> float:
    """max |off-diagonal| over the matrices (so small cosines stay visible next to the diagonal's 1)."""
    values = []
    for m in matrices:
        m = np.asarray(m, dtype=np.float64)
        off = m[~np.eye(m.shape[0], dtype=bool)]
        values.extend(np.abs(off[np.isfinite(off)]).tolist())
    return max([floor, *values])


def plot_cosine(cosine: dict[str, Any], path: str | os.PathLike) -> Path:
    """Global cosine plus the attention / mlp / other cosines, one shared colour scale."""
    plt = pyplot()
    names = cosine["tasks"]
    panels = [("whole encoder", cosine["global"]["cosine"])]
    panels += [(g, part["cosine"]) for g, part in cosine["groups"].items()]
    limit = _symmetric_limit([m for _, m in panels])
    side = 1.0 + 0.45 * len(names)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(side * len(panels) + 1.2, side + 0.8), squeeze=False, layout="constrained"
    )
    image = None
    for ax, (title, m) in zip(axes[0], panels, strict=True):
        image = heatmap(ax, m, names, -limit, limit, "RdBu_r", f"cosine: {title}")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=f"cosine (scale ±{limit:.2f}; diagonal = 1)")
    fig.suptitle("Task-vector cosine similarity", fontsize=11)
    return _save(fig, path)


def plot_cosine_blocks(cosine: dict[str, Any], path: str | os.PathLike) -> Path:
    """Small multiples: one cosine heatmap per block (and the non-block keys), shared colour scale."""
    plt = pyplot()
    names = cosine["tasks"]
    panels = [(f"block {b}", part["cosine"]) for b, part in cosine["blocks"].items()]
    if cosine.get("non_block") is not None:
        panels.append(("non-block", cosine["non_block"]["cosine"]))
    if not panels:
        panels = [("whole encoder", cosine["global"]["cosine"])]
    limit = _symmetric_limit([m for _, m in panels])
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    side = 1.0 + 0.4 * len(names)
    fig, axes = plt.subplots(
        rows, cols, figsize=(side * cols + 1.2, side * rows + 0.6), squeeze=False, layout="constrained"
    )
    image = None
    for ax, (title, m) in zip(axes.flat, panels, strict=False):
        image = heatmap(
            ax, m, names, -limit, limit, "RdBu_r", title, fmt="{:.2f}" if len(names) <= 6 else "{:.1f}"
        )
    for n, ax in enumerate(axes.flat):
        if n >= len(panels):
            ax.axis("off")
        elif n % cols:
            ax.set_yticklabels([])  # task names once per row of panels
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=f"cosine (±{limit:.2f})")
    fig.suptitle("Task-vector cosine per block", fontsize=11)
    return _save(fig, path)


def plot_matrix(
    matrix: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike,
    title: str,
    label: str,
    diverging: bool = False,
    fmt: str = "{:.2f}",
) -> Path:
    """One annotated heatmap; ``diverging`` centres the colour scale on 0."""
    plt = pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    finite = m[np.isfinite(m)]
    if diverging:
        limit = float(np.abs(finite).max()) if finite.size else 1.0
        vmin, vmax, cmap = -max(limit, 1e-9), max(limit, 1e-9), "RdBu_r"
    else:
        vmin = float(finite.min()) if finite.size else 0.0
        vmax = float(finite.max()) if finite.size else 1.0
        vmax = vmax if vmax > vmin else vmin + 1.0
        cmap = "viridis"
    side = 1.5 + 0.5 * len(names)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = heatmap(ax, m, names, vmin, vmax, cmap, title, fmt=fmt)
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    fig.tight_layout()
    return _save(fig, path)


def plot_dendrogram(clusters: dict[str, Any], path: str | os.PathLike) -> Path:
    """The average-linkage dendrogram on 1 − cosine, with the suggested cut heights as dashed lines."""
    from scipy.cluster.hierarchy import dendrogram

    plt = pyplot()
    names = clusters["names"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 2), 3.6))
    if len(clusters["linkage"]):
        dendrogram(
            np.asarray(clusters["linkage"]), labels=names, ax=ax, color_threshold=clusters["cut"]["threshold"]
        )
        for kind, style in (("threshold", "--"), ("largest_gap", ":")):
            h = clusters["cut"].get(kind)
            if h is not None:
                ax.axhline(h, color="grey", ls=style, lw=1, label=f"{kind.replace('_', ' ')} cut ({h:.2f})")
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, clusters.get("note") or "nothing to cluster", ha="center", va="center")
    ax.set_ylabel("1 − cosine (average linkage)")
    ax.set_title("Task clustering on task-vector cosine", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_transfer_curves(transfer: dict[str, Any], path: str | os.PathLike) -> Path:
    """One subplot per source task s: normalised performance of every target t along θ0 + λ·τs."""
    plt = pyplot()
    sources, targets, grid = transfer["sources"], transfer["targets"], transfer["lambdas"]
    norm = np.asarray(transfer["norm"], dtype=np.float64)
    cols = min(3, len(sources))
    rows = math.ceil(len(sources) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    for i, (ax, s) in enumerate(zip(axes.flat, sources, strict=False)):
        for j, t in enumerate(targets):
            ax.plot(
                grid,
                norm[i, :, j],
                marker="o",
                ms=3,
                color=colors(j % 10),
                lw=2.2 if t == s else 1.2,
                label=t + (" (own)" if t == s else ""),
            )
        ax.axhline(100, color="black", lw=0.8, ls="--")
        ax.set_title(f"θ0 + λ·τ[{s}]", fontsize=9)
        ax.set_xlabel("λ")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("normalised perf. (%)")
    for ax in list(axes.flat)[len(sources) :]:
        ax.axis("off")
    fig.suptitle("Transfer curves (100 = each target's own expert)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
