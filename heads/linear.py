"""A light linear head (as the SIMO paper uses on NYUv2): BatchNorm + 1x1 conv over concatenated taps.

Registered as ``linear``, which also serves classification tasks: those get
:class:`~simo_merge.heads.linear_classifier.LinearClassifierHead` (pooled features -> logits).

Each read tap's patch map (plus its CLS token broadcast over the grid, where the encoder has one) is
concatenated channel-wise, batch-normalised and projected per patch; the result is upsampled bilinearly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from simo_merge.heads import HEADS
from simo_merge.heads.base import EncoderLayout, TaskHead
from simo_merge.tasks import TaskSpec


class LinearHead(TaskHead):
    kind = "linear"

    def __init__(self, task: TaskSpec, layout: EncoderLayout, taps: list[int], use_cls: bool = True) -> None:
        super().__init__(task, layout, taps, use_cls=use_cls)
        self.use_cls = use_cls and layout.num_prefix_tokens > 0
        channels = layout.width * len(taps) * (2 if self.use_cls else 1)
        self.norm = nn.BatchNorm2d(channels)
        self.proj = nn.Conv2d(channels, task.channels, kernel_size=1)

    def decode(self, maps: list[Tensor], prefixes: list[Tensor | None]) -> Tensor:
        parts: list[Any] = list(maps)
        if self.use_cls:
            parts += [p[:, 0, :, None, None].expand_as(m) for m, p in zip(maps, prefixes, strict=True)]
        return self.proj(self.norm(torch.cat(parts, dim=1)))


@HEADS.register("linear")
def linear_head(task: TaskSpec, layout: EncoderLayout, taps: list, **options: Any) -> TaskHead:
    """``linear``: the dense BN + 1x1 conv head, or the pooled linear classifier for classification tasks."""
    if task.kind == "classification":
        from simo_merge.heads.linear_classifier import LinearClassifierHead

        return LinearClassifierHead(task, layout, taps, **options)
    return LinearHead(task, layout, taps, **options)
