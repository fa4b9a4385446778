"""Evaluation: one encoder pass per batch, all task heads on its taps, torchmetrics accumulation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.utils.data import DataLoader

from simo_merge.metrics import MultiTaskMetrics
from simo_merge.model import MultiTaskModel
from simo_merge.progress import progress_bar
from simo_merge.protocols import PROTOCOLS, Protocol
from simo_merge.runtime import current, placed
from simo_merge.tasks import TaskSpec


@torch.no_grad()
def evaluate(
    model: MultiTaskModel,
    loader: Iterable,
    specs: dict[str, TaskSpec],
    desc: str = "eval",
    progress: bool = True,
    protocol: Protocol = PROTOCOLS["default"],
) -> dict[str, dict[str, float]]:
    """Metrics per task over the whole loader, e.g. ``{"semseg": {"miou": .., "pixel_acc": ..}, ...}``.

    On the current runtime (:mod:`simo_merge.runtime`): on its device and precision; with several
    processes each rank reads its own shard of a DataLoader's dataset and the torchmetrics states are
    summed over ranks, so every rank returns the metrics of the whole set. ``protocol`` decides how the
    metrics aggregate and which pixels they count (its ``aggregation`` and ``valid_pixels``)."""
    runtime = current()
    was_training = model.training
    metrics = MultiTaskMetrics(
        specs, aggregation=protocol.aggregation, valid_pixels=protocol.valid_pixels
    ).to(runtime.device)
    if isinstance(loader, DataLoader):
        loader = runtime.shard_loader(loader)
    show = progress and runtime.is_global_zero
    with placed(model.eval()):
        for batch in progress_bar(loader, desc, show=show):
            batch = runtime.to_device(batch)
            with runtime.autocast():
                preds = model(batch["image"], tasks=list(specs))
            metrics.update({t: p.float() for t, p in preds.items()}, batch)
    model.train(was_training)
    return metrics.compute()
