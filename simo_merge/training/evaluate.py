"""Evaluation: one encoder pass per batch, all task heads on its taps, torchmetrics accumulation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, SequentialSampler

from simo_merge.metrics import MultiTaskMetrics
from simo_merge.model import MultiTaskModel
from simo_merge.progress import progress_bar
from simo_merge.protocols import PROTOCOLS, Protocol
from simo_merge.runtime import RankShard, current, placed
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
    order = _sample_order(loader)
    show = progress and runtime.is_global_zero
    with placed(model.eval()):
        for i, batch in enumerate(progress_bar(loader, desc, show=show)):
            batch = runtime.to_device(batch)
            check_images(batch["image"], i, order, desc)
            with runtime.autocast():
                preds = model(batch["image"], tasks=list(specs))
            metrics.update({t: p.float() for t, p in preds.items()}, batch)
    model.train(was_training)
    return metrics.compute()


def _sample_order(loader: Iterable) -> list[Sequence[int]] | None:
    """The data set indices of each batch of ``loader`` when its order is fixed (sequential or a rank's
    shard, as evaluation reads), else None."""
    if not isinstance(loader, DataLoader) or not isinstance(loader.sampler, (SequentialSampler, RankShard)):
        return None
    if loader.batch_size is None:
        return None
    indices = list(loader.sampler)
    return [indices[k : k + loader.batch_size] for k in range(0, len(indices), loader.batch_size)]


def check_images(images: Tensor, batch: int, order: list[Sequence[int]] | None, desc: str) -> None:
    """Raise ValueError naming the data set index (else the batch and position) of the first image with
    NaN/Inf pixels: a model turns them into confident-looking predictions and finite, wrong metrics."""
    bad = ~torch.isfinite(images.flatten(1)).all(1)
    if not bool(bad.any()):
        return
    j = int(bad.nonzero()[0])
    count = int((~torch.isfinite(images[j])).sum())
    where = f"data set index {order[batch][j]}" if order is not None else f"sample {j} of batch {batch}"
    raise ValueError(f"{desc}: the image of {where} holds {count} NaN/Inf pixel value(s); not evaluated")
