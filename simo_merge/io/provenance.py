"""Prove what a resumed run reuses: provenance (config key, role, content hash) inside the file itself.

:func:`simo_merge.io.checkpoint.save_state` writes a checkpoint's metadata into its own safetensors header,
in the same atomic rename as its tensors, with ``content_hash`` over those tensors. A cached stage is
reused only when every one of its files carries the expected ``key`` and ``role`` *and* its tensors
still hash to the recorded value; anything else (a file from another config, a half-finished stage, a
swapped or damaged file) is recomputed. A JSON sidecar left stale by a crash cannot mislead, since it is
not read. Reading a pool folder checks its files the same way (:func:`checked_state`) and stops at a
mismatch. The hash proves integrity, not origin: whoever can write the file can also re-hash it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simo_merge.io.checkpoint import CheckpointError, StateDict, header_meta, load_state, state_hash


def checked_state(path: str | os.PathLike, expect: Mapping[str, Any]) -> StateDict:
    """The tensors of ``path``; a :class:`CheckpointError` naming the file unless its own header records
    each ``expect`` entry (a None value: the entry is absent) and its tensors hash to its ``content_hash``."""
    meta = header_meta(path)
    for name, value in expect.items():
        if meta.get(name) != value:
            raise CheckpointError(f"{path}: its header records {name} {meta.get(name)!r}, expected {value!r}")
    if not meta.get("content_hash"):
        raise CheckpointError(f"{path}: no content hash in its header (not written by simo-merge)")
    state = load_state(path)
    if state_hash(state) != meta["content_hash"]:
        raise CheckpointError(
            f"{path}: its tensors do not match the content hash in its header (changed since written)"
        )
    return state


def verified_state(path: str | os.PathLike, key: str, role: str) -> StateDict | None:
    """The tensors of ``path`` if its own header records ``key``, ``role`` and its content hash; else None."""
    if not Path(path).is_file():
        return None
    try:
        return checked_state(path, {"key": key, "role": role})
    except CheckpointError:
        return None


def all_verified(files: Mapping[Path, str], key: str) -> bool:
    """True when every file of a stage (path -> role) verifies against ``key`` (:func:`verified_state`)."""
    return all(verified_state(path, key, role) is not None for path, role in files.items())
