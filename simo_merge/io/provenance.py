"""Prove what a resumed run reuses: provenance (config key, role, content hash) inside the file itself.

:func:`simo_merge.io.checkpoint.save_state` writes a checkpoint's metadata into its own safetensors header,
in the same atomic rename as its tensors, with ``content_hash`` over those tensors. A cached stage is
reused only when every one of its files carries the expected ``key`` *and* its tensors still hash to
the recorded value; anything else (a file from another config, a half-finished stage, a swapped or
damaged file) is recomputed. A JSON sidecar left stale by a crash cannot mislead, since it is not read.
"""

from __future__ import annotations

import os
from pathlib import Path

from simo_merge.io.checkpoint import CheckpointError, StateDict, header_meta, load_state, state_hash


def verified_state(path: str | os.PathLike, key: str) -> StateDict | None:
    """The tensors of ``path`` if its own header records ``key`` and its content hash; else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        meta = header_meta(path)
        if meta.get("key") != key or not meta.get("content_hash"):
            return None
        state = load_state(path)
    except CheckpointError:
        return None
    return state if state_hash(state) == meta["content_hash"] else None


def all_verified(paths: list[Path], key: str) -> bool:
    """True when every file of a stage verifies against ``key`` (see :func:`verified_state`)."""
    return all(verified_state(p, key) is not None for p in paths)
