"""Unlabelled (optionally labelled) inputs per task, as realignment and data-dependent merges read them.

Inputs are *read in batches* from a source, never stacked up front: a :class:`DatasetSource` reads the
items a sampler draws from a SIMO dataset (``{"image", task: target, f"{task}_mask"}`` items), a
:class:`TensorSource` indexes tensors already in memory. So a run over a whole test split holds one
batch of images at a time (plus the feature cache, which may live on disk). SIMO tasks sharing one
dataset share one source, hence one sampler and the same batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from simo_merge.features.cache import tensor_hash

IMAGE = "image"


def _as_index(idx: Tensor | Sequence[int]) -> Tensor:
    return idx if isinstance(idx, Tensor) else torch.as_tensor(list(idx), dtype=torch.long)


class InputSource:
    """Indexed inputs: ``len(source)`` items, ``read(idx)`` -> ``{key: stacked tensor}`` for those items."""

    keys: tuple[str, ...]

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, idx: Tensor | Sequence[int]) -> dict[str, Tensor]:
        raise NotImplementedError

    def images(self, idx: Tensor | Sequence[int]) -> Tensor:
        """The images of items ``idx`` (``[len(idx), C, H, W]``)."""
        return self.read(idx)[IMAGE]

    def fingerprint(self, pool: Tensor) -> str:
        """A deterministic content id for cache keys; ``pool`` are the indices a run samples from."""
        raise NotImplementedError


class TensorSource(InputSource):
    """Tensors already in memory (``"image"`` plus any label keys), indexed along their first dim."""

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        if IMAGE not in tensors:
            raise KeyError(f"TensorSource needs an {IMAGE!r} tensor, got keys {sorted(tensors)}")
        n = tensors[IMAGE].shape[0]
        bad = {k: v.shape[0] for k, v in tensors.items() if v.shape[0] != n}
        if bad:
            raise ValueError(f"TensorSource: {n} images but first dims {bad} for these keys")
        self.tensors = dict(tensors)
        self.keys = tuple(self.tensors)
        self._hash: str | None = None

    def __len__(self) -> int:
        return self.tensors[IMAGE].shape[0]

    def read(self, idx: Tensor | Sequence[int]) -> dict[str, Tensor]:
        idx = _as_index(idx)
        return {k: v[idx] for k, v in self.tensors.items()}

    def fingerprint(self, pool: Tensor) -> str:
        """The images' content hash (the whole tensor is in memory already; keys as before streaming)."""
        if self._hash is None:
            self._hash = tensor_hash(self.tensors[IMAGE])
        return self._hash


class DatasetSource(InputSource):
    """Items read lazily from a dataset (``dataset[i]`` a dict); only ``keys`` are kept from each item.

    ``indices`` (optional) restricts the source to those items of ``dataset``, in that order: item ``i``
    of the source is ``dataset[indices[i]]`` (a seeded subset, read only when drawn)."""

    def __init__(
        self, dataset: Any, keys: Sequence[str] = (IMAGE,), indices: Tensor | Sequence[int] | None = None
    ) -> None:
        self.dataset = dataset
        self.keys = tuple(dict.fromkeys([IMAGE, *keys]))
        self.indices = None if indices is None else _as_index(indices)

    def __len__(self) -> int:
        return len(self.dataset) if self.indices is None else len(self.indices)

    def read(self, idx: Tensor | Sequence[int]) -> dict[str, Tensor]:
        idx = _as_index(idx)
        if self.indices is not None:
            idx = self.indices[idx]
        items = [self.dataset[int(i)] for i in idx]
        return {k: torch.stack([item[k] for item in items]) for k in self.keys if k in items[0]}

    def fingerprint(self, pool: Tensor) -> str:
        """The dataset's own ``fingerprint()`` if it has one; else its class, length and the content of
        the first and last sampled item (read anyway), so no unsampled item is read for a cache key;
        plus the subset's indices when there are some."""
        own = getattr(self.dataset, "fingerprint", None)
        h = hashlib.sha256(f"{type(self.dataset).__qualname__}|{len(self)}".encode())
        if self.indices is not None:
            h.update(f"{len(self.dataset)}|".encode() + self.indices.numpy().tobytes())
        if callable(own):
            h.update(str(own()).encode())
        else:
            ends = pool[[0, -1]] if len(pool) else pool
            h.update(tensor_hash(self.images(ends)).encode())
        return h.hexdigest()[:16]


class RealignInputs:
    """Per-task input sources (SIMO: one source shared by every task) and, for ``supervised``, labels.

    Build it from datasets (:func:`dataset_inputs`, :func:`split_inputs`, or ``sources=``) to stream, or
    from tensors already in memory, ``RealignInputs(images={task: [N, C, H, W]}, labels=..., name=...)``,
    which wraps them (tasks given the same tensor share one source). ``labels[task]`` maps batch keys
    (``task``, ``f"{task}_mask"``) to tensors indexed like the images. ``label_keys[task]`` names the keys
    of a source's items that are ``task``'s labels. ``name`` identifies the input set in cache keys.
    """

    def __init__(
        self,
        images: Mapping[str, Tensor] | None = None,
        labels: Mapping[str, Mapping[str, Tensor]] | None = None,
        name: str = "inputs",
        *,
        sources: Mapping[str, InputSource] | None = None,
        label_keys: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if (images is None) == (sources is None):
            raise ValueError("RealignInputs: give exactly one of images= (tensors) or sources= (datasets)")
        self.name = name
        self.label_keys: dict[str, tuple[str, ...]] = {t: tuple(k) for t, k in (label_keys or {}).items()}
        if sources is not None:
            if labels:
                raise ValueError("RealignInputs: with sources=, labels come from the items (label_keys=)")
            self.sources = dict(sources)
        else:
            self.sources = self._wrap(dict(images), dict(labels or {}))
        missing = {t: k for t, ks in self.label_keys.items() for k in ks if k not in self.sources[t].keys}
        if missing:
            raise KeyError(f"RealignInputs {name!r}: label keys {missing} are not read by the task's source")

    def _wrap(self, images: dict[str, Tensor], labels: dict[str, Mapping[str, Tensor]]) -> dict:
        extra = sorted(set(labels) - set(images))
        if extra:
            raise KeyError(f"RealignInputs {self.name!r}: labels for task(s) {extra} without images")
        by_tensor: dict[int, dict[str, Tensor]] = {}
        for task, x in images.items():
            tensors = by_tensor.setdefault(id(x), {IMAGE: x})
            tensors.update(labels.get(task, {}))
            self.label_keys[task] = tuple(labels.get(task, {}))
        wrapped = {key: TensorSource(tensors) for key, tensors in by_tensor.items()}
        return {task: wrapped[id(x)] for task, x in images.items()}

    @property
    def tasks(self) -> list[str]:
        return list(self.sources)

    def has_labels(self, task: str) -> bool:
        return bool(self.label_keys.get(task))

    def num_inputs(self, task: str) -> int:
        return len(self.sources[task])

    def read(self, task: str, idx: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """Items ``idx`` of ``task``'s source: ``{"image": ..., label keys: ...}``."""
        return self.sources[task].read(idx)


def _augmented(dataset: Any) -> bool:
    """Whether reading an item twice may give two different images (a training-time transform)."""
    return bool(getattr(getattr(dataset, "transform", None), "train", False))


def split_inputs(splits: list[tuple[Any, list[str]]], name: str, with_labels: bool = False) -> RealignInputs:
    """Each task's inputs from its own data set (SIMO tasks sharing one data set share one source)."""
    sources: dict[str, InputSource] = {}
    label_keys: dict[str, tuple[str, ...]] = {}
    for dataset, tasks in splits:
        part = dataset_inputs(dataset, tasks, name, with_labels)
        sources.update(part.sources)
        label_keys.update(part.label_keys)
    return RealignInputs(name=name, sources=sources, label_keys=label_keys)


def dataset_inputs(dataset: Any, tasks: list[str], name: str, with_labels: bool = False) -> RealignInputs:
    """One source over a SIMO dataset split, shared by every task (+ label keys if asked); items are read
    when sampled. An augmented dataset (its transform draws at each read) is read once and held in memory
    instead, so that cached expert features and the adapters see the same images."""
    label_keys = {t: (t, f"{t}_mask") for t in tasks} if with_labels else {}
    keys = [IMAGE, *(k for pair in label_keys.values() for k in pair)]  # masks only where items have them
    source: InputSource = DatasetSource(dataset, keys)
    if _augmented(dataset):
        source = TensorSource(source.read(torch.arange(len(source))))
        label_keys = {t: tuple(k for k in ks if k in source.keys) for t, ks in label_keys.items()}
    return RealignInputs(name=name, sources={t: source for t in tasks}, label_keys=label_keys)


def seeded_subset(n: int, limit: int | None, seed: int) -> Tensor:
    """Sorted indices of a seeded subset of at most ``limit`` of ``n`` items (all of them when None)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:limit].sort().values
