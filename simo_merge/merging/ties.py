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

Memory and time: the thresholds are exact and computed per task by a sample select
(:mod:`simo_merge.merging._select`: one counting pass, bit for bit the reference's ``kthvalue``). Trim,
election and merge then run in one pass per tensor (T copies of one tensor at a time), in cache-sized
slices on the CPU; the entries whose trimmed values sum to exactly 0 (the only ones that need the
majority sign over the whole model) are set aside and resolved at the end.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging._select import kth_smallest_magnitude

MERGE_FUNCS = ("mean", "sum", "max")


def magnitude_threshold(task_vector: Mapping[str, Tensor], k: float, count: str = "reference") -> float:
    """The trim threshold; entries with |τ| ``>=`` it are kept.

    ``count="reference"``: the (N−n)-th smallest |entry|, n = int(N·k/100) (n + 1 entries kept, as the
    reference code does); ``"exact"``: the n-th largest, n = max(1, int(N·k/100)) (n entries kept; the
    definition the affinity analysis uses).
    """
    if not 0 < k <= 100:
        raise ValueError(f"ties: k must be in (0, 100] (percent of entries kept), got {k}")
    n_total = sum(task_vector[key].numel() for key in task_vector)
    if count == "exact":
        rank = n_total - max(1, int(n_total * k / 100)) + 1
    elif count == "reference":
        rank = n_total - int(n_total * (k / 100))
    else:
        raise ValueError(f"ties: count must be 'reference' or 'exact', got {count!r}")
    if rank < 1:
        return 0.0
    return kth_smallest_magnitude(task_vector.values(), rank)


#: entries merged at a time on the CPU: T x 65536 float32 stay in cache through the dozen elementwise
#: steps of trim, elect and merge (about 5x faster than whole tensors); accelerators take whole tensors
CPU_CHUNK = 1 << 16


def _trim_and_merge(values: list[Tensor], limits: Tensor, merge_func: str) -> tuple[Tensor, Tensor, Tensor]:
    """(trimmed values tasks x entries, elected signs, merged values) of one slice of entries."""
    trimmed = torch.stack(values)
    trimmed.mul_(trimmed.abs() >= limits)
    elected = torch.sign(trimmed.sum(0))
    return trimmed, elected, disjoint_merge(trimmed, elected, merge_func)


def disjoint_merge(trimmed: Tensor, elected: Tensor, merge_func: str) -> Tensor:
    """Aggregate, over tasks (dim 0), the trimmed values whose sign agrees with ``elected``.

    Where ``elected`` is 0 no value agrees (the caller resolves those entries with the majority sign:
    :func:`_elected_zero`). The agreeing values are read through ``trimmed · elected`` (their magnitudes
    where positive), so one product serves the test and the sum."""
    aligned = trimmed * elected
    agree = aligned > 0
    magnitudes = aligned.clamp_(min=0)
    if merge_func == "max":
        return magnitudes.amax(0) * elected
    total = magnitudes.sum(0) * elected
    if merge_func == "sum":
        return total
    return total / _count(agree).clamp(min=1)


def _count(mask: Tensor) -> Tensor:
    """How many tasks (dim 0) are True per entry; summed as bytes (a bool sum is ~50x slower)."""
    dtype = torch.uint8 if mask.shape[0] < 256 else torch.int32
    return mask.to(torch.uint8).sum(0, dtype=dtype).float()


def _elected_zero(trimmed: Tensor, majority_sign: float, merge_func: str) -> Tensor:
    """Merged values of entries whose trimmed values sum to exactly 0: the elected sign is the majority
    sign. A majority of exactly 0 leaves it 0, which the reference's ``where(sign > 0, x > 0, x < 0)``
    reads as "the negative values agree" (their mean or sum, as an elected -1 gives them) and its
    ``"max"`` multiplies by: 0."""
    if majority_sign == 0 and merge_func == "max":
        return torch.zeros(trimmed.shape[1:], dtype=trimmed.dtype)
    elected = torch.full(trimmed.shape[1:], majority_sign or -1.0, dtype=trimmed.dtype)
    return disjoint_merge(trimmed, elected, merge_func)


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
    # One pass: each tensor is merged with its own elected signs; the entries whose sum is exactly 0
    # need the majority sign over every tensor, so their trimmed values wait (they are few) until it
    # is known. Entries whose trimmed values are all 0 merge to 0 whatever the majority.
    majority = 0.0
    merged: dict[str, Tensor] = {}
    waiting: dict[str, tuple[Tensor, Tensor]] = {}
    for key in base:
        values = [tv[key].reshape(-1) for tv in task_vectors.values()]
        limits = torch.tensor([thresholds[t] for t in task_vectors], dtype=values[0].dtype)
        limits = limits.to(values[0].device).view(-1, 1)
        n = values[0].numel()
        chunk = n if values[0].device.type != "cpu" else CPU_CHUNK
        out = torch.empty_like(values[0])
        zeros, columns = [], []
        for start in range(0, n, chunk):
            part = [v[start : start + chunk] for v in values]
            trimmed, elected, out[start : start + chunk] = _trim_and_merge(part, limits, merge_func)
            majority += elected.sum().item()
            zero = (elected == 0).nonzero().squeeze(1)
            if zero.numel():
                undecided = (trimmed[:, zero] != 0).any(0)
                zeros.append(zero[undecided] + start)
                columns.append(trimmed[:, zero[undecided]])
        merged[key] = out
        if zeros and sum(z.numel() for z in zeros):
            waiting[key] = (torch.cat(zeros), torch.cat(columns, dim=1))
        del values
    majority_sign = float(torch.sign(torch.tensor(majority)).item())
    for key, (where, values) in waiting.items():
        merged[key][where] = _elected_zero(values, majority_sign, merge_func)
    return {key: theta0.float() + lam * merged[key].view(theta0.shape) for key, theta0 in base.items()}
