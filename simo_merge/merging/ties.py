"""TIES-Merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint merge.

1. Trim: keep each task vector's top-k% entries by magnitude over the *whole* vector (threshold = the
   n-th largest magnitude, n = max(1, int(N·k/100)); entries tied with it are kept too), zero the rest.
2. Elect: per entry, the sign of the summed trimmed values; where that sum is exactly 0 the sign is the
   majority sign (sign of the sum of all elected signs), as in the authors' implementation.
3. Disjoint merge: per entry, the mean of the trimmed values whose sign agrees with the elected one
   (positive entries where the elected sign is > 0, negative ones otherwise; 0 if none).
Finally θ = θ0 + λ·merged.

Memory: the thresholds are exact and computed per task (one task's magnitudes at a time, never a T×N
matrix); the election and merge then work per tensor (T copies of one tensor at a time).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS


def magnitude_threshold(task_vector: Mapping[str, Tensor], k: float) -> float:
    """The magnitude of the n-th largest |entry| of the whole vector, n = max(1, int(N·k/100))."""
    if not 0 < k <= 100:
        raise ValueError(f"ties: k must be in (0, 100] (percent of entries kept), got {k}")
    magnitudes = torch.cat([task_vector[key].abs().reshape(-1) for key in task_vector])
    n_total = magnitudes.numel()
    n_keep = max(1, int(n_total * k / 100))
    if n_keep >= n_total:
        return 0.0
    return magnitudes.kthvalue(n_total - n_keep + 1).values.item()


def _trimmed(
    task_vectors: Mapping[str, Mapping[str, Tensor]], thresholds: dict[str, float], key: str
) -> Tensor:
    stacked = torch.stack([tv[key] for tv in task_vectors.values()])
    limits = torch.tensor([thresholds[t] for t in task_vectors], dtype=stacked.dtype)
    limits = limits.view(-1, *([1] * (stacked.dim() - 1)))
    return stacked * (stacked.abs() >= limits)


@MERGE_METHODS.register("ties")
def ties(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    k: float = 20.0,
    lam: float = 1.0,
) -> dict[str, Tensor]:
    thresholds = {task: magnitude_threshold(tv, k) for task, tv in task_vectors.items()}
    majority = 0.0
    for key in base:
        majority += torch.sign(_trimmed(task_vectors, thresholds, key).sum(0)).sum().item()
    majority_sign = float(torch.sign(torch.tensor(majority)).item())
    merged = {}
    for key, theta0 in base.items():
        trimmed = _trimmed(task_vectors, thresholds, key)
        elected = torch.sign(trimmed.sum(0))
        elected[elected == 0] = majority_sign
        agree = torch.where(elected > 0, trimmed > 0, trimmed < 0)
        selected = trimmed * agree
        count = agree.sum(0).clamp(min=1)
        merged[key] = theta0.float() + lam * selected.sum(0) / count
    return merged
