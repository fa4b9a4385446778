"""Task arithmetic (Ilharco et al., 2023): θ = θ0 + λ Σ_t τt."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from simo_merge.merging import MERGE_METHODS


@MERGE_METHODS.register("task_arithmetic", label="TA", scale="lam", keywise=True)
def task_arithmetic(
    base: Mapping[str, Tensor], task_vectors: Mapping[str, Mapping[str, Tensor]], *, lam: float = 0.3
) -> dict[str, Tensor]:
    merged = {}
    for key, theta0 in base.items():
        acc = theta0.float().clone()
        for tv in task_vectors.values():
            acc.add_(tv[key], alpha=lam)
        merged[key] = acc
    return merged
