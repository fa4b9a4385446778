"""LiNeS (Wang et al., ICLR 2025): scale a merged update linearly with depth, shallow blocks towards θ0.

Follows ``LiNeS_scaling`` and the multi-task branch of ``evaluate`` in wang-kee/LiNeS
``src/eval/eval.py`` and the norms of ``src/eval/aggregation.py`` (commit 43a7bdd564a1):

- the multi-task vector ``mtv`` is the inner merge's update at unit scale (task arithmetic: Σ_t τt;
  TIES: its disjoint mean, the authors' `agg: mean`), as the authors scale the unscaled merged vector;
- block ``l`` of ``L`` is scaled by ``α + β·l/(L−1)``; every key outside the blocks (embeddings, final
  norm, projection) by ``α``;
- multi-task α = ‖Σ_t τt‖₁ / ‖mtv‖₁ / T (so α·mtv has the L1 norm of the task-vector mean); β is the
  swept hyper-parameter. Passing ``alpha`` overrides the rule (single-task editing: α = γ, β = 1 − γ).

A key's block is its first ``.<int>.`` path component and L = 1 + the largest index found (the
authors hard-code L = 12 / 24 for ViT-B / ViT-L; inferring it gives the same L there). With L = 1 every
block gets α. LiNeS wraps any registered data-free method (``inner=``, ``inner_params=``), so it
composes with DARE and the others: ``merge(pool, "lines", inner="ties", inner_params={"k": 20}, beta=0.5)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging._layers import block_of, check_tasks

SOURCE = "wang-kee/LiNeS src/eval/eval.py LiNeS_scaling @ 43a7bdd564a1"


def depth_scales(
    keys: list[str], alpha: float, beta: float, num_blocks: int | None = None
) -> dict[str, float]:
    """Per-key LiNeS factor: α + β·l/(L−1) for keys in block l, α elsewhere."""
    blocks = {key: block_of(key) for key in keys}
    found = [b for b in blocks.values() if b is not None]
    depth = num_blocks if num_blocks is not None else (max(found) + 1 if found else 0)
    if found and max(found) >= depth:
        raise ValueError(f"lines: num_blocks={depth} but key block index {max(found)} was found")
    scales = {}
    for key, b in blocks.items():
        frac = b / (depth - 1) if (b is not None and depth > 1) else 0.0
        scales[key] = alpha + beta * frac
    return scales


def lines_scale(
    base: Mapping[str, Tensor],
    update: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    beta: float,
    alpha: float | None = None,
    num_blocks: int | None = None,
) -> dict[str, Tensor]:
    """θ0 + LiNeS-scaled ``update`` (the multi-task vector, i.e. a merged state minus θ0)."""
    check_tasks(task_vectors, "lines")
    keys = list(base)
    if alpha is None:
        norm_sum = 0.0
        for key in keys:
            total = None
            for tv in task_vectors.values():
                total = tv[key].float().clone() if total is None else total.add_(tv[key])
            norm_sum += float(total.abs().sum())
        norm_mtv = sum(float(update[key].abs().sum()) for key in keys)
        if norm_mtv == 0.0:
            raise ValueError("lines: the merged update is zero everywhere; α = ‖Στ‖₁/‖mtv‖₁/T is undefined")
        alpha = norm_sum / norm_mtv / len(task_vectors)
    scales = depth_scales(keys, alpha, beta, num_blocks)
    return {key: base[key].float() + scales[key] * update[key].float() for key in keys}


@MERGE_METHODS.register(
    "lines",
    facts={
        "label": "LiNeS",
        "scale": "beta",
        "grid": [0.2, 0.4, 0.6, 0.8, 1.0],
        "source": SOURCE,
    },
)
def lines(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    inner: str = "task_arithmetic",
    inner_params: Mapping[str, Any] | None = None,
    beta: float = 0.5,
    alpha: float | None = None,
    num_blocks: int | None = None,
) -> dict[str, Tensor]:
    from simo_merge.merging.api import check_hyperparameters

    if inner == "lines":
        raise ValueError("lines: inner='lines' would nest LiNeS in itself; name another merge method")
    fn = MERGE_METHODS.get(inner)
    params = dict(inner_params or {})
    check_hyperparameters(fn, params, f"lines: inner merge method {inner!r}")
    if MERGE_METHODS.facts(inner)["needs_data"]:
        raise ValueError(
            f"lines: inner method {inner!r} needs data (merge_data); LiNeS here wraps data-free merges"
        )
    if "lam" in inspect.signature(fn).parameters:
        params.setdefault("lam", 1.0)  # the unscaled multi-task vector, as the authors use
    merged = fn(base, task_vectors, **params)
    update = {key: merged[key].float() - base[key].float() for key in base}
    return lines_scale(base, update, task_vectors, beta=beta, alpha=alpha, num_blocks=num_blocks)
