"""A task pool's merges and realignments: the probe data (:class:`MergeData`) a data-dependent merge reads,
the runtime parameters a method's registered facts ask for, and realignment on the pool's heads."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from simo_merge.features.cache import FeatureCache
from simo_merge.features.inputs import RealignInputs
from simo_merge.merging import MERGE_METHODS
from simo_merge.merging import merge as merge_pool
from simo_merge.merging.data import MergeData
from simo_merge.merging.spec import MethodSpec
from simo_merge.realign.model import RealignedModel
from simo_merge.realign.train import RealignConfig, realign
from simo_merge.taskpool.taskpool import TaskPool

State = dict[str, Tensor]


def merge_data(
    taskpool: TaskPool, inputs: RealignInputs, batch_size: int = 16, cache: FeatureCache | None = None
) -> MergeData:
    """The probe data of a data-dependent merge: the pool's architecture, copies of the frozen heads, the
    expert states and each task's unlabelled ``inputs`` (read batch by batch), seeded by the task pool."""
    return MergeData(
        taskpool.make_encoder,
        taskpool.heads_copy(),
        taskpool.pool.experts,
        inputs,
        batch_size=batch_size,
        seed=taskpool.seed,
        cache=cache,
        progress=taskpool.shows_progress,
    )


def merge(
    taskpool: TaskPool,
    spec: MethodSpec,
    inputs: RealignInputs | None = None,
    *,
    record: dict[str, Any] | None = None,
    batch_size: int = 16,
    cache: FeatureCache | None = None,
    **extra: Any,
) -> State:
    """Merge the task pool's experts with ``spec`` (its params updated with ``extra``, e.g. ``task=`` of a
    per-task method, or the scale being swept). What the method's registered facts ask for is filled in:
    ``merge_data`` over ``inputs`` (:func:`merge_data`) for a method that needs data, ``progress``, and
    ``record`` (a dict the method fills with its coefficients) when given."""
    facts = MERGE_METHODS.facts(spec.name)
    params = {**spec.params, **extra}
    if facts["needs_data"] and "merge_data" not in params:
        if inputs is None:
            raise ValueError(f"merge method {spec.name!r} needs unlabelled inputs; none were given")
        params["merge_data"] = merge_data(taskpool, inputs, batch_size, cache)
    if facts["progress"]:
        params.setdefault("progress", taskpool.shows_progress)
    if record is not None and facts["records"]:
        params["record"] = record
    return merge_pool(taskpool.pool, spec.name, transforms=spec.transforms, **params)


def realigned(
    taskpool: TaskPool,
    state: State,
    cfg: RealignConfig,
    inputs: RealignInputs,
    cache: FeatureCache | None = None,
) -> tuple[RealignedModel, list[float]]:
    """The merged ``state`` realigned by ``cfg`` on ``inputs`` against the experts, on copies of the frozen
    heads; the realigned model (eval mode) and its loss curve."""
    model, curve = realign(
        taskpool.make_encoder, state, taskpool.pool.experts, taskpool.heads_copy(), inputs, cfg, cache
    )
    return model.eval(), curve
