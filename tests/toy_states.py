"""State dicts for tests: an "expert" as θ0 plus seeded Gaussian noise on its float entries."""

from __future__ import annotations

import torch


def perturbed(state: dict[str, torch.Tensor], seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """``state`` with ``scale`` x N(0, 1) noise (generator seeded with ``seed``) on every float tensor."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in state.items()
    }
