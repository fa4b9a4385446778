"""Checkpoint I/O: safetensors + JSON sidecar, safe loading of .pt/.pth/.bin files.

A checkpoint ``merged.safetensors`` has a sidecar ``merged.json`` with what produced it (method,
hyper-parameters, tasks, source files, package version). Pickle-based files are read with
``torch.load(weights_only=True)``; files that store pickled objects (whole ``nn.Module``s) load only when
the caller passes ``allow_pickle=True``, and then only through :mod:`simo_merge.io.unpickler`'s allow-list.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from simo_merge import __version__
from simo_merge.io.atomic import atomic_path, write_json
from simo_merge.io.unpickler import (
    StandIn,
    UnsafePickleError,
    module_tree_state,
    refuse_torchscript,
    restricted_torch_load,
)

StateDict = dict[str, Tensor]
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
HEADER_KEY = "simo_merge"  # safetensors header entry holding the checkpoint's metadata (JSON)


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read or does not hold what was expected."""


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_state(
    path: str | os.PathLike,
    state: Mapping[str, Tensor],
    meta: Mapping[str, Any] | None = None,
    publish: bool = True,
) -> Path:
    """Write ``state`` as safetensors and ``meta`` (+ package version, time) as a JSON sidecar, atomically
    (``publish=False``: the caller is not the writing rank; see :func:`~simo_merge.io.atomic.atomic_path`)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: checkpoints are written as .safetensors")
    # safetensors refuses shared/non-contiguous storage: give every tensor its own contiguous copy
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    sidecar = {
        "format": "simo_merge.state/1",
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "num_tensors": len(tensors),
        "content_hash": state_hash(tensors),
        **(dict(meta) if meta else {}),
    }
    # the metadata travels inside the file (one atomic rename); the JSON sidecar is a readable copy
    with atomic_path(path, publish) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(sidecar, default=str)})
    write_json(sidecar_path(path), sidecar, publish)
    return path


def header_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata :func:`save_state` stored inside a safetensors file's header ({} when none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(HEADER_KEY)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: header metadata is not valid JSON ({err})") from err
    return meta if isinstance(meta, dict) and "format" in meta else {}


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of checkpoint ``path``: its header's copy when it has one (written in the same
    atomic rename as the tensors, so it always describes them), else the JSON sidecar ({} if none)."""
    if Path(path).suffix == ".safetensors" and Path(path).is_file():
        meta = header_meta(path)
        if meta:
            return meta
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{side}: sidecar is not valid JSON ({err})") from err


def _extract_state(obj: Any, path: Path) -> StateDict:
    """Find the tensor dict inside a loaded object: a state dict, {"state_dict": ...}, or a module."""
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if key in obj:
                return _extract_state(obj[key], path)
    elif isinstance(obj, StandIn):  # a pickled module read by the restricted unpickler
        state = module_tree_state(obj)
        if state:
            return state
        raise CheckpointError(f"{path}: the pickled {obj.pickled_class} holds no tensors")
    raise CheckpointError(f"{path}: no tensor state dict found (top-level type {type(obj).__name__})")


def load_state(path: str | os.PathLike, allow_pickle: bool = False) -> StateDict:
    """Load a tensor state dict from .safetensors or a torch pickle (.pt/.pth/.bin/.ckpt).

    ``allow_pickle=True`` also reads files that store whole modules, through the restricted unpickler
    of :mod:`simo_merge.io.unpickler` (no pickled code runs; module classes become stand-ins).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if path.suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: unknown checkpoint suffix {path.suffix!r}")
    try:
        refuse_torchscript(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except UnsafePickleError as err:
        raise CheckpointError(str(err)) from err
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
            reason = found.group(1).strip() if found else ""
            raise CheckpointError(
                f"{path}: cannot be read with weights_only=True ({reason or 'not a tensor-only pickle'}). "
                "If it stores Python objects (e.g. a pickled module), pass allow_pickle=True (CLI: "
                "allow_pickle=true) to read it with the restricted unpickler (no pickled code runs)"
            ) from err
        try:
            obj = restricted_torch_load(path)
        except UnsafePickleError as err2:
            raise CheckpointError(str(err2)) from err2
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from err
    state = _extract_state(obj, path)
    _refuse_expanded_views(state, path)
    return state


def _refuse_expanded_views(state: Mapping[str, Tensor], path: Path) -> None:
    """A pickled tensor may be a view with more elements than its file stores (stride 0: a 2.8 MB file
    can describe a 40 GB tensor); the first operation that materialises it would allocate all of that.
    Refused before any use, naming the key."""
    for key, t in state.items():
        stored = t.untyped_storage().nbytes() // max(t.element_size(), 1)
        if t.numel() > stored:
            raise CheckpointError(
                f"{path}: key {key!r} of shape {tuple(t.shape)} (stride {t.stride()}) is a view of only "
                f"{stored} stored value(s); expanded views are not loaded"
            )


def state_hash(state: Mapping[str, Tensor]) -> str:
    """A short content hash of a state dict (keys, dtypes, shapes and values), for cache keys."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
