"""Dense multi-task metrics (torchmetrics ``Metric`` subclasses with fixed-size, sum-reduced states).

Conventions: segmentation values are fractions in [0, 1]; depth/L1 errors are in target units; normal
angles are in degrees and the "within_<t>" values are percentages (0-100).
"""

from simo_merge.metrics.multitask import DEPTH_LIKE_TASKS, MultiTaskMetrics, build_task_metric
from simo_merge.metrics.normals import NORMAL_THRESHOLDS, NormalMetric
from simo_merge.metrics.regression import DepthMetric, RegressionL1Metric
from simo_merge.metrics.segmentation import SegmentationMetric
from simo_merge.metrics.summary import HIGHER_IS_BETTER, delta_mtl, normalized_performance

__all__ = [
    "DEPTH_LIKE_TASKS",
    "HIGHER_IS_BETTER",
    "NORMAL_THRESHOLDS",
    "DepthMetric",
    "MultiTaskMetrics",
    "NormalMetric",
    "RegressionL1Metric",
    "SegmentationMetric",
    "build_task_metric",
    "delta_mtl",
    "normalized_performance",
]
