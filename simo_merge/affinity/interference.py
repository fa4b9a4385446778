"""Measured pairwise interference: merge every pair with task arithmetic and see what each task loses.

For each unordered pair {s, t}: θ(λ) = θ0 + λ(τs + τt) (``merge(pool, "task_arithmetic", tasks=[s, t])``),
λ* = the candidate with the best mean normalised performance of s and t on the *selection* evaluator
(a validation split; ties go to the first candidate), then on the test evaluator

    I[s, t] = 100 − P_t(θ(λ*))   (loss of t, in percentage points of its expert, when merged with s),
    I[t, s] = 100 − P_s(θ(λ*)),  I[t, t] = 0.

Negative entries mean the pair merge beats that task's expert. I is not symmetric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from simo_merge.affinity._evaluate import (
    Evaluator,
    Results,
    check_baselines,
    evaluate_tasks,
    normalise,
)
from simo_merge.affinity.transfer import SIMO_LAMBDAS
from simo_merge.merging import merge
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.progress import progress_bar

#: λ candidates of each pairwise merge: the SIMO paper's sweep (the default before: 0.2, 0.4, ..., 1.0)
DEFAULT_SELECT_LAMBDAS: tuple[float, ...] = SIMO_LAMBDAS
#: where λ was chosen, as recorded in the result's "selection"
SELECTION_VAL = "validation evaluator"
SELECTION_TEST = "test evaluator (no validation evaluator given: optimistic)"


def _checked(
    pool: ExpertPool, tasks: Sequence[str] | None, lambdas: Sequence[float]
) -> tuple[list[str], list[float]]:
    """The tasks (all of the pool's by default) and the λ candidates, refused when unknown or empty."""
    names = list(tasks) if tasks is not None else pool.tasks
    missing = [t for t in names if t not in pool.experts]
    if missing:
        raise KeyError(f"pairwise_interference: tasks not in the pool: {missing}; pool has {pool.tasks}")
    grid = [float(x) for x in lambdas]
    if not grid:
        raise ValueError("pairwise_interference: lambdas (the λ candidates) is empty")
    return names, grid


def _select_lambda(
    pool: ExpertPool,
    pair: tuple[str, str],
    grid: list[float],
    select: Evaluator,
    select_baselines: Results,
    higher_is_better: Mapping[str, bool] | None,
    bar: Any,
) -> tuple[int, Any, Results | None, list[float]]:
    """``(index of λ*, its merged state, its selection results, the mean normalised score per λ)``.

    Only the best state is kept while sweeping (memory: one encoder at a time); ties go to the first λ.
    """
    s, t = pair
    scores: list[float] = []
    best, best_state, best_res = -1, None, None
    for lam in grid:
        bar.set_postfix_str(f"{s}+{t} λ={lam:.2f}")
        state = merge(pool, "task_arithmetic", tasks=[s, t], lam=lam)
        res = evaluate_tasks(select, state, [s, t], f"pairwise_interference ({s}+{t}, λ={lam})")
        values = normalise(res, select_baselines, higher_is_better)
        scores.append((values[s] + values[t]) / 2)
        if best < 0 or scores[-1] > scores[best]:
            best, best_state, best_res = len(scores) - 1, state, res
        bar.update()
    return best, best_state, best_res, scores


def pairwise_interference(
    pool: ExpertPool,
    evaluate_state: Evaluator,
    baselines: Results,
    lambdas: Sequence[float] = DEFAULT_SELECT_LAMBDAS,
    evaluate_val: Evaluator | None = None,
    val_baselines: Results | None = None,
    tasks: Sequence[str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """T×T interference matrix from pairwise task-arithmetic merges (definition in the module docstring).

    ``evaluate_val`` (with ``val_baselines``, the experts' metrics on that split; default ``baselines``)
    selects λ; without it λ is selected on ``evaluate_state`` itself, which is optimistic and recorded
    in ``"selection"``. Returns ``{"tasks", "lambdas", "matrix" T×T, "norm" T×T (P_t merged with s; NaN
    diagonal), "selected_lambda" T×T (symmetric, NaN diagonal), "val_scores" {"s|t": [per λ]},
    "test_metrics" {"s|t": {task: {metric: value}}}, "selection"}``.
    """
    names, grid = _checked(pool, tasks, lambdas)
    check_baselines(baselines, names, "pairwise_interference")
    select = evaluate_val or evaluate_state
    select_baselines = val_baselines if evaluate_val is not None and val_baselines is not None else baselines
    check_baselines(select_baselines, names, "pairwise_interference (selection)")
    size = len(names)
    matrix = np.zeros((size, size))
    norm = np.full((size, size), np.nan)
    chosen = np.full((size, size), np.nan)
    val_scores: dict[str, list[float]] = {}
    test_metrics: dict[str, dict[str, dict[str, float]]] = {}
    pairs = list(combinations(range(size), 2))
    bar = progress_bar(desc="pairwise merges", total=len(pairs) * len(grid), show=progress)
    for i, j in pairs:
        s, t = names[i], names[j]
        best, best_state, best_res, scores = _select_lambda(
            pool, (s, t), grid, select, select_baselines, higher_is_better, bar
        )
        test = best_res
        if evaluate_val is not None:
            test = evaluate_tasks(
                evaluate_state, best_state, [s, t], f"pairwise_interference ({s}+{t}, test)"
            )
        values = normalise(test, baselines, higher_is_better)
        norm[i, j], norm[j, i] = values[t], values[s]
        matrix[i, j], matrix[j, i] = 100.0 - values[t], 100.0 - values[s]
        chosen[i, j] = chosen[j, i] = grid[best]
        val_scores[f"{s}|{t}"] = scores
        test_metrics[f"{s}|{t}"] = test
    bar.close()
    return {
        "tasks": names,
        "lambdas": grid,
        "matrix": matrix,
        "norm": norm,
        "selected_lambda": chosen,
        "val_scores": val_scores,
        "test_metrics": test_metrics,
        "selection": SELECTION_VAL if evaluate_val is not None else SELECTION_TEST,
    }
