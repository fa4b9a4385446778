"""DARE (Yu et al., ICML 2024): drop each task-vector entry with probability p, rescale by 1/(1−p).

A task-vector transform, so it composes with any merge method (``transforms={"dare": {"p": 0.9}}``
before task arithmetic or TIES). The drop mask of a (task, key) pair depends only on (seed, task,
key), so repeated reads of the same tensor (TIES reads twice) see the same mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from simo_merge.merging import TV_TRANSFORMS


def _stable_seed(seed: int, task: str, key: str) -> int:
    digest = hashlib.sha256(f"{seed}|{task}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class DroppedTaskVector(Mapping[str, Tensor]):
    """Lazy view of a task vector with DARE's random drop and rescale applied per tensor."""

    def __init__(self, task_vector: Mapping[str, Tensor], p: float, seed: int, task: str) -> None:
        self._tv, self._p, self._seed, self._task = task_vector, p, seed, task

    def __getitem__(self, key: str) -> Tensor:
        value = self._tv[key]
        if self._p == 0:
            return value
        gen = torch.Generator().manual_seed(_stable_seed(self._seed, self._task, key))
        keep = torch.rand(value.shape, generator=gen) >= self._p
        return value * keep / (1.0 - self._p)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tv)

    def __len__(self) -> int:
        return len(self._tv)


@TV_TRANSFORMS.register("dare")
def dare(
    task_vectors: Mapping[str, Mapping[str, Tensor]], *, p: float = 0.5, seed: int = 0
) -> dict[str, Mapping[str, Tensor]]:
    if not 0 <= p < 1:
        raise ValueError(f"dare: drop rate p must be in [0, 1), got {p}")
    return {task: DroppedTaskVector(tv, p, seed, task) for task, tv in task_vectors.items()}
