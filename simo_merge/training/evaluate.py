"""Evaluation: one encoder pass per batch, all task heads on its taps, torchmetrics accumulation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from simo_merge.metrics import MultiTaskMetrics
from simo_merge.tasks import TaskSpec
from simo_merge.training.model import MultiTaskModel


@torch.no_grad()
def evaluate(
    model: MultiTaskModel,
    loader: Iterable,
    specs: dict[str, TaskSpec],
    desc: str = "eval",
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Metrics per task over the whole loader, e.g. ``{"semseg": {"miou": .., "pixel_acc": ..}, ...}``."""
    was_training = model.training
    model.eval()
    metrics = MultiTaskMetrics(specs)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        preds = model(batch["image"], tasks=list(specs))
        metrics.update(preds, batch)
    model.train(was_training)
    return metrics.compute()
