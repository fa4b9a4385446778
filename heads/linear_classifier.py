"""A trainable linear classifier on pooled ViT features (SISO classification from any θ0).

It reads the final features (site ``"final"``: timm's pooled/CLS features after the last norm, open_clip's
projected embedding) and/or block taps, pooled per tap to the CLS token (``pool="cls"``, when the
encoder has one) or the mean patch token (``pool="mean"``), concatenated, and maps them to logits
``[B, C]``: ``fc(x)``, or with ``cosine=True`` a normalised-cosine classifier
``scale * normalize(x) @ normalize(W).T`` (no bias). Built through the ``linear`` head kind.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simo_merge.heads.base import EncoderLayout, TaskHead
from simo_merge.tasks import TaskSpec

POOLS = ("cls", "mean")


class LinearClassifierHead(TaskHead):
    """Pooled features -> logits ``[B, C]`` for a classification task."""

    kind = "linear"
    task_kinds = ("classification",)

    def __init__(
        self,
        task: TaskSpec,
        layout: EncoderLayout,
        taps: list[Any],
        cosine: bool = False,
        scale: float = 16.0,
        pool: str = "cls",
    ) -> None:
        if task.kind != "classification":
            raise ValueError(
                f"linear classifier head {task.name!r}: needs a classification task, got {task.kind!r}"
            )
        if pool not in POOLS:
            raise ValueError(
                f"linear classifier head {task.name!r}: pool must be one of {POOLS}, got {pool!r}"
            )
        if "final" in taps and layout.feature_dim is None:
            raise ValueError(
                f"linear classifier head {task.name!r}: reads 'final' but the layout has no feature_dim"
            )
        super().__init__(task, layout, list(taps), cosine=bool(cosine), scale=float(scale), pool=pool)
        self.cosine, self.scale, self.pool = bool(cosine), float(scale), pool
        in_features = sum(layout.feature_dim if t == "final" else layout.width for t in self.taps)
        self.fc = nn.Linear(in_features, task.channels, bias=not self.cosine)

    def pooled(self, feats: dict[Any, Tensor]) -> Tensor:
        """``[B, F]``: the read sites pooled and concatenated in ``taps`` order."""
        missing = [t for t in self.taps if t not in feats]
        if missing:
            raise KeyError(f"head {self.task.name!r} reads {self.taps}; missing {missing}")
        parts = []
        for t in self.taps:
            x = feats[t]
            if t != "final":
                p = self.layout.num_prefix_tokens
                x = x[:, 0] if self.pool == "cls" and p > 0 else x[:, p:].mean(1)
            parts.append(x)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, feats: dict[Any, Tensor]) -> Tensor:  # type: ignore[override]
        x = self.pooled(feats)
        if self.cosine:
            return self.scale * F.linear(F.normalize(x, dim=-1), F.normalize(self.fc.weight, dim=-1))
        return self.fc(x)
