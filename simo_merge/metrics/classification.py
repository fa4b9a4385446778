"""Image-level classification metric: top-1 accuracy over a whole data set."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ClassificationMetric(Metric):
    """Top-1 accuracy from two sum-reduced counters (``correct``, ``total``).

    ``compute()`` returns ``{"accuracy": 100 · correct / total}`` in % (0-100, the unit of every rate
    in this package; NaN before any sample is seen), as a 0-dim float64 tensor.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"ClassificationMetric: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.add_state("correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            preds: logits/scores ``[B, C]`` (argmax over C; C must equal ``num_classes``) or integer
                labels ``[B]``.
            target: integer class ids ``[B]``.
            mask: optional bool ``[B]``, True where the sample counts.
        """
        name = type(self).__name__
        if target.dim() != 1:
            raise ValueError(f"{name}: target must be [B] class ids, got shape {tuple(target.shape)}")
        if target.is_floating_point():
            raise ValueError(f"{name}: target must hold integer class ids, got {target.dtype}")
        if preds.dim() == 2:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"{name}: logits have {preds.shape[1]} classes but num_classes={self.num_classes}"
                )
            labels = preds.argmax(dim=1)
        elif preds.dim() == 1 and not preds.is_floating_point():
            labels = preds
        else:
            raise ValueError(
                f"{name}: preds must be [B, C] logits or [B] integer labels, got {tuple(preds.shape)} "
                f"{preds.dtype}"
            )
        if labels.shape[0] != target.shape[0]:
            raise ValueError(f"{name}: {labels.shape[0]} predictions for {target.shape[0]} targets")
        hits = labels == target
        if mask is not None:
            if tuple(mask.shape) != tuple(target.shape):
                raise ValueError(f"{name}: mask shape {tuple(mask.shape)} does not match target [B]")
            valid = mask if mask.dtype == torch.bool else mask != 0
            hits = hits & valid
            count = valid.sum()
        else:
            count = torch.tensor(target.shape[0], device=target.device)
        self.correct += hits.sum().to(self.correct.dtype)
        self.total += count.to(self.total.dtype)

    def compute(self) -> dict[str, Tensor]:
        total = self.total.to(torch.float64)
        if self.total > 0:
            acc = 100.0 * (self.correct.to(torch.float64) / total)
        else:
            acc = torch.tensor(float("nan"), dtype=torch.float64)
        return {"accuracy": acc}
