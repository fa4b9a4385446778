"""RegMean (Jin et al., ICLR 2023): merge each linear layer by least squares on the experts' inputs.

For a linear layer ``y = x Wᵀ + b`` (PyTorch stores ``W`` as ``[out, in]``) with expert inputs
``X_t`` (rows = tokens), RegMean solves ``min_W Σ_t ‖X_t Wᵀ − X_t W_tᵀ‖²``, whose solution is

    Wᵀ = (Σ_t G_t)⁻¹ Σ_t G_t W_tᵀ,   G_t = X_tᵀ X_t  ([in, in]),

i.e. ``W = solve(Σ G_t, Σ G_t W_tᵀ)ᵀ``. Each Gram is first regularised towards its diagonal,
``G̃_t = α G_t + (1 − α) diag(G_t)`` (off-diagonals scaled by ``alpha``; α = 1 is the plain least
squares, α = 0 a per-input-feature weighted average). With ``W_t = W_0 + τ_t`` and the task-vector mean
``τ̄`` this is computed as ``W = W_0 + τ̄ + solve(Σ G̃_t, Σ G̃_t (τ_t − τ̄)ᵀ)ᵀ`` in float64 (the same
value, better conditioned). If ``Σ G̃_t`` is singular (an input feature no task ever uses) the
minimum-norm least-squares correction is used, so those directions keep the average. The same applies
to ``in_proj_weight`` of ``nn.MultiheadAttention`` (``[3·E, E]``, inputs of the attention module).

Every other parameter (biases, norms, embeddings, and weights without a Gram) is merged by ``others``:
``"average"`` (θ0 + mean τ) or ``"task_arithmetic"`` (θ0 + ``lam`` Σ τ). Grams are passed in
(``grams={task: {weight_key: G}}``) or collected through ``merge_data`` (:mod:`simo_merge.merging.data.gram`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS

OTHERS = ("average", "task_arithmetic")


def regularised_gram(gram: Tensor, alpha: float) -> Tensor:
    """``α G + (1 − α) diag(G)``: off-diagonal entries scaled by ``alpha``, the diagonal kept."""
    return alpha * gram + (1.0 - alpha) * torch.diag_embed(torch.diagonal(gram))


def regmean_linear(weights: list[Tensor], grams: list[Tensor], alpha: float = 1.0) -> Tensor:
    """RegMean of ``[out, in]`` expert weights (or weight deltas) given their ``[in, in]`` input Grams."""
    mean = torch.stack([w.double() for w in weights]).mean(0)
    lhs = torch.zeros_like(grams[0], dtype=torch.float64)
    rhs = torch.zeros(mean.shape[1], mean.shape[0], dtype=torch.float64)
    for w, g in zip(weights, grams, strict=True):
        g_reg = regularised_gram(g.double(), alpha)
        lhs += g_reg
        rhs += g_reg @ (w.double() - mean).T
    correction, info = torch.linalg.solve_ex(lhs, rhs)
    if info.item() != 0 or not torch.isfinite(correction).all():
        correction = torch.linalg.lstsq(lhs, rhs, driver="gelsd").solution
    return mean + correction.T


def _grams_for(
    tasks: list[str], merge_data, grams: Mapping[str, Mapping[str, Tensor]] | None, num_batches: int
) -> Mapping[str, Mapping[str, Tensor]]:
    from simo_merge.merging.data.base import per_task_statistics
    from simo_merge.merging.data.gram import gram_matrices

    return per_task_statistics(
        "regmean",
        "Gram matrices",
        tasks,
        merge_data,
        grams,
        lambda p, t: gram_matrices(p, t, num_batches=num_batches),
    )


@MERGE_METHODS.register("regmean", label="RegMean", scale=None)
def regmean(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    merge_data=None,
    grams: Mapping[str, Mapping[str, Tensor]] | None = None,
    alpha: float = 0.9,
    others: str = "average",
    lam: float = 0.3,
    num_batches: int = 8,
) -> dict[str, Tensor]:
    if not 0 <= alpha <= 1:
        raise ValueError(f"regmean: alpha must be in [0, 1], got {alpha}")
    if others not in OTHERS:
        raise ValueError(f"regmean: others must be one of {OTHERS}, got {others!r}")
    tasks = list(task_vectors)
    grams = _grams_for(tasks, merge_data, grams, num_batches)
    keyed = set().union(*(grams[t].keys() for t in tasks))
    for key in sorted(keyed):
        lacking = [t for t in tasks if key not in grams[t]]
        if lacking:
            raise KeyError(f"regmean: key {key!r} has a Gram for some tasks but not for {lacking}")
        if key not in base:
            raise KeyError(f"regmean: Gram given for key {key!r}, which is not a float entry of θ0")
        if base[key].dim() != 2:
            raise ValueError(f"regmean: key {key!r} has shape {tuple(base[key].shape)}, not [out, in]")
        d_in = base[key].shape[1]
        for t in tasks:
            if tuple(grams[t][key].shape) != (d_in, d_in):
                raise ValueError(
                    f"regmean: Gram of task {t!r} for key {key!r} has shape {tuple(grams[t][key].shape)}, "
                    f"expected {(d_in, d_in)}"
                )
    scale = 1.0 / len(tasks) if others == "average" else lam
    merged = {}
    for key, theta0 in base.items():
        if key in keyed:
            delta = regmean_linear(
                [task_vectors[t][key] for t in tasks], [grams[t][key] for t in tasks], alpha
            )
            merged[key] = (theta0.double() + delta).float()
        else:
            acc = theta0.float().clone()
            for tv in task_vectors.values():
                acc.add_(tv[key], alpha=scale)
            merged[key] = acc
    return merged
