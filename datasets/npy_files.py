"""Folders of ``<index>.npy`` arrays (the MTAN-style preprocessed layout): listing, checking, reading and
validating one image / label / scalar map, with the file's path in every error. Shared by the NYUv2 and
Cityscapes npy loaders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simo_merge.tasks import IGNORE_INDEX

_INT_STEM = re.compile(r"^(\d+)\.npy$")


def list_npy_indices(folder: Path) -> list[int]:
    """Sorted integer stems of ``<i>.npy`` files in ``folder`` (FileNotFoundError if missing or empty)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    indices = sorted(int(m.group(1)) for name in os.listdir(folder) if (m := _INT_STEM.match(name)))
    if not indices:
        raise FileNotFoundError(f"no <index>.npy files in {folder}")
    return indices


def check_npy_files(root: Path, folders: Sequence[str], indices: Sequence[int]) -> None:
    """Raise FileNotFoundError naming the first missing ``root/<folder>/<i>.npy``."""
    for folder in folders:
        d = root / folder
        if not d.is_dir():
            raise FileNotFoundError(f"folder not found: {d}")
        present = set(os.listdir(d))
        missing = [i for i in indices if f"{i}.npy" not in present]
        if missing:
            raise FileNotFoundError(f"missing {len(missing)} file(s) in {d}, e.g. {d / f'{missing[0]}.npy'}")


def load_npy(path: Path) -> np.ndarray:
    """``np.load`` with the path in the error message."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read {path}: {exc}") from exc


def npy_image(arr: np.ndarray, path: Path) -> np.ndarray:
    """HxWx3 image in [0, 1] (uint8 scaled, float checked)."""
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{path}: image must be HxWx3, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)) or arr.min() < -1e-3 or arr.max() > 1.0 + 1e-3:
        raise ValueError(f"{path}: image values must be finite and in [0, 1], got {arr.min()}..{arr.max()}")
    return np.clip(arr, 0.0, 1.0)


def npy_label(arr: np.ndarray, path: Path, hw: tuple[int, int], num_classes: int) -> np.ndarray:
    """HxW label with -1 = ignore mapped to 255; any other value outside 0..num_classes-1 is an error."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.shape != hw:
        raise ValueError(f"{path}: label must have shape {hw}, got {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"{path}: label holds non-integer values")
    lab = arr.astype(np.int64)
    bad = (lab != -1) & ((lab < 0) | (lab >= num_classes))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: label {lab[r, c]} at (row {r}, col {c}) outside 0..{num_classes - 1} (and -1 = ignore)"
        )
    return np.where(lab == -1, IGNORE_INDEX, lab)


def npy_scalar_map(
    arr: np.ndarray, path: Path, hw: tuple[int, int], what: str
) -> tuple[np.ndarray, np.ndarray]:
    """HxW (or HxWx1) float map and its mask (finite and > 0; 0 marks invalid pixels)."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.shape != hw:
        raise ValueError(f"{path}: {what} must have shape {hw} or {hw + (1,)}, got {arr.shape}")
    arr = arr.astype(np.float32)
    mask = np.isfinite(arr) & (arr > 0)
    return np.where(mask, arr, 0.0).astype(np.float32), mask
