"""Fisher merging (Matena & Raffel, NeurIPS 2022): θ = Σ_t F_t θ_t / Σ_t F_t, elementwise.

``F_t`` is the diagonal Fisher information of expert t (encoder + its head) on its task's unlabelled
inputs (see :mod:`simo_merge.probes.fisher`), floored at ``floor`` so that entries no task is sensitive
to fall back to the plain average instead of 0/0. With ``θ_t = θ0 + τ_t`` this is computed as
``θ0 + Σ_t F_t τ_t / Σ_t F_t`` (the same value, without cancelling large θ0 entries). Fishers are either
passed in (``fishers={task: {key: F}}``) or estimated through ``probe`` with ``num_batches`` batches.
Fisher magnitudes are not normalised across tasks: a task whose outputs are more sensitive to a weight
gets more say on it, as in the paper (no per-model scaling coefficients).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS


def _fishers_for(
    tasks: list[str], probe, fishers: Mapping[str, Mapping[str, Tensor]] | None, num_batches: int
) -> Mapping[str, Mapping[str, Tensor]]:
    from simo_merge.probes.base import per_task_statistics
    from simo_merge.probes.fisher import diagonal_fisher

    return per_task_statistics(
        "fisher",
        "Fisher diagonals",
        tasks,
        probe,
        fishers,
        lambda p, t: diagonal_fisher(p, t, num_batches=num_batches),
    )


@MERGE_METHODS.register("fisher")
def fisher(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    probe=None,
    fishers: Mapping[str, Mapping[str, Tensor]] | None = None,
    floor: float = 1e-6,
    num_batches: int = 8,
) -> dict[str, Tensor]:
    if not floor > 0:
        raise ValueError(f"fisher: floor must be > 0 (it keeps Σ_t F_t positive), got {floor}")
    fishers = _fishers_for(list(task_vectors), probe, fishers, num_batches)
    merged = {}
    for key, theta0 in base.items():
        numerator = torch.zeros(theta0.shape, dtype=torch.float32)
        denominator = torch.zeros(theta0.shape, dtype=torch.float32)
        for task, tv in task_vectors.items():
            if key not in fishers[task]:
                raise KeyError(f"fisher: the Fisher of task {task!r} has no entry for key {key!r}")
            weight = fishers[task][key].float()
            if weight.shape != theta0.shape:
                raise ValueError(
                    f"fisher: Fisher of task {task!r} for key {key!r} has shape {tuple(weight.shape)}, "
                    f"parameter has {tuple(theta0.shape)}"
                )
            if not torch.isfinite(weight).all():
                raise ValueError(f"fisher: the Fisher of task {task!r} for key {key!r} is not finite")
            weight = weight.clamp_min(floor)
            numerator.add_(weight * tv[key])
            denominator.add_(weight)
        merged[key] = theta0.float() + numerator / denominator
    return merged
