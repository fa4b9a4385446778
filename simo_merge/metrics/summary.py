"""Multi-task summary scores (ΔMTL, normalised performance) from per-task metric dicts.

Pure Python functions on ``results: dict[task, dict[metric, float]]`` (the output of
``MultiTaskMetrics.compute()``); no torch needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from simo_merge.protocols import CHOICES

#: Direction of every metric key produced by this package: True when a higher value is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "miou": True,
    "pixel_acc": True,
    "abs_err": False,
    "rel_err": False,
    "mean_angle": False,
    "median_angle": False,
    "within_11.25": True,
    "within_22.5": True,
    "within_30": True,
    "l1": False,
    "accuracy": True,
}

#: Unit of every metric key produced by this package: every rate is a percentage (0-100).
METRIC_UNITS: dict[str, str] = {
    "miou": "%",
    "pixel_acc": "%",
    "accuracy": "%",
    "within_11.25": "%",
    "within_22.5": "%",
    "within_30": "%",
    "abs_err": "target units (m for depth)",
    "rel_err": "ratio |pred - gt| / gt",
    "l1": "target units",
    "mean_angle": "degrees",
    "median_angle": "degrees",
}

#: A task's primary metric (SIMO eq. 2 and ``training/utils.py`` ``TaskMetric``): the first of these
#: among its metrics: segmentation mIoU, depth / disparity abs. error, normals mean angle, other dense
#: regression (Taskonomy keypoints, edges) its abs. error ``l1``, classification top-1.
PRIMARY_METRICS: tuple[str, ...] = ("miou", "abs_err", "mean_angle", "l1", "accuracy")

Results = Mapping[str, Mapping[str, float]]


def primary_metric(task: str, metrics: Mapping[str, float]) -> str:
    """The primary metric of ``task`` (:data:`PRIMARY_METRICS`); KeyError naming the task if it has none."""
    for name in PRIMARY_METRICS:
        if name in metrics:
            return name
    raise KeyError(f"task {task!r} has no primary metric: none of {PRIMARY_METRICS} in {sorted(metrics)}")


def primary_only(results: Results) -> dict[str, dict[str, float]]:
    """``results`` with each task reduced to its primary metric."""
    return {task: {(m := primary_metric(task, ms)): ms[m]} for task, ms in results.items()}


def metric_units(rows: Mapping[str, Results]) -> dict[str, str]:
    """``{metric: unit}`` for every metric in ``rows`` (row -> task -> metric), for JSON outputs."""
    names = sorted({m for results in rows.values() for metrics in results.values() for m in metrics})
    return {m: METRIC_UNITS.get(m, "as the metric returns it") for m in names}


def _pairs(
    results: Results,
    baselines: Results,
    higher_is_better: Mapping[str, bool] | None,
) -> dict[str, list[tuple[str, float, float, bool]]]:
    """Validate inputs and return, per task, (metric, value, baseline, higher_is_better) tuples."""
    directions = dict(HIGHER_IS_BETTER)
    if higher_is_better:
        directions.update(higher_is_better)
    if not results:
        raise ValueError("results is empty: need at least one task")
    out: dict[str, list[tuple[str, float, float, bool]]] = {}
    for task, metrics in results.items():
        if not metrics:
            raise ValueError(f"results[{task!r}] has no metrics")
        if task not in baselines:
            raise KeyError(f"task {task!r} is missing from baselines (baseline tasks: {sorted(baselines)})")
        rows = []
        for name, value in metrics.items():
            if name not in baselines[task]:
                raise KeyError(
                    f"metric {name!r} of task {task!r} is missing from baselines[{task!r}] "
                    f"(has: {sorted(baselines[task])})"
                )
            if name not in directions:
                raise KeyError(
                    f"metric {name!r} of task {task!r} has no known direction; add it to "
                    f"HIGHER_IS_BETTER or pass higher_is_better={{{name!r}: True/False}}"
                )
            v, b = float(value), float(baselines[task][name])
            if not math.isfinite(v):
                raise ValueError(f"results[{task!r}][{name!r}] is not finite: {v}")
            if not math.isfinite(b) or b == 0.0:
                raise ValueError(f"baselines[{task!r}][{name!r}] must be finite and non-zero, got {b}")
            rows.append((name, v, b, bool(directions[name])))
        out[task] = rows
    return out


def delta_mtl(
    results: Results,
    baselines: Results,
    higher_is_better: Mapping[str, bool] | None = None,
    metrics: str = "all",
) -> float:
    """Multi-task performance change ΔMTL (%) of ``results`` relative to single-task ``baselines``.

    ΔMTL = (1/T) Σ_t (1/|M_t|) Σ_{m ∈ M_t} (−1)^{l_m} (M_m − M_b,m) / M_b,m × 100,

    where T is the number of tasks in ``results``, l_m = 1 when lower is better for metric m (0
    otherwise), and M_t the metrics of task t: with ``metrics="all"`` every metric reported for it,
    averaged within the task first, then over tasks (Maninis et al., CVPR 2019; Vandenhende et al.,
    TPAMI 2021); with ``"primary"`` its one primary metric (:data:`PRIMARY_METRICS`; SIMO eq. 2, as its
    ``training/utils.py`` ``TaskMetric.compute_metric`` computes it). Positive = better than the
    baselines. Every task/metric in ``results`` must exist in ``baselines`` (KeyError naming it
    otherwise); extra baseline entries are ignored. Metric directions come from ``HIGHER_IS_BETTER``,
    optionally extended/overridden by ``higher_is_better``. The result does not depend on whether both
    dicts use fractions or percentages, as long as they use the same scale.
    """
    if metrics not in CHOICES["delta_metrics"]:
        raise ValueError(f"delta_mtl: metrics must be one of {CHOICES['delta_metrics']}, got {metrics!r}")
    if metrics == "primary":
        results = primary_only(results)
    per_task = []
    for rows in _pairs(results, baselines, higher_is_better).values():
        terms = [(1.0 if hib else -1.0) * (v - b) / b for _, v, b, hib in rows]
        per_task.append(sum(terms) / len(terms))
    return 100.0 * sum(per_task) / len(per_task)


def normalized_performance(
    results: Results,
    baselines: Results,
    higher_is_better: Mapping[str, bool] | None = None,
    metrics: str = "all",
) -> dict[str, float]:
    """Per-task normalised performance (%) of ``results`` relative to ``baselines``, plus their mean.

    For each task, the mean over its metrics (``"all"``, or its ``"primary"`` one as :func:`delta_mtl`)
    of ``M / M_b`` (higher is better) or ``M_b / M`` (lower is better), × 100: 100 means on par with the
    baseline, above 100 better. The returned dict has one entry per task of ``results`` and an extra
    ``"mean"`` entry, the unweighted mean over tasks (so no task may be named ``"mean"``). Raises KeyError
    naming a task/metric missing from ``baselines`` and ValueError for a zero lower-is-better result
    (ratio undefined).
    """
    if "mean" in results:
        raise ValueError("a task named 'mean' clashes with the 'mean' summary key of normalized_performance")
    if metrics not in CHOICES["delta_metrics"]:
        raise ValueError(f"metrics must be one of {CHOICES['delta_metrics']}, got {metrics!r}")
    if metrics == "primary":
        results = primary_only(results)
    out: dict[str, float] = {}
    for task, rows in _pairs(results, baselines, higher_is_better).items():
        ratios = []
        for name, v, b, hib in rows:
            if not hib and v == 0.0:
                raise ValueError(
                    f"results[{task!r}][{name!r}] is 0 for a lower-is-better metric: M_b/M undefined"
                )
            ratios.append(v / b if hib else b / v)
        out[task] = 100.0 * sum(ratios) / len(ratios)
    out["mean"] = sum(out.values()) / len(out)
    return out
