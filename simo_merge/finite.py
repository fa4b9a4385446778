"""Refuse non-finite weights: a NaN or Inf in θ0 or an expert silently poisons every merged value."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


class NonFiniteError(ValueError):
    """A state dict holds NaN or Inf values; the message names the source (file) and the key."""


def check_finite(state: Mapping[str, Tensor], source: str) -> None:
    """Raise :class:`NonFiniteError` naming ``source`` and the first key with NaN/Inf entries."""
    for key, value in state.items():
        if not value.is_floating_point() and not value.is_complex():
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            nan = int(torch.isnan(value).sum())
            inf = int((~finite).sum()) - nan
            raise NonFiniteError(f"{source}: key {key!r} has {nan} NaN and {inf} Inf value(s)")
