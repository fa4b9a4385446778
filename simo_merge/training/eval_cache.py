"""Evaluations reused across runs: metrics of an unchanged model on unchanged data are computed once.

A result is stored as JSON named by a hash of everything it depends on (the caller passes those
*parts*: content hashes of the encoder state and heads, the evaluation data config and split, seed,
metric units, ...); the parts are stored beside the result and compared on reuse, so any change
recomputes. Files are written atomically. ``cache_dir=None`` disables reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from simo_merge.io.atomic import write_json
from simo_merge.io.checkpoint import state_hash
from simo_merge.runtime import current, on_rank_zero

#: Bump when what an evaluation returns changes meaning (v2: every rate in %).
EVALUATION_VERSION = 2


def module_hash(module: nn.Module) -> str:
    """Content hash of a module's state (parameters and buffers), e.g. a frozen head."""
    return state_hash(module.state_dict())


def _normalised(parts: dict[str, Any]) -> Any:
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def _read(path: Path) -> Any:
    """The JSON stored at ``path``; None when absent or unreadable (then recomputed and overwritten)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class EvaluationCache:
    """``get(parts, compute)``: the stored result for ``parts``, or ``compute()`` stored under them."""

    def __init__(self, cache_dir: str | os.PathLike | None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.hits = 0
        self.misses = 0

    def get(self, parts: dict[str, Any], compute: Callable[[], Any]) -> Any:
        parts = _normalised({**parts, "version": EVALUATION_VERSION})
        if self.cache_dir is None:
            self.misses += 1
            return compute()
        key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
        path = self.cache_dir / f"{key}.json"
        stored = _read(path)
        valid = isinstance(stored, dict) and stored.get("parts") == parts
        # decided by all ranks together: ``compute`` is collective (metric sync), no rank may skip it alone
        if current().everywhere(valid):
            self.hits += 1
            return stored["result"]
        self.misses += 1
        result = compute()
        write_json(path, {"parts": parts, "result": result}, on_rank_zero())
        return result
