"""Dense multi-task metrics (torchmetrics ``Metric`` subclasses with fixed-size, sum-reduced states).

Conventions (:data:`METRIC_UNITS`): every rate (mIoU, pixel accuracy, top-1 accuracy, "within_<t>") is a
percentage (0-100); depth/L1 errors are in target units (metres for depth); ``rel_err`` is a ratio; normal
angles are in degrees.
"""

from simo_merge.metrics.multitask import DEPTH_LIKE_TASKS, MultiTaskMetrics, build_task_metric
from simo_merge.metrics.normals import NORMAL_THRESHOLDS, NormalMetric
from simo_merge.metrics.regression import DepthMetric, RegressionL1Metric
from simo_merge.metrics.segmentation import SegmentationMetric
from simo_merge.metrics.summary import (
    HIGHER_IS_BETTER,
    METRIC_UNITS,
    delta_mtl,
    metric_units,
    normalized_performance,
)

__all__ = [
    "DEPTH_LIKE_TASKS",
    "HIGHER_IS_BETTER",
    "METRIC_UNITS",
    "NORMAL_THRESHOLDS",
    "DepthMetric",
    "MultiTaskMetrics",
    "NormalMetric",
    "RegressionL1Metric",
    "SegmentationMetric",
    "build_task_metric",
    "delta_mtl",
    "metric_units",
    "normalized_performance",
]
