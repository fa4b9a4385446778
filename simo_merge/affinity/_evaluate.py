"""Calling the user's evaluator and normalising its output against the experts' metrics."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from simo_merge.metrics.summary import normalized_performance

StateDict = dict[str, Tensor]
Results = Mapping[str, Mapping[str, float]]
#: ``evaluate_state(state) -> {task: {metric: value}}``; may accept ``tasks=[...]`` to evaluate only those.
Evaluator = Callable[..., Results]


def accepts_tasks(fn: Callable) -> bool:
    try:
        return "tasks" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def evaluate_tasks(
    fn: Evaluator, state: StateDict, tasks: Sequence[str], what: str
) -> dict[str, dict[str, float]]:
    """Run ``fn`` on ``state`` (passing ``tasks=`` when it takes it) and keep ``tasks``' metrics."""
    results = fn(state, tasks=list(tasks)) if accepts_tasks(fn) else fn(state)
    if not isinstance(results, Mapping):
        raise TypeError(
            f"{what}: the evaluator returned {type(results).__name__}, expected {{task: {{metric: value}}}}"
        )
    missing = [t for t in tasks if t not in results]
    if missing:
        raise KeyError(
            f"{what}: the evaluator returned no metrics for task(s) {missing} (got {sorted(results)})"
        )
    return {t: {m: float(v) for m, v in results[t].items()} for t in tasks}


def normalise(
    results: Results, baselines: Results, higher_is_better: Mapping[str, bool] | None
) -> dict[str, float]:
    """Per-task normalised performance (%) of ``results`` (100 = the task's own expert); no "mean"."""
    out = normalized_performance(results, baselines, higher_is_better)
    out.pop("mean")
    return out


def check_baselines(baselines: Results, tasks: Sequence[str], what: str) -> None:
    missing = [t for t in tasks if t not in baselines]
    if missing:
        raise KeyError(
            f"{what}: no baseline (expert) metrics for task(s) {missing}; have {sorted(baselines)}"
        )
