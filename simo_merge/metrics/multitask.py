"""Pick the metric for a task and evaluate several dense tasks at once."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torchmetrics import Metric

from simo_merge.metrics.classification import ClassificationMetric
from simo_merge.metrics.normals import NormalMetric
from simo_merge.metrics.regression import DepthMetric, RegressionL1Metric
from simo_merge.metrics.segmentation import SegmentationMetric
from simo_merge.tasks import TaskSpec

#: Regression task names judged with depth errors (abs/rel) rather than a plain L1.
DEPTH_LIKE_TASKS: frozenset[str] = frozenset({"depth", "disparity"})


def build_task_metric(spec: TaskSpec, *, aggregation: str = "pooled", valid_pixels: str = "masked") -> Metric:
    """Return a fresh metric for ``spec``.

    segmentation -> ``SegmentationMetric(spec.channels)``; regression named "depth" or "disparity" ->
    ``DepthMetric``; any other regression -> ``RegressionL1Metric``; normals -> ``NormalMetric``;
    classification -> ``ClassificationMetric(spec.channels)``. ``aggregation`` and ``valid_pixels`` are
    the protocol's (:data:`simo_merge.protocols.CHOICES`): the dense errors' mean (pooled or per batch)
    and which pixels count; segmentation has no aggregation (one confusion matrix), classification
    neither setting.
    """
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"build_task_metric expects a TaskSpec, got {type(spec).__name__}")
    dense = {"aggregation": aggregation, "valid_pixels": valid_pixels}
    if spec.kind == "segmentation":
        return SegmentationMetric(spec.channels, valid_pixels=valid_pixels)
    if spec.kind == "regression":
        return DepthMetric(**dense) if spec.name in DEPTH_LIKE_TASKS else RegressionL1Metric(**dense)
    if spec.kind == "normals":
        return NormalMetric(**dense)
    if spec.kind == "classification":
        return ClassificationMetric(spec.channels)
    raise ValueError(f"task {spec.name!r}: no metric for kind {spec.kind!r}")


class MultiTaskMetrics(torch.nn.Module):
    """One metric per task, updated from a model's output dict and a data-loader batch.

    It is an ``nn.Module`` (metrics live in a ``ModuleDict``) so ``.to(device)`` moves every state. Each
    metric syncs its own states across processes in ``compute()``. ``aggregation`` and ``valid_pixels``
    go to every task's metric (:func:`build_task_metric`).
    """

    def __init__(
        self, specs: Mapping[str, TaskSpec], *, aggregation: str = "pooled", valid_pixels: str = "masked"
    ) -> None:
        super().__init__()
        if not specs:
            raise ValueError("MultiTaskMetrics: specs is empty")
        for task, spec in specs.items():
            if not isinstance(spec, TaskSpec):
                raise TypeError(f"MultiTaskMetrics: specs[{task!r}] is not a TaskSpec: {spec!r}")
        self.specs = dict(specs)
        self.metrics = torch.nn.ModuleDict(
            {
                task: build_task_metric(spec, aggregation=aggregation, valid_pixels=valid_pixels)
                for task, spec in self.specs.items()
            }
        )

    @property
    def tasks(self) -> list[str]:
        """Task names, in the order given."""
        return list(self.specs)

    def update(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        """Update every task from ``outputs[task]``, ``batch[task]`` and ``batch[f"{task}_mask"]``.

        The mask is optional (missing = every pixel the metric itself deems valid). Raises KeyError naming
        the task when its prediction or target is missing.
        """
        for task in self.specs:
            if task not in outputs:
                raise KeyError(f"MultiTaskMetrics.update: outputs has no prediction for task {task!r}")
            if task not in batch:
                raise KeyError(f"MultiTaskMetrics.update: batch has no target for task {task!r}")
            pred = outputs[task]
            target = batch[task]
            mask = batch.get(f"{task}_mask")
            try:
                self.metrics[task].update(pred.detach(), target, mask)
            except (ValueError, TypeError) as err:
                raise type(err)(f"task {task!r}: {err}") from err

    def compute(self) -> dict[str, dict[str, float]]:
        """Return ``{task: {metric_name: float}}`` over everything seen since the last reset."""
        return {task: {k: float(v) for k, v in m.compute().items()} for task, m in self.metrics.items()}

    def reset(self) -> None:
        """Clear every task's states."""
        for m in self.metrics.values():
            m.reset()
