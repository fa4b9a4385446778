"""Feature cache: features of a frozen encoder on the sampled inputs, computed once and reused.

Experts never change during realignment, so their features (every block, taps, final features, or
head outputs) are computed once per input; so are the merged encoder's features wherever no adapter
acts before them (Surgery, taps, heads). :meth:`FeatureCache.table` holds the features of only the inputs
a run samples from (its sampler's pool), computed batch by batch from a source that reads those inputs.
A table lives in memory while the cache's tables stay under ``max_memory_mb``; a larger one is written
to disk (``cache_dir``, else a temporary folder) and read back a batch of rows at a time
(:mod:`simo_merge.features.disk_rows`). With ``cache_dir`` every entry is also kept on disk as
safetensors named by a deterministic key (inputs name, input fingerprint, checkpoint hash, sites, and a
hash of the sampled indices when they are not all the inputs), written atomically.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from simo_merge.features.disk_rows import DiskRows, write_rows
from simo_merge.features.sites import Site, site_name
from simo_merge.io.checkpoint import load_state, save_state
from simo_merge.runtime import current, on_rank_zero

Features = dict[Site, Tensor]


def _to_name(site: Site) -> str:
    return site if isinstance(site, str) else site_name(site)


def _from_name(name: str) -> Site:
    return int(name[5:]) if re.fullmatch(r"block\d+", name) else name


def tensor_hash(t: Tensor) -> str:
    """A content hash of one tensor (e.g. the input images), for cache keys."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_in_batches(fn: Callable[[Tensor], Features], inputs: Tensor, batch_size: int = 64) -> Features:
    """Run ``fn`` over ``inputs`` in batches and concatenate each returned site."""
    parts: dict[Site, list[Tensor]] = {}
    for start in range(0, inputs.shape[0], batch_size):
        for site, value in fn(inputs[start : start + batch_size]).items():
            parts.setdefault(site, []).append(value.detach())
    return {site: torch.cat(values) for site, values in parts.items()}


def stored(value: Tensor) -> Tensor:
    """How a cache keeps a feature: detached, on the CPU, floats in fp32 (a no-op for CPU fp32 features).

    fp32 whatever the forward's precision: the losses read targets in fp32 anyway, one file format serves
    every precision (a bf16 copy would add a second rounding to the autocast's), and the CPU keeps the
    accelerator's memory for the model; each batch moves its rows to the device when it reads them."""
    value = value.detach()
    return value.to("cpu", torch.float32) if value.is_floating_point() else value.cpu()


def index_hash(indices: Tensor) -> str:
    """A short hash of a set of input indices (a sampler's pool), for cache keys of partial tables."""
    return tensor_hash(indices.to(torch.int64))[:12]


class FeatureTable:
    """Features of the inputs ``indices`` (sorted); :meth:`rows` returns them for any of those inputs."""

    def __init__(self, indices: Tensor, store: Features | DiskRows) -> None:
        self.indices = indices
        self.store = store

    @property
    def on_disk(self) -> bool:
        return isinstance(self.store, DiskRows)

    def rows(self, idx: Tensor) -> Features:
        """The features of inputs ``idx`` (dataset indices, each one of the table's)."""
        pos = torch.searchsorted(self.indices, idx).clamp(max=max(0, len(self.indices) - 1))
        if len(self.indices) == 0 or not torch.equal(self.indices[pos], idx):
            absent = sorted(set(idx.tolist()) - set(self.indices.tolist()))
            raise KeyError(f"feature table: inputs {absent[:8]} were not sampled, so they are not cached")
        if self.on_disk:
            return {_from_name(k): v for k, v in self.store.rows(pos).items()}
        return {site: value[pos] for site, value in self.store.items()}


class FeatureCache:
    """``get(key, compute)`` returns cached features or computes, stores and returns them."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, max_memory_mb: float = 2048.0) -> None:
        if not max_memory_mb >= 0:
            raise ValueError(f"FeatureCache: max_memory_mb must be >= 0, got {max_memory_mb}")
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_memory_bytes = int(max_memory_mb * 2**20)
        self._memory: dict[str, Features] = {}
        self._tables: dict[str, FeatureTable] = {}
        self._spill: tempfile.TemporaryDirectory | None = None
        self.memory_bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str, compute: Callable[[], Features]) -> Features:
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        path = self.cache_dir / f"{key}.safetensors" if self.cache_dir else None
        if path is not None and path.is_file():
            self.hits += 1
            feats = {_from_name(k): v for k, v in load_state(path).items()}
        else:
            self.misses += 1
            feats = compute()
            if path is not None:
                save_state(path, {_to_name(s): v for s, v in feats.items()}, {"key": key}, on_rank_zero())
        self._memory[key] = feats
        return feats

    def _disk_path(self, key: str) -> Path:
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            return self.cache_dir / f"{key}.safetensors"
        if self._spill is None:  # removed with the cache object
            self._spill = tempfile.TemporaryDirectory(prefix="simo_merge-features-")
        return Path(self._spill.name) / f"{key}.safetensors"

    def _fits(self, nbytes: int) -> bool:
        return self.memory_bytes + nbytes <= self.max_memory_bytes

    def _keep(self, key: str, table: FeatureTable) -> FeatureTable:
        if not table.on_disk:
            self.memory_bytes += sum(v.numel() * v.element_size() for v in table.store.values())
        self._tables[key] = table
        return table

    def table(
        self,
        key: str,
        indices: Tensor,
        compute: Callable[[Tensor], Features],
        batch_size: int = 64,
    ) -> FeatureTable:
        """The features ``compute(batch_indices)`` gives for ``indices`` (sorted input indices), computed
        once in batches of ``batch_size`` and cached under ``key``; in memory if the cache stays under
        ``max_memory_mb``, else on disk and read back by rows."""
        if key in self._tables:
            self.hits += 1
            return self._tables[key]
        path = self._disk_path(key) if self.cache_dir is not None else None
        # collective under several processes: a file only some ranks see (no shared disk) is recomputed
        if current().everywhere(path is not None and path.is_file()):
            self.hits += 1
            rows = DiskRows(path)
            if self._fits(rows.nbytes):
                return self._keep(
                    key, FeatureTable(indices, {_from_name(k): v for k, v in load_state(path).items()})
                )
            return self._keep(key, FeatureTable(indices, rows))
        self.misses += 1
        stream = self._stream(indices, compute, batch_size)
        first = next(stream)
        row_bytes = sum(v[0].numel() * v.element_size() for v in first.values())
        if self._fits(row_bytes * len(indices)):
            parts: dict[Site, list[Tensor]] = {s: [v] for s, v in first.items()}
            for batch in stream:
                for site, value in batch.items():
                    parts[site].append(value)
            feats = {site: torch.cat(values) for site, values in parts.items()}
            if path is not None:
                save_state(path, {_to_name(s): v for s, v in feats.items()}, {"key": key}, on_rank_zero())
            return self._keep(key, FeatureTable(indices, feats))
        named = ({_to_name(s): v for s, v in b.items()} for b in itertools.chain([first], stream))
        path = write_rows(self._disk_path(key), len(indices), named, {"key": key})
        path = current().broadcast(str(path), 0)  # rank 0 wrote it (other ranks' writes are discarded)
        return self._keep(key, FeatureTable(indices, DiskRows(path)))

    @staticmethod
    def _stream(
        indices: Tensor, compute: Callable[[Tensor], Features], batch_size: int
    ) -> Iterator[Features]:
        """``compute`` over ``indices`` in batches, as stored (:func:`stored`). Under several processes
        batch ``k`` is computed by rank ``k % world`` alone and broadcast, so every rank gets every batch,
        each computed on exactly the rows (hence with exactly the numbers) of a one-process run; every rank
        must then call :meth:`FeatureCache.table` in the same order (it is collective)."""
        runtime = current()
        world, rank = runtime.world_size, runtime.rank
        for k, start in enumerate(range(0, len(indices), batch_size)):
            feats = None
            if k % world == rank:
                with torch.no_grad():
                    feats = {s: stored(v) for s, v in compute(indices[start : start + batch_size]).items()}
            yield runtime.broadcast(feats, k % world)
