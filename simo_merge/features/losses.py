"""Output distillation: how far a model's head outputs are from the expert's, per task kind."""

from __future__ import annotations

from torch import Tensor

from simo_merge.heads.base import unit_channels


def distill_output_loss(spec, pred: Tensor, target: Tensor) -> Tensor:
    """Match the expert model's outputs: KL(expert ‖ model) for logits (0 when they agree), L1 / 1−cos for
    regression / normals."""
    if spec.kind in ("segmentation", "classification"):
        log_target = target.log_softmax(1)
        return (log_target.exp() * (log_target - pred.log_softmax(1))).sum(1).mean()
    if spec.kind == "normals":
        return (1 - (unit_channels(pred) * unit_channels(target)).sum(1)).mean()
    return (pred - target).abs().mean()
