"""The k-th smallest magnitude over many tensors without sorting them all.

A global magnitude threshold (TIES' trim, the affinity analysis' top-k) is the ``rank``-th smallest
``|x|`` over every entry of a state dict; ``torch.cat(...).kthvalue`` selects it over all N entries with
a large constant. Here a sample select (Floyd and Rivest's idea) does it exactly in one counting pass:

1. a strided sample of about 2**20 magnitudes gives two bounds that hold the rank-th value with a wide
   margin (the sample's quantiles at rank/N ± 6 standard errors);
2. one pass counts the entries below the lower bound and keeps the few between the bounds;
3. if the rank falls among those kept, ``kthvalue`` over them alone is the answer; otherwise (a sample
   that missed, only on adversarial layouts) the full ``kthvalue`` is.

Either way the value is the one ``torch.cat([t.abs().flatten() ...]).kthvalue(rank)`` returns, bit for
bit, ties included. Memory: the magnitudes (one concatenated copy's worth, as before) plus the kept few.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

#: about how many magnitudes the bounds are estimated from
SAMPLE_SIZE = 1 << 20
#: how many standard errors of the sample quantile the bounds sit from the target rank
MARGIN_SE = 6.0


def _bounds(magnitudes: list[Tensor], rank: int, total: int, sample_size: int) -> tuple[float, float]:
    """Lower and upper bounds estimated from a strided sample of ``magnitudes``."""
    step = max(1, total // sample_size)
    sample = torch.cat([m[::step] for m in magnitudes])
    size = sample.numel()
    q = rank / total
    margin = MARGIN_SE * math.sqrt(q * (1 - q) / size) + 2 / size
    lo_rank = min(size, max(1, math.floor((q - margin) * size)))
    hi_rank = min(size, max(1, math.ceil((q + margin) * size)))
    if step == 1:  # the sample is everything: the exact bounds
        lo_rank = hi_rank = rank
    return sample.kthvalue(lo_rank).values.item(), sample.kthvalue(hi_rank).values.item()


def kth_smallest_magnitude(tensors: Iterable[Tensor], rank: int, *, sample_size: int = SAMPLE_SIZE) -> float:
    """The ``rank``-th smallest ``|x|`` (1-based) over every entry of ``tensors``, as
    ``torch.cat([t.abs().flatten() for t in tensors]).kthvalue(rank)`` gives it."""
    magnitudes = [t.detach().reshape(-1).abs() for t in tensors]
    total = sum(m.numel() for m in magnitudes)
    if not 1 <= rank <= total:
        raise ValueError(f"rank must be in [1, {total}], got {rank}")
    lo, hi = _bounds(magnitudes, rank, total, sample_size)
    below, kept = 0, []
    for m in magnitudes:
        at_least_lo = m >= lo
        below += m.numel() - int(torch.count_nonzero(at_least_lo))
        kept.append(m[at_least_lo & (m <= hi)])
    between = torch.cat(kept)
    if below < rank <= below + between.numel():
        return between.kthvalue(rank - below).values.item()
    return torch.cat(magnitudes).kthvalue(rank).values.item()
