"""One entry point for every merge: validate hyper-parameters, apply transforms, restore dtypes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from simo_merge.finite import check_finite
from simo_merge.merging._hyperparams import check_values
from simo_merge.merging._layers import block_of
from simo_merge.pool.expert_pool import ExpertPool, is_mergeable
from simo_merge.runtime import current_device

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
    device: str | torch.device | None = None,
    **hyperparameters: Any,
) -> StateDict:
    """Merge ``pool``'s experts (or ``tasks`` of them) with the registered ``method``.

    ``transforms`` maps a task-vector transform name (e.g. ``"dare"``) to its arguments; they are applied
    in order before the method. Float entries come back on the CPU, in θ0's dtype; non-float entries are
    θ0's. ``device`` (default: the started runtime's device, else the CPU): methods registered ``keywise``
    (a key's result reads only that key's tensors) run there one key group at a time
    (:func:`merge_in_groups`); the others, and every merge on the CPU, run over the whole state as before.
    A method that takes its own ``device=`` (its ``device`` fact: the SVD merges) is given it too.
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
    device = torch.device(device) if device is not None else current_device()
    if MERGE_METHODS.facts(method)["device"] and device.type != "cpu":
        hyperparameters.setdefault("device", str(device))
    if device.type != "cpu" and MERGE_METHODS.facts(method).get("keywise", False):
        merged = merge_in_groups(fn, float_base, task_vectors, device, hyperparameters)
    else:
        merged = fn(float_base, task_vectors, **hyperparameters)
    out: StateDict = {}
    for key, ref in pool.base.items():
        out[key] = merged[key].to(ref.dtype) if key in merged else ref.clone()
    check_finite(out, f"merge method {method!r} {dict(hyperparameters)} produced a merged state that")
    return out


class KeysOnDevice(Mapping[str, Tensor]):
    """``task_vector`` restricted to ``keys``, each tensor moved to ``device`` when read (nothing kept)."""

    def __init__(self, task_vector: Mapping[str, Tensor], keys: list[str], device: torch.device) -> None:
        self.task_vector, self.keys_, self.device = task_vector, keys, device

    def __getitem__(self, key: str) -> Tensor:
        if key not in self.keys_:
            raise KeyError(key)
        return self.task_vector[key].to(self.device)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def key_groups(keys: list[str]) -> list[list[str]]:
    """Keys grouped by transformer block (:func:`~simo_merge.merging._layers.block_of`), then one group of
    every key outside the blocks (embeddings, final norm, projection)."""
    groups: dict[int | None, list[str]] = {}
    for key in keys:
        groups.setdefault(block_of(key), []).append(key)
    return [groups[b] for b in sorted(groups, key=lambda b: (b is None, b or 0))]


def merge_in_groups(
    fn: Callable,
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    device: torch.device,
    hyperparameters: Mapping[str, Any],
) -> StateDict:
    """``fn`` (a keywise method) on ``device`` one key group at a time: θ0's and the task vectors' tensors
    of one group go there (read lazily by the method), its merged tensors come back to the CPU before the
    next group, so the device never holds more than one group of the pool (plus the method's work)."""
    merged: StateDict = {}
    for keys in key_groups(list(base)):
        part = fn(
            {k: base[k].to(device) for k in keys},
            {t: KeysOnDevice(tv, keys, device) for t, tv in task_vectors.items()},
            **hyperparameters,
        )
        merged.update({k: v.cpu() for k, v in part.items()})
        del part
    return merged


def resolved_hyperparameters(fn: Callable, given: Mapping[str, Any]) -> dict[str, Any]:
    """``fn``'s keyword-only defaults updated with ``given`` (what the merge actually used), without
    runtime arguments (:data:`~simo_merge.merging.SIGNATURE_FACTS`' merge_data, progress, record, device:
    not hyper-parameters, never recorded) and values JSON cannot hold."""
    import json

    from simo_merge.merging import SIGNATURE_FACTS

    out: dict[str, Any] = {}
    params = inspect.signature(fn).parameters
    for name, p in params.items():
        if p.kind == p.KEYWORD_ONLY and name not in SIGNATURE_FACTS.values():
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
