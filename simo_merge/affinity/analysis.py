"""One call for the whole offline affinity analysis: data-free parts always, measured parts on request."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from simo_merge.affinity._evaluate import Evaluator, Results
from simo_merge.affinity.agreement import agreement
from simo_merge.affinity.clustering import DEFAULT_THRESHOLD, cluster_tasks
from simo_merge.affinity.interference import DEFAULT_SELECT_LAMBDAS, pairwise_interference
from simo_merge.affinity.transfer import DEFAULT_LAMBDAS, transfer_curves
from simo_merge.affinity.vectors import cosine_matrices, sign_conflict
from simo_merge.pool.expert_pool import ExpertPool


def run_affinity(
    pool: ExpertPool,
    *,
    block_of: Callable[[str], int | None] | None = None,
    k: float = 20.0,
    cluster_threshold: float = DEFAULT_THRESHOLD,
    evaluate_state: Evaluator | None = None,
    baselines: Results | None = None,
    evaluate_val: Evaluator | None = None,
    val_baselines: Results | None = None,
    transfer_lambdas: Sequence[float] | np.ndarray = DEFAULT_LAMBDAS,
    select_lambdas: Sequence[float] = DEFAULT_SELECT_LAMBDAS,
    higher_is_better: Mapping[str, bool] | None = None,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Cosines, sign conflicts and clusters from the task vectors; with ``evaluate_state`` and
    ``baselines`` also transfer curves, pairwise interference and the predictors' agreement with it.

    The result feeds :func:`simo_merge.affinity.write_affinity_report` unchanged.
    """
    names = list(tasks) if tasks is not None else pool.tasks
    cosine = cosine_matrices(pool, block_of=block_of, tasks=names, progress=progress)
    results: dict[str, Any] = {
        "tasks": names,
        "settings": {"k": float(k), "cluster_threshold": float(cluster_threshold)},
        "cosine": cosine,
        "sign_conflict": sign_conflict(pool, k=k, tasks=names, progress=progress),
        "clusters": cluster_tasks(cosine["global"]["cosine"], names, threshold=cluster_threshold),
    }
    if evaluate_state is None:
        return results
    if baselines is None:
        raise ValueError("run_affinity: evaluate_state needs baselines (the experts' own metrics per task)")
    results["transfer"] = transfer_curves(
        pool,
        evaluate_state,
        baselines,
        lambdas=transfer_lambdas,
        sources=names,
        targets=names,
        higher_is_better=higher_is_better,
        progress=progress,
    )
    results["interference"] = pairwise_interference(
        pool,
        evaluate_state,
        baselines,
        lambdas=select_lambdas,
        evaluate_val=evaluate_val,
        val_baselines=val_baselines,
        tasks=names,
        higher_is_better=higher_is_better,
        progress=progress,
    )
    results["settings"]["transfer_lambdas"] = list(results["transfer"]["lambdas"])
    results["settings"]["select_lambdas"] = results["interference"]["lambdas"]
    results["agreement"] = _agreements(results, names)
    return results


def _agreements(results: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """How well each data-free predictor ranks the pairs like measured interference does."""
    matrix = results["interference"]["matrix"]
    return {
        "cosine": agreement(results["cosine"]["global"]["cosine"], matrix, "low", names),
        "sign_conflict": agreement(results["sign_conflict"]["rate"], matrix, "high", names),
        "transfer_gain": agreement(results["transfer"]["gain"], matrix, "low", names),
    }
