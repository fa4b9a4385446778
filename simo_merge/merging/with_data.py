"""Merging a pool with any method, handing data-dependent methods their :class:`MergeData`."""

from __future__ import annotations

from torch import Tensor

from simo_merge.features.inputs import RealignInputs
from simo_merge.merging import merge
from simo_merge.merging.spec import MethodSpec
from simo_merge.pool.expert_pool import ExpertPool


def merge_with_inputs(
    pool: ExpertPool, method: MethodSpec, inputs: RealignInputs, seed: int, progress: bool
) -> dict[str, Tensor]:
    """Merge ``pool`` with ``method``; data-dependent methods get ``merge_data`` over ``inputs`` (each task's
    own unlabelled inputs)."""
    from simo_merge.merging import MERGE_METHODS

    params = dict(method.params)
    if MERGE_METHODS.facts(method.name)["needs_data"] and "merge_data" not in params:
        from simo_merge.merging.data import MergeData

        params["merge_data"] = MergeData(
            pool.encoder,
            pool.frozen_heads(),
            pool.experts,
            inputs,  # streamed: each batch read from its source when drawn
            seed=seed,
            progress=progress,
        )
    return merge(pool, method.name, transforms=method.transforms, **params)
