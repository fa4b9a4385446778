"""Fisher merging (Matena & Raffel, NeurIPS 2022): θ = Σ_t c_t F_t θ_t / Σ_t c_t F_t, elementwise.

``F_t`` is the diagonal Fisher information of expert t (encoder + its head) on its task's unlabelled
inputs (see :mod:`simo_merge.merging.data.fisher`). With ``θ_t = θ0 + τ_t`` the merge is computed as
``θ0 + Σ_t c_t F'_t τ_t / Σ_t c_t F'_t`` (the same value, without cancelling large θ0 entries). Fishers
are either passed in (``fishers={task: {key: F}}``) or estimated through ``merge_data`` (``num_batches``).

Defaults reproduce the reference implementations:

- ``normalize=True``: each task's Fisher is scaled by the inverse of its global L2 norm (over every
  merged entry), ``c_t = (1 / (‖F_t‖ + floor)) / Σ_s 1 / (‖F_s‖ + floor)``, so that tasks whose Fishers
  differ in scale by orders of magnitude (a segmentation head vs a regression head) still get comparable
  say: mmatena/model_merging ``model_merging/merging.py`` (``normalize_fishers=True``,
  ``_l2_norm_of_fisher``; commit f2d1677) and FusionBench
  ``fusion_bench/method/fisher_merging/fisher_merging.py`` (``normalize_fisher_weight=True``,
  ``get_models_fisher_norm``; commit 1a28175). ``normalize=False`` is the unnormalised merge (the
  behaviour of this package before; a task with larger Fishers gets more say).
- ``floor_mode="add"``: ``F'_t = F_t + floor`` (FusionBench's ``minimal_fisher_weight``, 1e-6);
  ``"clamp"``: ``F'_t = max(F_t, floor)`` (the previous behaviour here, mmatena's ``tf.maximum``).
- ``all_zero="floor"`` (FusionBench's behaviour, the default): an entry whose Fisher is exactly 0 for
  every task is decided by the floor like any other, so it becomes the floored weighted average
  ``Σ_t c_t θ_t / Σ_t c_t`` of the experts (the plain average when ``normalize=False``).
  ``all_zero="theta0"``: such entries keep θ0 instead (no expert has information there, so none of
  their task vectors is moved in); this is our option, no reference implementation does it. mmatena's
  ``favor_target_model=True`` is a different rule: its "target" model is the first *fine-tuned* model
  of the list it merges (``generate_merged_for_coeffs_set``: "the first model ... is the target model
  and the rest are donor models"), the only one whose Fisher it floors, so entries where every Fisher
  is 0 return that expert's value, not θ0; this package has no target expert and does not reproduce it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS

FLOOR_MODES = ("add", "clamp")
ALL_ZERO = ("floor", "theta0")


def _fishers_for(
    tasks: list[str], merge_data, fishers: Mapping[str, Mapping[str, Tensor]] | None, num_batches: int
) -> Mapping[str, Mapping[str, Tensor]]:
    from simo_merge.merging.data.base import per_task_statistics
    from simo_merge.merging.data.fisher import diagonal_fisher

    return per_task_statistics(
        "fisher",
        "Fisher diagonals",
        tasks,
        merge_data,
        fishers,
        lambda p, t: diagonal_fisher(p, t, num_batches=num_batches),
    )


def _checked(fishers: Mapping[str, Mapping[str, Tensor]], task: str, key: str, like: Tensor) -> Tensor:
    if key not in fishers[task]:
        raise KeyError(f"fisher: the Fisher of task {task!r} has no entry for key {key!r}")
    weight = fishers[task][key].float()
    if weight.shape != like.shape:
        raise ValueError(
            f"fisher: Fisher of task {task!r} for key {key!r} has shape {tuple(weight.shape)}, "
            f"parameter has {tuple(like.shape)}"
        )
    if not torch.isfinite(weight).all():
        raise ValueError(f"fisher: the Fisher of task {task!r} for key {key!r} is not finite")
    return weight


def task_coefficients(
    fishers: Mapping[str, Mapping[str, Tensor]], keys: list[str], floor: float
) -> dict[str, float]:
    """c_t ∝ 1 / (‖F_t‖₂ + floor), summing to 1; the norm runs over every merged entry of task t."""
    inverse = {}
    for task, per_key in fishers.items():
        squared = sum(float(per_key[k].double().square().sum()) for k in keys)
        inverse[task] = 1.0 / (squared**0.5 + floor)
    total = sum(inverse.values())
    return {task: value / total for task, value in inverse.items()}


@MERGE_METHODS.register("fisher", label="Fisher", scale=None)
def fisher(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    merge_data=None,
    fishers: Mapping[str, Mapping[str, Tensor]] | None = None,
    normalize: bool = True,
    floor: float = 1e-6,
    floor_mode: str = "add",
    all_zero: str = "floor",
    num_batches: int = 8,
) -> dict[str, Tensor]:
    if not floor > 0:
        raise ValueError(f"fisher: floor must be > 0 (it keeps Σ_t F_t positive), got {floor}")
    if floor_mode not in FLOOR_MODES:
        raise ValueError(f"fisher: floor_mode must be one of {FLOOR_MODES}, got {floor_mode!r}")
    if all_zero not in ALL_ZERO:
        raise ValueError(f"fisher: all_zero must be one of {ALL_ZERO}, got {all_zero!r}")
    tasks = list(task_vectors)
    fishers = _fishers_for(tasks, merge_data, fishers, num_batches)
    for key, theta0 in base.items():  # validate every entry before any arithmetic
        for task in tasks:
            _checked(fishers, task, key, theta0)
    coeff = task_coefficients({t: fishers[t] for t in tasks}, list(base), floor) if normalize else None
    merged = {}
    for key, theta0 in base.items():
        numerator = torch.zeros(theta0.shape, dtype=torch.float32)
        denominator = torch.zeros(theta0.shape, dtype=torch.float32)
        informed = torch.zeros(theta0.shape, dtype=torch.bool)
        for task, tv in task_vectors.items():
            raw = fishers[task][key].float()
            informed |= raw != 0
            weight = raw + floor if floor_mode == "add" else raw.clamp_min(floor)
            if coeff is not None:
                weight = weight * coeff[task]
            numerator.add_(weight * tv[key])
            denominator.add_(weight)
        update = numerator / denominator
        if all_zero == "theta0":
            update = torch.where(informed, update, torch.zeros_like(update))
        merged[key] = theta0.float() + update
    return merged
