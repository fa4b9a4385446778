"""Hierarchical clustering of tasks from a similarity (cosine) matrix, with suggested groupings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
from scipy.spatial.distance import squareform

#: Cut height of the "threshold" grouping: distance 1 − cos = 1, i.e. average cosine 0 between groups.
DEFAULT_THRESHOLD = 1.0


def _groups(labels: np.ndarray, names: Sequence[str], order: Sequence[int]) -> list[list[str]]:
    """Clusters as lists of names, each and all in dendrogram order (so they read left to right)."""
    rank = {i: r for r, i in enumerate(order)}
    clusters: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        clusters.setdefault(int(label), []).append(i)
    ordered = sorted(clusters.values(), key=lambda members: min(rank[i] for i in members))
    return [[names[i] for i in sorted(members, key=rank.__getitem__)] for members in ordered]


def cluster_tasks(
    similarity: np.ndarray | Sequence[Sequence[float]],
    names: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Average-linkage clustering on the distance 1 − similarity, with two suggested groupings.

    The matrix is symmetrised ((S + Sᵀ)/2) and its diagonal ignored (distance 0 to itself). Groupings:

    * ``"threshold"``: cut the dendrogram at ``threshold`` (default 1.0): tasks end up together only if the
      average cosine between their groups is ≥ 0 (average distance ≤ 1; ``fcluster(criterion="distance")``).
    * ``"largest_gap"``: cut halfway across the largest gap between consecutive merge heights, the usual
      "natural number of clusters" heuristic; None (with a note) for fewer than 3 tasks, where there is
      no gap between merges to compare.

    Returns ``{"names", "linkage" ((T−1)×4 scipy linkage, as lists), "order" (leaf order), "groups":
    {"threshold": [[names]], "largest_gap": [[names]] | None}, "cut": {"threshold": h, "largest_gap": h},
    "note"}``. NaN similarities (zero task vectors) are rejected, naming the pair.
    """
    names = list(names)
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.shape != (len(names), len(names)):
        raise ValueError(f"similarity has shape {sim.shape}, expected {(len(names), len(names))} for {names}")
    sim = (sim + sim.T) / 2
    off = ~np.eye(len(names), dtype=bool)
    bad = np.argwhere(~np.isfinite(sim) & off)
    if len(bad):
        i, j = bad[0]
        raise ValueError(
            f"similarity[{names[i]!r}, {names[j]!r}] is not finite ({sim[i, j]}); a zero task vector "
            "has no cosine, drop that task before clustering"
        )
    if len(names) < 2:
        return {
            "names": names,
            "linkage": [],
            "order": list(range(len(names))),
            "groups": {"threshold": [names], "largest_gap": None},
            "cut": {"threshold": float(threshold), "largest_gap": None},
            "note": "a single task: nothing to cluster",
        }
    distance = np.clip(1.0 - sim, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    z = linkage(squareform(distance, checks=False), method="average")
    order = [int(i) for i in leaves_list(z)]
    groups = {"threshold": _groups(fcluster(z, t=threshold, criterion="distance"), names, order)}
    heights = z[:, 2]
    cut: dict[str, float | None] = {"threshold": float(threshold), "largest_gap": None}
    note = ""
    if len(names) >= 3:
        gaps = np.diff(heights)
        i = int(np.argmax(gaps))
        cut["largest_gap"] = float((heights[i] + heights[i + 1]) / 2)
        groups["largest_gap"] = _groups(fcluster(z, t=cut["largest_gap"], criterion="distance"), names, order)
    else:
        groups["largest_gap"] = None
        note = "fewer than 3 tasks: no largest-gap grouping"
    return {"names": names, "linkage": z.tolist(), "order": order, "groups": groups, "cut": cut, "note": note}
