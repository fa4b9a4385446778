"""Seeded index batches over a set of unlabelled inputs (the same order for the same seed)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


class IndexSampler:
    """Seeded index batches over ``n`` inputs: shuffled epochs, a ``fraction`` subset, or one online pass."""

    def __init__(
        self, n: int, batch_size: int, seed: int, fraction: float = 1.0, online: bool = False
    ) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        subset = torch.randperm(n, generator=self.gen)[: max(1, round(n * fraction))]
        self.pool = subset.sort().values
        self.batch_size = 1 if online else min(batch_size, len(self.pool))
        self.online = online

    def __iter__(self) -> Iterator[Tensor]:
        if self.online:
            yield from (self.pool[i : i + 1] for i in torch.randperm(len(self.pool), generator=self.gen))
            return
        while True:
            order = self.pool[torch.randperm(len(self.pool), generator=self.gen)]
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                yield order[start : start + self.batch_size]
