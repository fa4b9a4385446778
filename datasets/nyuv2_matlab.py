"""Reading NYU Depth v2's MATLAB files: the labeled frames' layout, ``splits.mat``, the class mappings, the
raw-label encoding and an optional file of precomputed normals.

The facts these follow (axis order of the v7.3 arrays, 1-based frame numbers, the 894 -> 40 -> 13 class
maps, the toolbox's border crop) are listed in :mod:`simo_merge.datasets.nyuv2`, whose ``nyuv2_mat`` loader
uses them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simo_merge.datasets._geometry import NYUV2_RGB_SIZE
from simo_merge.tasks import IGNORE_INDEX

NYU_NUM_RAW_CLASSES = 894
#: Valid region of the labeled frames (toolbox ``get_projection_mask``), as 0-based half-open slices.
NYU_BORDER_CROP = (slice(44, 471), slice(40, 601))


def require_file(path: Path, what: str) -> Path:
    """``path``, or FileNotFoundError naming ``what`` and the path."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _loadmat(path: Path) -> dict[str, Any]:
    """Variables of a ``.mat`` file: scipy for v5 files, h5py (plain numeric arrays only) for v7.3 / HDF5."""
    import h5py
    import scipy.io

    try:
        if h5py.is_hdf5(path):  # MATLAB v7.3: arrays stored column-major, so reverse the axes
            with h5py.File(path, "r") as f:
                return {k: np.asarray(v).T for k, v in f.items() if isinstance(v, h5py.Dataset)}
        return scipy.io.loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read MATLAB file {path}: {exc}") from exc


def _int_vector(value: Any, path: Path, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        raise ValueError(f"{path}: variable {name!r} is not a numeric vector (dtype {arr.dtype})")
    arr = arr.reshape(-1)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"{path}: variable {name!r} holds non-integer values")
    return arr.astype(np.int64)


def load_nyu_splits(path: str | os.PathLike, num_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """0-based ``(train, test)`` frame indices from ``splits.mat`` (``trainNdxs`` / ``testNdxs``, 1-based)."""
    path = require_file(Path(path), "NYUv2 split file")
    mat = _loadmat(path)
    out = []
    for name in ("trainNdxs", "testNdxs"):
        if name not in mat:
            raise KeyError(
                f"{path}: no variable {name!r}; variables: {sorted(k for k in mat if k[:2] != '__')}"
            )
        idx = _int_vector(mat[name], path, name)
        hi = num_frames if num_frames is not None else np.iinfo(np.int64).max
        bad = idx[(idx < 1) | (idx > hi)]
        if bad.size:
            raise ValueError(f"{path}: {name} holds {bad[0]}, outside the 1-based range 1..{hi}")
        out.append(idx - 1)
    if np.intersect1d(out[0], out[1]).size:
        raise ValueError(f"{path}: trainNdxs and testNdxs overlap")
    return out[0], out[1]


def load_class_mapping_40(path: str | os.PathLike) -> np.ndarray:
    """894 entries: the 40-class id (1..40) of each raw class 1..894 (``mapClass`` in classMapping40.mat)."""
    path = require_file(Path(path), "NYUv2 40-class mapping")
    mat = _loadmat(path)
    if "mapClass" not in mat:
        raise KeyError(
            f"{path}: no variable 'mapClass'; variables: {sorted(k for k in mat if k[:2] != '__')}"
        )
    m = _int_vector(mat["mapClass"], path, "mapClass")
    if m.size != NYU_NUM_RAW_CLASSES:
        raise ValueError(f"{path}: mapClass has {m.size} entries, expected {NYU_NUM_RAW_CLASSES}")
    if m.min() < 1 or m.max() > 40:
        raise ValueError(f"{path}: mapClass values must be in 1..40, got {m.min()}..{m.max()}")
    return m


def load_class_mapping_13(path: str | os.PathLike) -> np.ndarray:
    """13-class ids (1..13) indexed by 40-class id - 1 (40 entries) or by raw class - 1 (894 entries).

    Reads the struct ``classMapping13`` (its first numeric field with 40 or 894 entries) or, failing that, a
    variable ``mapClass``.
    """
    path = require_file(Path(path), "NYUv2 13-class mapping")
    mat = _loadmat(path)
    candidates: list[tuple[str, Any]] = []
    if "classMapping13" in mat:
        s = np.asarray(mat["classMapping13"])
        if s.dtype.names:
            rec = s.reshape(-1)[0]
            candidates += [(f"classMapping13.{n}", rec[n]) for n in s.dtype.names]
        else:
            candidates.append(("classMapping13", s))
    if "mapClass" in mat:
        candidates.append(("mapClass", mat["mapClass"]))
    for name, value in candidates:
        arr = np.asarray(value)
        if arr.dtype.kind in "iuf" and arr.size in (40, NYU_NUM_RAW_CLASSES):
            m = _int_vector(arr, path, name)
            if m.min() < 1 or m.max() > 13:
                raise ValueError(f"{path}: {name} values must be in 1..13, got {m.min()}..{m.max()}")
            return m
    raise ValueError(
        f"{path}: found no 40- or 894-entry 13-class map (looked at classMapping13 fields and mapClass)"
    )


def build_label_lut(num_classes: int, map40: np.ndarray, map13: np.ndarray | None = None) -> np.ndarray:
    """uint8 lookup (895 entries) from raw label ids 0..894 to 0-based classes, 0 (unlabelled) -> 255."""
    lut40 = np.concatenate([[0], map40]).astype(np.int64)
    if num_classes == 40:
        lut = lut40
    elif num_classes == 13:
        if map13 is None:
            raise ValueError("num_classes=13 needs the 13-class mapping")
        if map13.size == 40:
            lut = np.concatenate([[0], map13])[lut40]
        else:
            lut = np.concatenate([[0], map13])
    else:
        raise ValueError(f"num_classes must be 13 or 40, got {num_classes}")
    return np.where(lut == 0, IGNORE_INDEX, lut - 1).astype(np.uint8)


def encode_labels(raw: np.ndarray, lut: np.ndarray, where: str) -> np.ndarray:
    """0-based class ids (int64, 255 = unlabelled) of raw label ids 0..894 through ``lut``
    (:func:`build_label_lut`); ValueError at ``where`` naming the first id outside that range."""
    bad = (raw < 0) | (raw > NYU_NUM_RAW_CLASSES)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"{where} holds {raw[r, c]} at (row {r}, col {c}); raw ids must be in 0..{NYU_NUM_RAW_CLASSES}"
        )
    return lut[raw].astype(np.int64)


def load_label_lut(num_classes: int, mapping40_file: Path, mapping13_file: Path) -> np.ndarray:
    """The raw-id -> class lookup of :func:`build_label_lut`, read from the mapping files
    (the 13-class one only for ``num_classes=13``)."""
    map40 = load_class_mapping_40(mapping40_file)
    map13 = load_class_mapping_13(mapping13_file) if num_classes == 13 else None
    return build_label_lut(num_classes, map40, map13)


def read_labeled_layout(mat_file: Path, needed: Sequence[str]) -> tuple[int, tuple[int, int]]:
    """``(frames, (height, width))`` of ``nyu_depth_v2_labeled.mat``, after checking that every dataset in
    ``needed`` (``images`` first) exists with the frames' shape (h5py sees (N, 3, W, H) / (N, W, H))."""
    import h5py

    try:
        f = h5py.File(mat_file, "r")
    except OSError as exc:
        raise ValueError(f"{mat_file}: not an HDF5 / MATLAB v7.3 file ({exc})") from exc
    with f:
        for key in needed:
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise KeyError(f"{mat_file}: no dataset {key!r}; keys: {sorted(f.keys())}")
        shape = f["images"].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{mat_file}: 'images' must be (N, 3, W, H) as h5py reads it, got {shape}")
        num, width, height = shape[0], shape[2], shape[3]
        for key in needed[1:]:
            if f[key].shape != (num, width, height):
                raise ValueError(
                    f"{mat_file}: {key!r} has shape {f[key].shape}, expected {(num, width, height)}"
                )
    return num, (height, width)


def check_normal_signs(normal_signs: Sequence[float]) -> np.ndarray:
    """``normal_signs`` as a float32 array; ValueError unless it is three values of +1 or -1."""
    if len(normal_signs) != 3 or any(v not in (1, -1) for v in normal_signs):
        raise ValueError(f"normal_signs must be three values of +1 or -1, got {normal_signs!r}")
    return np.asarray(normal_signs, dtype=np.float32)


class NormalsFile:
    """Precomputed normals of all labeled frames: a ``.npy`` array (N, H, W, 3) or an HDF5 / MATLAB v7.3
    variable ``key`` (h5py sees (N, 3, W, H)), opened lazily once per process (never pickled)."""

    def __init__(self, path: Path, key: str, signs: np.ndarray, crop_border: bool) -> None:
        self.path = path
        self.key = key
        self.signs = signs
        self.crop_border = crop_border
        self._array: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"], state["_pid"] = None, None  # h5py handles cannot be pickled
        return state

    def source(self) -> Any:
        """The normals array: a memory-mapped ``.npy`` or an h5py dataset, opened in this process."""
        if self._array is None or self._pid != os.getpid():
            if self.path.suffix == ".npy":
                self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            else:
                import h5py

                try:
                    f = h5py.File(self.path, "r")
                except OSError as exc:
                    raise ValueError(
                        f"{self.path}: normals file is neither .npy nor HDF5 / MATLAB v7.3 ({exc})"
                    ) from exc
                if self.key not in f or not isinstance(f[self.key], h5py.Dataset):
                    raise KeyError(f"{self.path}: no dataset {self.key!r}; keys: {sorted(f.keys())}")
                self._array = f[self.key]
            self._pid = os.getpid()
        return self._array

    def check(self, num: int, frame_hw: tuple[int, int]) -> None:
        """ValueError unless the file holds ``num`` frames of ``frame_hw`` (or of the crop) x 3."""
        shape = tuple(self.source().shape)
        npy = self.path.suffix == ".npy"
        hw = (shape[1], shape[2]) if npy else (shape[3], shape[2])
        channels = shape[3] if npy else shape[1]
        crop_hw = (
            NYU_BORDER_CROP[0].stop - NYU_BORDER_CROP[0].start,
            NYU_BORDER_CROP[1].stop - NYU_BORDER_CROP[1].start,
        )
        allowed = [frame_hw] + ([crop_hw] if self.crop_border else [])
        if len(shape) != 4 or shape[0] != num or channels != 3 or hw not in allowed:
            layout = "(N, H, W, 3)" if npy else "(N, 3, W, H) as h5py reads it"
            raise ValueError(
                f"{self.path}: normals must be {layout} with N={num} and HxW in {allowed}, got {shape}"
            )

    def load(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit normals (H, W, 3) of ``frame`` with ``signs`` applied, cropped when the file holds 480x640
        frames and ``crop_border`` is on, and their mask (zero / non-finite vectors invalid)."""
        n = np.asarray(self.source()[frame], dtype=np.float32)
        if self.path.suffix != ".npy":
            n = n.transpose(2, 1, 0)  # (3, W, H) -> (H, W, 3)
        if self.crop_border and n.shape[:2] == NYUV2_RGB_SIZE:
            n = n[NYU_BORDER_CROP]
        finite = np.isfinite(n).all(axis=-1)
        n = np.where(finite[..., None], n, 0.0) * self.signs
        norm = np.linalg.norm(n, axis=-1)
        mask = finite & (norm > 1e-6)
        out = np.where(mask[..., None], n / np.where(mask, norm, 1.0)[..., None], 0.0)
        return out.astype(np.float32), mask
