"""Evaluation: one encoder pass per batch, all task heads on its taps, torchmetrics accumulation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from simo_merge.metrics import MultiTaskMetrics
from simo_merge.model import MultiTaskModel
from simo_merge.runtime import current, placed
from simo_merge.tasks import TaskSpec


@torch.no_grad()
def evaluate(
    model: MultiTaskModel,
    loader: Iterable,
    specs: dict[str, TaskSpec],
    desc: str = "eval",
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Metrics per task over the whole loader, e.g. ``{"semseg": {"miou": .., "pixel_acc": ..}, ...}``.

    On the current runtime (:mod:`simo_merge.runtime`): on its device and precision; with several
    processes each rank reads its own shard of a DataLoader's dataset and the torchmetrics states are
    summed over ranks, so every rank returns the metrics of the whole set."""
    runtime = current()
    was_training = model.training
    metrics = MultiTaskMetrics(specs).to(runtime.device)
    if isinstance(loader, DataLoader):
        loader = runtime.shard_loader(loader)
    show = progress and runtime.is_global_zero
    with placed(model.eval()):
        for batch in tqdm(loader, desc=desc, disable=not show, leave=False, dynamic_ncols=True):
            batch = runtime.to_device(batch)
            with runtime.autocast():
                preds = model(batch["image"], tasks=list(specs))
            metrics.update({t: p.float() for t, p in preds.items()}, batch)
    model.train(was_training)
    return metrics.compute()


def evaluate_splits(
    model: MultiTaskModel,
    splits: list[tuple[Any, list[str]]],
    tasks: list[str],
    desc: str,
    progress: bool,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """``tasks``' metrics, each on its own data set (SIMO: one pass over the shared one for all heads)."""
    out: dict[str, dict[str, float]] = {}
    for dataset, served in splits:
        mine = [t for t in served if t in tasks]
        if mine:
            specs = {t: dataset.task_specs[t] for t in mine}
            out.update(evaluate(model, DataLoader(dataset, batch_size), specs, desc, progress))
    return {t: out[t] for t in tasks}
