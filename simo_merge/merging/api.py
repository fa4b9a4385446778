"""One entry point for every merge: validate hyper-parameters, apply transforms, restore dtypes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from simo_merge.finite import check_finite
from simo_merge.merging._hyperparams import check_values
from simo_merge.pool.expert_pool import ExpertPool, is_mergeable

StateDict = dict[str, Tensor]


def check_hyperparameters(fn: Callable, given: Mapping[str, Any], what: str) -> None:
    """Raise a ValueError naming any hyper-parameter ``fn`` does not accept, or a mistyped or
    non-finite value (see :mod:`simo_merge.merging._hyperparams`)."""
    check_values(fn, given, what)


def merge(
    pool: ExpertPool,
    method: str,
    tasks: list[str] | None = None,
    transforms: Mapping[str, Mapping[str, Any]] | None = None,
    **hyperparameters: Any,
) -> StateDict:
    """Merge ``pool``'s experts (or ``tasks`` of them) with the registered ``method``.

    ``transforms`` maps a task-vector transform name (e.g. ``"dare"``) to its arguments; they are applied
    in order before the method. Float entries come back in θ0's dtype; non-float entries are θ0's.
    """
    from simo_merge.merging import MERGE_METHODS, TV_TRANSFORMS

    fn = MERGE_METHODS.get(method)
    check_hyperparameters(fn, hyperparameters, f"merge method {method!r}")
    task_vectors: dict[str, Mapping[str, Tensor]] = dict(pool.task_vectors(tasks))
    for name, args in (transforms or {}).items():
        transform = TV_TRANSFORMS.get(name)
        check_hyperparameters(transform, args, f"transform {name!r}")
        task_vectors = transform(task_vectors, **args)
    float_base = {k: v for k, v in pool.base.items() if is_mergeable(v)}
    merged = fn(float_base, task_vectors, **hyperparameters)
    out: StateDict = {}
    for key, ref in pool.base.items():
        out[key] = merged[key].to(ref.dtype) if key in merged else ref.clone()
    check_finite(out, f"merge method {method!r} {dict(hyperparameters)} produced a merged state that")
    return out


#: runtime arguments of data-dependent methods: not hyper-parameters, never recorded
RUNTIME_ARGUMENTS = ("merge_data", "progress", "record")


def resolved_hyperparameters(fn: Callable, given: Mapping[str, Any]) -> dict[str, Any]:
    """``fn``'s keyword-only defaults updated with ``given`` (what the merge actually used), without
    runtime arguments (merge_data, progress, record) and values JSON cannot hold."""
    import json

    out: dict[str, Any] = {}
    params = inspect.signature(fn).parameters
    for name, p in params.items():
        if p.kind == p.KEYWORD_ONLY and name not in RUNTIME_ARGUMENTS:
            value = given[name] if name in given else p.default
            if value is inspect.Parameter.empty:
                continue
            try:
                json.dumps(value)
            except TypeError:
                value = repr(value)
            out[name] = value
    return out


def resolved_merge_parameters(
    method: str, params: Mapping[str, Any], transforms: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """``{"hyperparameters": {...}, "transforms": {name: {...}}}`` with every default filled in."""
    from simo_merge.merging import MERGE_METHODS, TV_TRANSFORMS

    return {
        "hyperparameters": resolved_hyperparameters(MERGE_METHODS.get(method), params),
        "transforms": {
            name: resolved_hyperparameters(TV_TRANSFORMS.get(name), args or {})
            for name, args in (transforms or {}).items()
        },
    }
