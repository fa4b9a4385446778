"""Input checks shared by the dense metrics (shapes, masks), so every metric fails the same clear way."""

from __future__ import annotations

import torch
from torch import Tensor

from simo_merge.protocols import CHOICES


def as_bool_mask(mask: Tensor | None, shape: tuple[int, ...], name: str) -> Tensor | None:
    """Return ``mask`` as a bool tensor of ``shape`` ([B,H,W]); a [B,1,H,W] mask is squeezed.

    Raises ValueError naming the metric when the mask shape does not match the target's.
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name}: mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name}: mask shape {tuple(mask.shape)} does not match the expected {tuple(shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def as_bchw(x: Tensor, name: str, what: str) -> Tensor:
    """Return a dense map as [B,C,H,W]; a [B,H,W] map becomes [B,1,H,W]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"{name}: {what} must be [B,C,H,W] or [B,H,W], got shape {tuple(x.shape)}")
    return x


def check_same_shape(pred: Tensor, target: Tensor, name: str) -> None:
    """Raise ValueError naming the metric when prediction and target shapes differ."""
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}"
        )


def check_choice(value: str, field: str, name: str) -> str:
    """``value`` if it is one of the protocol choices of ``field`` (aggregation, valid_pixels); else a
    ValueError naming the metric."""
    allowed = CHOICES[field]
    if value not in allowed:
        raise ValueError(f"{name}: {field} must be one of {allowed}, got {value!r}")
    return value


def batch_terms(total: Tensor, count: Tensor, images: int, aggregation: str) -> tuple[Tensor, Tensor]:
    """What one batch adds to a metric's (sum, weight) states, whose ratio is the reported mean.

    ``"pooled"``: the sum over the batch's valid elements and their count (a mean over every valid
    element of the data set). ``"per_batch"``: the batch mean weighted by its number of images, i.e. a
    running mean of per-batch means as the SIMO code keeps it (``training/utils.py`` lines 184 and 229-231:
    weight ``curr_bs / batch_size``, so a short last batch counts for its share); a batch without valid
    elements adds nothing there (the SIMO code would turn the whole mean into NaN).
    """
    total, count = total.double(), count.double()
    if aggregation == "pooled":
        return total, count
    if count == 0:
        return torch.zeros_like(total), torch.zeros_like(count)
    weight = torch.full_like(count, float(images))
    return weight * total / count, weight
