"""TIES-Merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint merge.

1. Trim: keep each task vector's top-k% entries by magnitude over the *whole* vector, zero the rest.
   The count is the reference's: with N entries and n = int(N·k/100), the threshold is the (N−n)-th
   smallest magnitude (``kthvalue``) and every entry ``>=`` it is kept, i.e. n + 1 entries when
   magnitudes are distinct (more on ties); k = 100 keeps everything. Reference: ``topk_values_mask``
   of the TIES authors' utilities as carried by EnnengYang/RepresentationSurgery
   ``src/ties_merging_utils.py`` (commit c5a032d) and FusionBench
   ``fusion_bench/method/ties_merging/ties_merging_utils.py`` (commit c2b8ecd).
2. Elect: per entry, the sign of the summed trimmed values; where that sum is exactly 0 the sign is the
   majority sign (sign of the sum of all elected signs), as in ``resolve_sign``.
3. Disjoint merge of the trimmed values whose sign agrees with the elected one, by ``merge_func``:
   ``"mean"`` (their mean; the paper's and the SIMO code's choice, the default), ``"sum"`` (their sum;
   ``dis-sum``, the TIES baseline of the AdaMerging / Surgery / SurgeryV2 tables and FusionBench's
   default, used there with λ = 0.3) or ``"max"`` (the largest magnitude, with the elected sign).
Finally θ = θ0 + λ·merged.

Memory: the thresholds are exact and computed per task (one task's magnitudes at a time, never a T×N
matrix); the election and merge then work per tensor (T copies of one tensor at a time).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS

MERGE_FUNCS = ("mean", "sum", "max")


def magnitude_threshold(task_vector: Mapping[str, Tensor], k: float, count: str = "reference") -> float:
    """The trim threshold; entries with |τ| ``>=`` it are kept.

    ``count="reference"``: the (N−n)-th smallest |entry|, n = int(N·k/100) (n + 1 entries kept, as the
    reference code does); ``"exact"``: the n-th largest, n = max(1, int(N·k/100)) (n entries kept; the
    definition the affinity analysis uses).
    """
    if not 0 < k <= 100:
        raise ValueError(f"ties: k must be in (0, 100] (percent of entries kept), got {k}")
    magnitudes = torch.cat([task_vector[key].abs().reshape(-1) for key in task_vector])
    n_total = magnitudes.numel()
    if count == "exact":
        rank = n_total - max(1, int(n_total * k / 100)) + 1
    elif count == "reference":
        rank = n_total - int(n_total * (k / 100))
    else:
        raise ValueError(f"ties: count must be 'reference' or 'exact', got {count!r}")
    if rank < 1:
        return 0.0
    return magnitudes.kthvalue(rank).values.item()


def _trimmed(
    task_vectors: Mapping[str, Mapping[str, Tensor]], thresholds: dict[str, float], key: str
) -> Tensor:
    stacked = torch.stack([tv[key] for tv in task_vectors.values()])
    limits = torch.tensor([thresholds[t] for t in task_vectors], dtype=stacked.dtype)
    limits = limits.view(-1, *([1] * (stacked.dim() - 1)))
    return stacked * (stacked.abs() >= limits)


def disjoint_merge(trimmed: Tensor, elected: Tensor, merge_func: str) -> Tensor:
    """Aggregate, over tasks (dim 0), the trimmed values whose sign agrees with ``elected``."""
    agree = torch.where(elected > 0, trimmed > 0, trimmed < 0)
    selected = trimmed * agree
    if merge_func == "sum":
        return selected.sum(0)
    if merge_func == "max":
        return selected.abs().amax(0) * elected
    return selected.sum(0) / agree.sum(0).clamp(min=1)


@MERGE_METHODS.register("ties", label="TIES", scale="lam")
def ties(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    k: float = 20.0,
    lam: float = 1.0,
    merge_func: str = "mean",
) -> dict[str, Tensor]:
    if merge_func not in MERGE_FUNCS:
        raise ValueError(f"ties: merge_func must be one of {MERGE_FUNCS}, got {merge_func!r}")
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
        merged[key] = theta0.float() + lam * disjoint_merge(trimmed, elected, merge_func)
    return merged
