"""How a merge's scale (λ) is chosen on val: the criterion a protocol names and what it compares against.

``"normperf"`` (the default protocol): the mean normalised performance of the val results against the
val Individual row (every expert on its own task, measured in the same run). ``"delta_mtl"`` (protocol
``simo``): the ΔMTL of the val results' primary metrics against the fixed single-task constants the SIMO
code hard-codes (d23845jg/simo_merging @ 2fcaa49a, ``training/utils.py`` lines 268-280, which
``TaskMetric.compute_metric`` turns into its ``"all"`` score and ``model_merging/eval_utils.py``
``find_optimal_coef`` (lines 224-266, called at line 300) maximises over the λ grid on the val loader).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from simo_merge.metrics.summary import delta_mtl, normalized_performance
from simo_merge.protocols import CHOICES

Results = Mapping[str, Mapping[str, float]]

#: SIMO's single-task constants (``training/utils.py`` lines 268-280) in our dataset, task and metric
#: names and units: mIoU in % (theirs a fraction), errors as their targets encode them (NYUv2 depth in
#: metres, Cityscapes disparity as the npy files store it, Taskonomy depth as log1p(raw) / log(2**16),
#: keypoints / edges mapped to [-1, 1]), normal angles in degrees.
SIMO_SINGLE_TASK: dict[str, dict[str, dict[str, float]]] = {
    "nyuv2": {"semseg": {"miou": 68.23}, "depth": {"abs_err": 0.2708}, "normal": {"mean_angle": 24.73}},
    "cityscapes_npy": {
        "semseg": {"miou": 58.76},
        "part_seg": {"miou": 50.88},
        "disparity": {"abs_err": 0.0102},
    },
    "taskonomy": {
        "semseg": {"miou": 51.39},
        "depth": {"abs_err": 0.0146},
        "normal": {"mean_angle": 18.4414},
        "keypoints2d": {"l1": 0.0062},
        "edge": {"l1": 0.0126},
    },
}


def simo_single_task(dataset: str, tasks: list[str]) -> dict[str, dict[str, float]]:
    """SIMO's constants of those of ``tasks`` that have one on ``dataset``: a task without one (the
    Taskonomy autoencoder) adds nothing to the SIMO code's score either (its ΔMTL loop skips a task it has
    no branch for). ValueError for a dataset without constants or when no given task has one."""
    if dataset not in SIMO_SINGLE_TASK:
        raise ValueError(
            f"selection 'delta_mtl' compares with the SIMO code's single-task constants, which exist for "
            f"{', '.join(SIMO_SINGLE_TASK)}; data.name {dataset!r} has none (use data.protocol=default)"
        )
    known = SIMO_SINGLE_TASK[dataset]
    if tasks and not any(t in known for t in tasks):
        raise ValueError(
            f"selection 'delta_mtl': the SIMO code has no single-task constant for any of the tasks "
            f"{list(tasks)} of {dataset!r} (it has {sorted(known)})"
        )
    return {t: dict(known[t]) for t in tasks if t in known}


#: how reports name each criterion's score
SELECTION_LABELS: dict[str, str] = {
    "normperf": "val NormPerf vs the val Individual row",
    "delta_mtl": "val ΔMTL (primary metrics) vs the SIMO code's single-task constants",
}


@dataclass(frozen=True)
class Criterion:
    """A λ-selection criterion and its baselines: :meth:`score` is higher for a better val result."""

    criterion: str  # CHOICES["selection"]
    baselines: Mapping[str, Mapping[str, float]]

    def __post_init__(self) -> None:
        if self.criterion not in CHOICES["selection"]:
            raise ValueError(f"selection must be one of {CHOICES['selection']}, got {self.criterion!r}")

    @property
    def key(self) -> str:
        """The name the chosen score is recorded under (``val_norm_perf`` / ``val_delta_mtl``)."""
        return "val_norm_perf" if self.criterion == "normperf" else "val_delta_mtl"

    @property
    def label(self) -> str:
        """How reports name the score (:data:`SELECTION_LABELS`)."""
        return SELECTION_LABELS[self.criterion]

    def score(self, results: Results) -> float:
        """The val score of ``results`` (%): mean NormPerf, or ΔMTL over the primary metrics of the tasks
        with a baseline."""
        if self.criterion == "normperf":
            return normalized_performance(results, self.baselines)["mean"]
        results = {t: results[t] for t in self.baselines}
        # SIMO divides by its number of constants, we by the tasks scored: the same λ wins either way
        return delta_mtl(results, self.baselines, metrics="primary")


def criterion(
    criterion: str, dataset: str, tasks: list[str], val_individual: Results | None = None
) -> Criterion:
    """The :class:`Criterion` named ``criterion`` for ``tasks`` of a run on ``dataset``: ``"normperf"``
    against ``val_individual`` (the val Individual row, required there), ``"delta_mtl"`` against SIMO's
    constants (no Individual row needed)."""
    if criterion == "normperf":
        if val_individual is None:
            raise ValueError("selection 'normperf' needs the val Individual row (val_individual)")
        return Criterion(criterion, val_individual)
    return Criterion(criterion, simo_single_task(dataset, list(tasks)))
