"""Consensus merging and TALL masks (Wang et al., ICML 2024, "Localizing Task Information").

Follows nik-dim/tall_masks ``src/utils/tallmask_utils.py`` (``generate_task_masks``,
``construct_consensus_mask``) and the ``consensus`` / ``tall_mask`` branches of
``src/eval/aggregation.py`` (commit d10af8b21383):

- multi-task vector mtv = Σ_t τt (the task-arithmetic sum at unit scale);
- TALL mask of task t: m_t = |θ0 − θt| > λ_t·|θ_mt − θt| with θ_mt = θ0 + mtv, i.e. |τt| > λ_t·|mtv − τt|;
- consensus mask: entries active in at least ``k`` tasks' masks (k = 2 drops "selfish" and
  "catastrophic" weights; k = 0 gives task arithmetic);
- Consensus TA: θ = θ0 + lam·(mtv ⊙ consensus mask);
- TALL-mask reconstruction of task t (``tall_masks``): θ̂t = θ0 + m_t ⊙ mtv (scale 1, as the authors).

The authors choose λ_t per task on validation data from {0.2, …, 0.6}; data-free, ``tall_lambda`` is one
value for all tasks (default 0.6, FusionBench's ``tall_mask/task_arithmetic.yaml``) or a mapping
task → λ_t. The authors' ``use_ties`` variant (mtv from TIES with the disjoint *sum*) is not offered here.
Memory: one key at a time (T tensors of that key).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging._layers import check_tasks

SOURCE = "nik-dim/tall_masks src/utils/tallmask_utils.py @ d10af8b21383"


def task_lambdas(
    task_vectors: Mapping[str, Mapping[str, Tensor]], tall_lambda: float | Mapping[str, float]
) -> dict[str, float]:
    """λ_t per task from one value or a task → λ mapping (every task must be named)."""
    if isinstance(tall_lambda, Mapping):
        missing = [t for t in task_vectors if t not in tall_lambda]
        if missing:
            raise ValueError(f"consensus: tall_lambda names no value for task(s) {missing}")
        return {t: float(tall_lambda[t]) for t in task_vectors}
    return {t: float(tall_lambda) for t in task_vectors}


def multi_task_vector(
    task_vectors: Mapping[str, Mapping[str, Tensor]], key: str
) -> tuple[Tensor, list[Tensor]]:
    """(Σ_t τt[key], [τt[key] for each task]) in float32; the task values are reused for the masks."""
    values = [tv[key].float() for tv in task_vectors.values()]
    mtv = values[0].clone()
    for v in values[1:]:
        mtv.add_(v)
    return mtv, values


def tall_mask(tau: Tensor, mtv: Tensor, lam: float) -> Tensor:
    """TALL mask |τt| > λ_t·|mtv − τt| (the authors' |θ0 − θt| > λ_t·|θ_mt − θt|)."""
    return tau.abs() > (mtv - tau).abs().mul_(lam)


@MERGE_METHODS.register(
    "consensus",
    facts={
        "label": "Consensus",
        "scale": "lam",
        "grid": [0.2, 0.4, 0.6, 0.8, 1.0],
        "keywise": True,
        "source": SOURCE,
    },
)
def consensus(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    k: int = 2,
    tall_lambda: float | Mapping[str, float] = 0.6,
    lam: float = 0.3,
) -> dict[str, Tensor]:
    check_tasks(task_vectors, "consensus")
    if k < 0:
        raise ValueError(f"consensus: k (minimum number of agreeing tasks) must be >= 0, got {k}")
    lambdas = task_lambdas(task_vectors, tall_lambda)
    merged = {}
    for key, theta0 in base.items():
        mtv, values = multi_task_vector(task_vectors, key)
        count = torch.zeros(mtv.shape, dtype=torch.int32, device=mtv.device)
        for task, tau in zip(task_vectors, values, strict=True):
            count += tall_mask(tau, mtv, lambdas[task])
        del values
        merged[key] = theta0.float() + lam * mtv * (count >= k)
    return merged


@MERGE_METHODS.register(
    "tall_masks",
    facts={
        "label": "TALL masks",
        "scale": None,
        "per_task": True,
        "keywise": True,
        "source": SOURCE,
    },
)
def tall_masks(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    task: str | None = None,
    tall_lambda: float | Mapping[str, float] = 0.6,
) -> dict[str, Tensor]:
    """θ̂_task = θ0 + m_task ⊙ Σ_t τt: one task's model recovered from the multi-task vector."""
    check_tasks(task_vectors, "tall_masks")
    if task is None or task not in task_vectors:
        raise KeyError(f"tall_masks: task {task!r} is not in the pool; tasks: {list(task_vectors)}")
    lambdas = task_lambdas(task_vectors, tall_lambda)
    merged = {}
    for key, theta0 in base.items():
        mtv = multi_task_vector(task_vectors, key)[0]
        merged[key] = theta0.float() + mtv * tall_mask(task_vectors[task][key].float(), mtv, lambdas[task])
    return merged
