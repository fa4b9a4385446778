"""Transfer curves: how moving θ0 along one task's vector changes every task's performance.

For a source task s and a scale λ the encoder is θ0 + λ·τs (float entries only, each in θ0's dtype;
integer buffers are θ0's). Every target task t is evaluated with its own frozen head on that encoder and
normalised against t's expert: P_t(s, λ) in % (100 = the expert θt with its head). From the curves:

* gain A[s→t] = max_λ P_t(s, λ) − P_t(θ0): how much some step along τs (in the λ grid) helps t, in
  percentage points. With 0 in the grid (the default) A ≥ 0 and A = 0 means no tested step helps. Not
  symmetric. The diagonal A[t→t] is t's own fine-tuning gain, 100 − P_t(θ0) when λ = 1 is the best scale.
* slope0 S[s→t] = (P_t(s, λ1) − P_t(θ0)) / λ1, λ1 the smallest positive λ in the grid: the forward
  difference at θ0, i.e. whether a small step along τs helps (> 0) or hurts (< 0) t. NaN without λ > 0.
* spread R[s→t] = max_λ P_t(s, λ) − min_λ P_t(s, λ): how sensitive t is to τs at all, whatever the sign.

θ0 is evaluated once and reused for λ = 0 of every source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simo_merge.affinity._evaluate import (
    Evaluator,
    Results,
    StateDict,
    check_baselines,
    evaluate_tasks,
    normalise,
)
from simo_merge.pool.expert_pool import ExpertPool, is_mergeable
from simo_merge.progress import progress_bar

#: the SIMO paper's λ sweep: ``np.linspace(0.0, 1.0, num_scaling_coef_samples=5)`` in d23845jg/simomm
#: ``evaluate_task_vector`` (``model_merging/eval_utils.py``; ``config/mtl.yaml.j2``), the default grid
SIMO_LAMBDAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: a finer grid for transfer curves (the default before; pass it as ``lambdas=FINE_LAMBDAS``)
FINE_LAMBDAS: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.0, 1.5, 16))
DEFAULT_LAMBDAS: tuple[float, ...] = SIMO_LAMBDAS


def scaled_state(pool: ExpertPool, task: str, lam: float) -> StateDict:
    """θ0 + λ·τ_task over the float entries (computed in float32, stored in θ0's dtype); others are θ0's."""
    vector = pool.task_vector(task)
    out: StateDict = {}
    for key, ref in pool.base.items():
        out[key] = (ref.float() + lam * vector[key]).to(ref.dtype) if is_mergeable(ref) else ref.clone()
    return out


def _checked_grid(pool: ExpertPool, sources: list[str], lambdas: Sequence[float] | np.ndarray) -> list[float]:
    """The λ grid as floats; a source not in the pool or an empty grid is refused."""
    for t in sources:
        if t not in pool.experts:
            raise KeyError(f"transfer source {t!r} is not in the pool; pool has {pool.tasks}")
    grid = [float(x) for x in np.asarray(lambdas, dtype=np.float64).reshape(-1)]
    if not grid:
        raise ValueError("transfer_curves: lambdas is empty")
    return grid


def _slope0(norm: np.ndarray, grid: list[float], p0: np.ndarray) -> tuple[float | None, np.ndarray]:
    """``(λ1, S)``: the forward difference at θ0 over the smallest positive λ1 ([S, T]; NaN without one)."""
    positive = [lam for lam in grid if lam > 0]
    if not positive:
        return None, np.full((norm.shape[0], norm.shape[2]), np.nan)
    lam1 = min(positive)
    return lam1, (norm[:, grid.index(lam1)] - p0[None, :]) / lam1


def transfer_curves(
    pool: ExpertPool,
    evaluate_state: Evaluator,
    baselines: Results,
    lambdas: Sequence[float] | np.ndarray = DEFAULT_LAMBDAS,
    sources: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate θ0 + λ·τs for every source s and λ; normalise every target; derive gain/slope0/spread.

    ``evaluate_state(state) -> {task: {metric: value}}`` evaluates each target's frozen head on an encoder
    state (it may take ``tasks=[...]``); ``baselines`` are the experts' own metrics, the 100% reference.
    Returns ``{"sources", "targets", "lambdas", "reference": {"metrics", "norm"}, "metrics": {s: [per λ]},
    "norm" [S, L, T], "gain" [S, T], "best_lambda" [S, T], "slope0" [S, T], "slope_lambda", "spread" [S, T]}``
    (definitions in the module docstring).
    """
    sources = list(sources) if sources is not None else pool.tasks
    targets = list(targets) if targets is not None else pool.tasks
    grid = _checked_grid(pool, sources, lambdas)
    check_baselines(baselines, targets, "transfer_curves")
    reference = evaluate_tasks(evaluate_state, dict(pool.base), targets, "transfer_curves (θ0)")
    ref_norm = normalise(reference, baselines, higher_is_better)
    norm = np.zeros((len(sources), len(grid), len(targets)))
    metrics: dict[str, list[dict[str, dict[str, float]]]] = {s: [] for s in sources}
    bar = progress_bar(desc="transfer curves", total=len(sources) * len(grid), show=progress)
    for i, s in enumerate(sources):
        for j, lam in enumerate(grid):
            bar.set_postfix_str(f"{s} λ={lam:.2f}")
            if lam == 0.0:
                res = reference
            else:
                res = evaluate_tasks(
                    evaluate_state,
                    scaled_state(pool, s, lam),
                    targets,
                    f"transfer_curves (source {s!r}, λ={lam})",
                )
            metrics[s].append(res)
            values = normalise(res, baselines, higher_is_better)
            norm[i, j] = [values[t] for t in targets]
            bar.update()
    bar.close()
    p0 = np.array([ref_norm[t] for t in targets])
    lam1, slope = _slope0(norm, grid, p0)
    return {
        "sources": sources,
        "targets": targets,
        "lambdas": grid,
        "reference": {"metrics": reference, "norm": ref_norm},
        "metrics": metrics,
        "norm": norm,
        "gain": norm.max(axis=1) - p0[None, :],
        "best_lambda": np.asarray(grid)[norm.argmax(axis=1)],
        "slope0": slope,
        "slope_lambda": lam1,
        "spread": norm.max(axis=1) - norm.min(axis=1),
    }
