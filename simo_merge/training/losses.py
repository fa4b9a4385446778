"""Per-task training losses over valid pixels (the ``f"{task}_mask"`` of each sample)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simo_merge.heads.base import unit_channels
from simo_merge.tasks import IGNORE_INDEX, TaskSpec


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def task_loss(spec: TaskSpec, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy (segmentation, classification), L1 (depth and other regression), 1 − cos (normals).

    Classification: ``pred`` logits [B, C], ``target`` class ids [B]; ``mask`` (optional, [B] bool) drops
    samples.
    """
    if spec.kind == "classification":
        if pred.dim() != 2 or target.dim() != 1 or target.shape[0] != pred.shape[0]:
            raise ValueError(
                f"task {spec.name!r}: classification needs logits [B, C] and targets [B], got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}"
            )
        labels = target.long()
        if mask is not None:
            if mask.shape != labels.shape:
                raise ValueError(f"task {spec.name!r}: mask shape {tuple(mask.shape)} != targets [B]")
            if not mask.any():
                return pred.sum() * 0.0
            pred, labels = pred[mask], labels[mask]
        return F.cross_entropy(pred, labels)
    if spec.kind == "segmentation":
        labels = target.long()
        if mask is not None:
            labels = torch.where(mask, labels, torch.full_like(labels, IGNORE_INDEX))
        if not (labels != IGNORE_INDEX).any():
            return pred.sum() * 0.0
        return F.cross_entropy(pred, labels, ignore_index=IGNORE_INDEX)
    valid = mask if mask is not None else torch.ones(pred.shape[0], *pred.shape[2:], dtype=torch.bool)
    if spec.kind == "normals":
        cos = (unit_channels(pred) * unit_channels(target)).sum(1)
        return _masked_mean(1.0 - cos, valid)
    return _masked_mean((pred - target).abs().mean(1), valid)


def multitask_loss(
    specs: dict[str, TaskSpec],
    preds: dict[str, Tensor],
    batch: dict[str, Tensor],
    weights: dict[str, float] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted mean of the task losses; also returns each task's value for logging."""
    total, parts = 0.0, {}
    for task, spec in specs.items():
        loss = task_loss(spec, preds[task], batch[task], batch.get(f"{task}_mask"))
        parts[task] = loss.item()
        total = total + (weights or {}).get(task, 1.0) * loss
    return total / len(specs), parts
