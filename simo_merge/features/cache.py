"""Feature cache: features of a frozen encoder on a fixed input set, computed once and reused.

Experts never change during realignment, so their features (every block, taps, final features, or
head outputs) are computed once per input; so are the merged encoder's features wherever no adapter
acts before them (Surgery, taps, heads). Entries live in memory and, with ``cache_dir``, on disk as
safetensors named by a key of (inputs name, input hash, checkpoint hash, sites), written atomically.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from simo_merge.checkpoint import load_state, save_state
from simo_merge.features.sites import Site, site_name

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


class FeatureCache:
    """``get(key, compute)`` returns cached features or computes, stores and returns them."""

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, Features] = {}
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
                save_state(path, {_to_name(s): v for s, v in feats.items()}, {"key": key})
        self._memory[key] = feats
        return feats
