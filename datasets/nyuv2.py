"""NYU Depth v2 loaders: the official labeled ``.mat`` ("nyuv2_mat") and MTAN-style npy folders ("nyuv2").

Both give tasks ``semseg`` (13 classes by default, 255 = unlabelled), ``depth`` (metres, 0 / mask False where
invalid) and ``normal`` (camera frame, see :mod:`simo_merge.tasks`).

Splits. ``protocol="standard"``: ``train`` (795 images) and ``test`` (654), the official split of Silberman
et al. (``splits.mat``; the MTAN npy layout calls the test folder ``val``). ``protocol="simo"``: ``train``
(795), ``val`` (400) and ``test`` (254), index for index as the SIMO code draws them: it splits the 654
official test images (the npy layout's ``val/0.npy`` ... ``val/653.npy``) with
``torch.utils.data.random_split(val_set, [400, 254], torch.Generator().manual_seed(42))``
(d23845jg/simo_merging ``utils.py`` ``get_data_loaders``, commit 2fcaa49a64461f036dc4a7fcc1fc0985d2cd5977).
``random_split`` draws ``torch.randperm(654, generator=...)`` and hands out consecutive slices of it
(checked in torch 2.x: ``indices = randperm(sum(lengths), generator=generator).tolist()``), so ``val`` is
positions ``perm[:400]`` and ``test`` ``perm[400:]``, kept in permutation order as the SIMO ``SplitNYUv2``
reads them. The same positions are used by both formats, so they agree whenever the npy folder follows
the official test order (``splits.mat`` ``testNdxs``). See :func:`simo_split`.

Facts used (checked against public sources):

- ``nyu_depth_v2_labeled.mat`` is MATLAB v7.3 (HDF5). MATLAB arrays are column-major, so h5py sees the axes
  reversed: ``images`` (N, 3, W, H) uint8, ``depths`` / ``rawDepths`` (N, W, H) float metres, ``labels``
  (N, W, H) with ids of the 894 object classes (0 = unlabelled). One frame is ``images[i].transpose(2, 1, 0)``
  (H, W, 3) and ``depths[i].T`` (H, W); frames are 480x640.
- ``splits.mat`` (v5 ``.mat``): ``trainNdxs`` (795x1) and ``testNdxs`` (654x1), 1-based frame numbers.
- ``classMapping40.mat`` (Gupta et al. 2013): ``mapClass`` (1x894) gives the 40-class id (1..40) of each of
  the 894 classes (``className`` holds the 40 names).
- ``class13Mapping.mat`` (Couprie et al. 2013, distributed with ankurhanda/nyuv2-meta-data): a 1x1 struct
  ``classMapping13`` whose first field is the 1x40 map from 40-class ids to 13-class ids (1..13) and whose
  second field holds the 13 names. A file holding ``mapClass`` with 894 entries (894 -> 13 directly, as in
  howard-mahe/nyudv2_class_mapping) is accepted too.
- MTAN npy layout (lorenmt/mtan ``create_dataset.py`` and ``utils.py``): ``{train,val}/{image,label,depth,
  normal}/<i>.npy``; image HxWx3 float in [0, 1], label HxW float with 13 classes and -1 = ignore, depth
  HxWx1 metres with 0 = invalid, normal HxWx3 in [-1, 1] with the zero vector = invalid; 288x384.
- Kinect RGB intrinsics at 640x480 from the NYU toolbox ``camera_params.m`` (see :mod:`._geometry`), and its
  projection mask (valid region rows 45..471, columns 41..601, 1-based) for ``crop_border``.

Normals for the ``.mat`` format are not in the file: by default they are derived from the depth map with
those intrinsics (:func:`._geometry.normals_from_depth`, oriented towards the camera). Where the user has
the standard precomputed normals of the 1449 labeled frames, ``normals_file=`` reads them instead (see
:class:`NYUv2Mat`); no such file is distributed with NYUv2 itself, so none is assumed.

Border crop. The labeled frames carry a white border where the Kinect projection left no data; the
preprocessed npy layout the SIMO code reads (MTAN's) has none. ``crop_border`` (rows 45..471, columns
41..601, 1-based, 427x561) is therefore **on by default for** ``protocol="simo"`` and off for
``"standard"``; pass ``crop_border=`` to choose explicitly. The npy layout's normals
(precomputed by Eigen & Fergus) are returned as stored; their axis convention could not be confirmed from
sources, so ``normal_signs`` can flip axes and :func:`._geometry.normal_axis_agreement` checks it on real
data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from simo_merge.datasets import DATASETS
from simo_merge.datasets._geometry import (
    NYUV2_RGB_INTRINSICS,
    NYUV2_RGB_SIZE,
    Intrinsics,
    normals_from_depth,
)
from simo_merge.datasets.transforms import finalize_sample, resolve_tasks
from simo_merge.tasks import IGNORE_INDEX, TaskSpec, normals, regression, segmentation

NYU13_CLASS_NAMES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "picture", "sofa", "table", "tv", "wall", "window",
)  # fmt: skip
NYU40_CLASS_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip

NYU_NUM_RAW_CLASSES = 894
NYU_NUM_TRAIN = 795
NYU_NUM_TEST = 654
SIMO_SEED = 42
SIMO_NUM_VAL = 400
#: Valid region of the labeled frames (toolbox ``get_projection_mask``), as 0-based half-open slices.
NYU_BORDER_CROP = (slice(44, 471), slice(40, 601))
NYU_TASKS: tuple[str, ...] = ("semseg", "depth", "normal")
PROTOCOLS: tuple[str, ...] = ("standard", "simo")


# --------------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------------
def simo_split(
    test_indices: Sequence[int] | np.ndarray, num_val: int = SIMO_NUM_VAL, seed: int = SIMO_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split the official test indices into SIMO ``(val, test)`` exactly as ``torch`` ``random_split`` does.

    ``perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))``; ``val`` is
    ``test_indices[perm[:num_val]]`` and ``test`` ``test_indices[perm[num_val:]]``, both in permutation
    order (item ``i`` of the SIMO val set is ``test_indices[perm[i]]``).
    """
    idx = np.asarray(test_indices)
    if not 0 < num_val < len(idx):
        raise ValueError(f"num_val must be in (0, {len(idx)}), got {num_val}")
    perm = torch_random_split_indices(len(idx), seed)
    return idx[perm[:num_val]], idx[perm[num_val:]]


def torch_random_split_indices(n: int, seed: int) -> np.ndarray:
    """The permutation ``torch.utils.data.random_split`` slices for ``n`` items and ``manual_seed(seed)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()


def _check_split(protocol: str, split: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    allowed = ("train", "test") if protocol == "standard" else ("train", "val", "test")
    if split not in allowed:
        hint = " (use protocol='simo' for a validation split)" if split == "val" else ""
        raise ValueError(f"protocol {protocol!r} has splits {', '.join(allowed)}; got {split!r}{hint}")


def _select_split(protocol: str, split: str, train: np.ndarray, test: np.ndarray, where: str) -> np.ndarray:
    """Indices of ``split`` under ``protocol`` given the official train / test indices."""
    _check_split(protocol, split)
    if split == "train":
        return train
    if protocol == "standard":
        return test
    if len(test) != NYU_NUM_TEST:
        raise ValueError(
            f"protocol 'simo' splits the {NYU_NUM_TEST} official test images, but {where} has {len(test)}"
        )
    val_idx, test_idx = simo_split(test)
    return val_idx if split == "val" else test_idx


# --------------------------------------------------------------------------------------------------------
# .mat helpers
# --------------------------------------------------------------------------------------------------------
def _require_file(path: Path, what: str) -> Path:
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
    path = _require_file(Path(path), "NYUv2 split file")
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
    path = _require_file(Path(path), "NYUv2 40-class mapping")
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
    path = _require_file(Path(path), "NYUv2 13-class mapping")
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


# --------------------------------------------------------------------------------------------------------
# npy helpers (shared with the Cityscapes npy loader)
# --------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------------
def _specs(tasks: Sequence[str], num_classes: int) -> dict[str, TaskSpec]:
    table = {
        "semseg": segmentation("semseg", num_classes),
        "depth": regression("depth", 1),
        "normal": normals("normal"),
    }
    return {t: table[t] for t in tasks}


@DATASETS.register("nyuv2_mat")
class NYUv2Mat(Dataset):
    """NYUv2 from the official ``nyu_depth_v2_labeled.mat`` plus ``splits.mat`` and the class mappings.

    Args:
        root: folder holding the files below (each may also be given explicitly).
        split: ``train`` / ``test`` (``protocol="standard"``) or ``train`` / ``val`` / ``test`` (``"simo"``).
        tasks: subset of ``("semseg", "depth", "normal")``; default all.
        transform: callable on the numpy sample (e.g. :class:`~.transforms.JointTransform`) or None.
        protocol: ``"standard"`` or ``"simo"`` (see the module docstring).
        num_classes: 13 (Couprie) or 40 (Gupta).
        mat_file, splits_file, mapping40_file, mapping13_file: default ``root/nyu_depth_v2_labeled.mat``,
            ``root/splits.mat``, ``root/classMapping40.mat``, ``root/class13Mapping.mat``.
        raw_depth: use ``rawDepths`` (sensor depth with holes = 0) instead of the in-painted ``depths``.
        crop_border: crop frames to the toolbox's valid region (427x561), dropping the white border;
            default (None): on for ``protocol="simo"`` (when the frames are 480x640), off for
            ``"standard"``.
        normals_file: precomputed normals of all frames instead of depth-derived ones: a ``.npy`` array
            (N, H, W, 3), or a MATLAB v7.3 / HDF5 file whose variable ``normals_key`` holds them as
            MATLAB stores an (H, W, 3, N) array (h5py sees (N, 3, W, H)); H x W is 480x640 (cropped
            like the frames when ``crop_border``) or already 427x561. Vectors are unit normals in the
            camera frame (x right, y down, z forward); ``normal_signs`` flips axes of another
            convention; zero or non-finite vectors are invalid.
        normals_key: variable name in a ``.mat`` / HDF5 ``normals_file`` (default ``"normals"``).
        normal_signs: per-axis factors (+1 / -1) applied to ``normals_file`` vectors.
        intrinsics: camera for the derived normals; default the Kinect RGB camera, rescaled when the
            file's frames are not 480x640 and shifted by ``crop_border``.

    The HDF5 file is opened lazily, once per process (DataLoader workers each open their own handle).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Any = None,
        *,
        protocol: str = "standard",
        num_classes: int = 13,
        mat_file: str | os.PathLike | None = None,
        splits_file: str | os.PathLike | None = None,
        mapping40_file: str | os.PathLike | None = None,
        mapping13_file: str | os.PathLike | None = None,
        raw_depth: bool = False,
        crop_border: bool | None = None,
        intrinsics: Intrinsics | None = None,
        normals_file: str | os.PathLike | None = None,
        normals_key: str = "normals",
        normal_signs: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        import h5py

        self.root = Path(root)
        self.split = split
        self.protocol = protocol
        self.tasks = resolve_tasks(tasks, NYU_TASKS, "nyuv2_mat")
        self.transform = transform
        if num_classes not in (13, 40):
            raise ValueError(f"num_classes must be 13 or 40, got {num_classes}")
        self.num_classes = num_classes
        self.class_names = NYU13_CLASS_NAMES if num_classes == 13 else NYU40_CLASS_NAMES
        self.task_specs = _specs(self.tasks, num_classes)
        self.mat_file = _require_file(
            Path(mat_file or self.root / "nyu_depth_v2_labeled.mat"), "NYUv2 labeled file"
        )
        self.depth_key = "rawDepths" if raw_depth else "depths"

        try:
            f = h5py.File(self.mat_file, "r")
        except OSError as exc:
            raise ValueError(f"{self.mat_file}: not an HDF5 / MATLAB v7.3 file ({exc})") from exc
        with f:
            needed = ["images"]
            if "depth" in self.tasks or ("normal" in self.tasks and normals_file is None):
                needed.append(self.depth_key)
            if "semseg" in self.tasks:
                needed.append("labels")
            for key in needed:
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise KeyError(f"{self.mat_file}: no dataset {key!r}; keys: {sorted(f.keys())}")
            shape = f["images"].shape
            if len(shape) != 4 or shape[1] != 3:
                raise ValueError(
                    f"{self.mat_file}: 'images' must be (N, 3, W, H) as h5py reads it, got {shape}"
                )
            num, width, height = shape[0], shape[2], shape[3]
            for key in needed[1:]:
                if f[key].shape != (num, width, height):
                    raise ValueError(
                        f"{self.mat_file}: {key!r} has shape {f[key].shape}, expected {(num, width, height)}"
                    )
        self.num_frames = num
        self.frame_hw = (height, width)
        if crop_border is None:  # the SIMO protocol crops full-size frames by default
            crop_border = protocol == "simo" and self.frame_hw == NYUV2_RGB_SIZE
        self.crop_border = crop_border
        if crop_border and self.frame_hw != NYUV2_RGB_SIZE:
            raise ValueError(f"crop_border needs 480x640 frames, {self.mat_file} has {height}x{width}")
        if intrinsics is None:
            intrinsics = NYUV2_RGB_INTRINSICS
            if self.frame_hw != NYUV2_RGB_SIZE:
                intrinsics = intrinsics.resized(NYUV2_RGB_SIZE, self.frame_hw)
            if crop_border:
                intrinsics = intrinsics.cropped(NYU_BORDER_CROP[0].start, NYU_BORDER_CROP[1].start)
        self.intrinsics = intrinsics

        splits_path = Path(splits_file or self.root / "splits.mat")
        train_idx, test_idx = load_nyu_splits(splits_path, num_frames=num)
        self.indices = _select_split(protocol, split, train_idx, test_idx, str(splits_path))

        self._lut: np.ndarray | None = None
        if "semseg" in self.tasks:
            map40 = load_class_mapping_40(mapping40_file or self.root / "classMapping40.mat")
            map13 = (
                load_class_mapping_13(mapping13_file or self.root / "class13Mapping.mat")
                if num_classes == 13
                else None
            )
            self._lut = build_label_lut(num_classes, map40, map13)

        self._h5: Any = None
        self._h5_pid: int | None = None
        self._normals: Any = None
        self._normals_pid: int | None = None
        if len(normal_signs) != 3 or any(v not in (1, -1) for v in normal_signs):
            raise ValueError(f"normal_signs must be three values of +1 or -1, got {normal_signs!r}")
        self.normal_signs = np.asarray(normal_signs, dtype=np.float32)
        self.normals_key = normals_key
        self.normals_file = (
            None if normals_file is None else _require_file(Path(normals_file), "NYUv2 normals")
        )
        if self.normals_file is not None and "normal" in self.tasks:
            self._check_normals_file(num, (height, width))

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"], state["_h5_pid"] = None, None  # h5py handles cannot be pickled
        state["_normals"], state["_normals_pid"] = None, None
        return state

    def _normals_source(self) -> Any:
        """The normals array: a memory-mapped ``.npy`` (N, H, W, 3) or an h5py dataset (N, 3, W, H)."""
        if self._normals is None or self._normals_pid != os.getpid():
            path = self.normals_file
            if path.suffix == ".npy":
                self._normals = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                import h5py

                try:
                    f = h5py.File(path, "r")
                except OSError as exc:
                    raise ValueError(
                        f"{path}: normals file is neither .npy nor HDF5 / MATLAB v7.3 ({exc})"
                    ) from exc
                if self.normals_key not in f or not isinstance(f[self.normals_key], h5py.Dataset):
                    raise KeyError(f"{path}: no dataset {self.normals_key!r}; keys: {sorted(f.keys())}")
                self._normals = f[self.normals_key]
            self._normals_pid = os.getpid()
        return self._normals

    def _check_normals_file(self, num: int, frame_hw: tuple[int, int]) -> None:
        arr = self._normals_source()
        shape = tuple(arr.shape)
        hw = (shape[1], shape[2]) if self.normals_file.suffix == ".npy" else (shape[3], shape[2])
        channels = shape[3] if self.normals_file.suffix == ".npy" else shape[1]
        crop_hw = (
            NYU_BORDER_CROP[0].stop - NYU_BORDER_CROP[0].start,
            NYU_BORDER_CROP[1].stop - NYU_BORDER_CROP[1].start,
        )
        allowed = [frame_hw] + ([crop_hw] if self.crop_border else [])
        if len(shape) != 4 or shape[0] != num or channels != 3 or hw not in allowed:
            layout = "(N, H, W, 3)" if self.normals_file.suffix == ".npy" else "(N, 3, W, H) as h5py reads it"
            raise ValueError(
                f"{self.normals_file}: normals must be {layout} with N={num} and HxW in {allowed}, "
                f"got {shape}"
            )

    def _load_normals(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        arr = self._normals_source()
        n = np.asarray(arr[frame], dtype=np.float32)
        if self.normals_file.suffix != ".npy":
            n = n.transpose(2, 1, 0)  # (3, W, H) -> (H, W, 3)
        if self.crop_border and n.shape[:2] == NYUV2_RGB_SIZE:
            n = n[NYU_BORDER_CROP]
        finite = np.isfinite(n).all(axis=-1)
        n = np.where(finite[..., None], n, 0.0) * self.normal_signs
        norm = np.linalg.norm(n, axis=-1)
        mask = finite & (norm > 1e-6)
        out = np.where(mask[..., None], n / np.where(mask, norm, 1.0)[..., None], 0.0)
        return out.astype(np.float32), mask

    def _file(self) -> Any:
        if self._h5 is None or self._h5_pid != os.getpid():
            import h5py

            self._h5 = h5py.File(self.mat_file, "r")
            self._h5_pid = os.getpid()
        return self._h5

    def load_arrays(self, i: int) -> dict[str, np.ndarray]:
        """The numpy sample of item ``i`` before any transform."""
        if not 0 <= i < len(self.indices):
            raise IndexError(f"index {i} out of range for {len(self.indices)} items")
        frame = int(self.indices[i])
        f = self._file()
        crop = NYU_BORDER_CROP if self.crop_border else (slice(None), slice(None))
        image = np.asarray(f["images"][frame]).transpose(2, 1, 0)[crop]
        arrays: dict[str, np.ndarray] = {"image": image.astype(np.float32) / 255.0}
        if "depth" in self.tasks or ("normal" in self.tasks and self.normals_file is None):
            depth = np.asarray(f[self.depth_key][frame], dtype=np.float32).T[crop]
            valid = np.isfinite(depth) & (depth > 0)
            depth = np.where(valid, depth, 0.0).astype(np.float32)
            if "depth" in self.tasks:
                arrays["depth"], arrays["depth_mask"] = depth, valid
            if "normal" in self.tasks and self.normals_file is None:
                arrays["normal"], arrays["normal_mask"] = normals_from_depth(depth, self.intrinsics, valid)
        if "normal" in self.tasks and self.normals_file is not None:
            arrays["normal"], arrays["normal_mask"] = self._load_normals(frame)
        if "semseg" in self.tasks:
            raw = np.asarray(f["labels"][frame]).T[crop].astype(np.int64)
            bad = (raw < 0) | (raw > NYU_NUM_RAW_CLASSES)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ValueError(
                    f"{self.mat_file}: labels[{frame}] (0-based frame) holds {raw[r, c]} at "
                    f"(row {r}, col {c}); raw ids must be in 0..{NYU_NUM_RAW_CLASSES}"
                )
            label = self._lut[raw].astype(np.int64)
            arrays["semseg"], arrays["semseg_mask"] = label, label != IGNORE_INDEX
        return arrays

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return finalize_sample(self.load_arrays(i), self.tasks, self.transform)


@DATASETS.register("nyuv2")
class NYUv2(Dataset):
    """NYUv2 in the preprocessed MTAN layout ``root/{train,val}/{image,label,depth,normal}/<i>.npy``.

    Args:
        root: folder holding ``train/`` and ``val/`` (``val`` holds the 654 official test images).
        split: ``train`` / ``test`` (``protocol="standard"``) or ``train`` / ``val`` / ``test`` (``"simo"``).
        tasks: subset of ``("semseg", "depth", "normal")``; default all.
        transform: callable on the numpy sample or None.
        protocol: ``"standard"`` or ``"simo"`` (see the module docstring).
        normal_signs: per-axis factors (each +1 or -1) applied to the stored normals, to adapt their
            convention if :func:`._geometry.normal_axis_agreement` shows a flipped axis.
    """

    num_classes = 13
    class_names = NYU13_CLASS_NAMES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Any = None,
        *,
        protocol: str = "standard",
        normal_signs: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.protocol = protocol
        self.tasks = resolve_tasks(tasks, NYU_TASKS, "nyuv2")
        self.transform = transform
        self.task_specs = _specs(self.tasks, self.num_classes)
        if len(normal_signs) != 3 or any(s not in (1, -1) for s in normal_signs):
            raise ValueError(f"normal_signs must be three values of +1 or -1, got {normal_signs!r}")
        self.normal_signs = np.asarray(normal_signs, dtype=np.float32)
        _check_split(protocol, split)
        if not self.root.is_dir():
            raise FileNotFoundError(f"NYUv2 root folder not found: {self.root}")

        self.data_dir = self.root / ("train" if split == "train" else "val")
        files = np.asarray(list_npy_indices(self.data_dir / "image"))
        where = str(self.data_dir / "image")
        positions = _select_split(protocol, split, np.arange(len(files)), np.arange(len(files)), where)
        self.indices = files[positions]
        folders = {"semseg": "label", "depth": "depth", "normal": "normal"}
        check_npy_files(self.data_dir, [folders[t] for t in self.tasks], self.indices.tolist())

    def __len__(self) -> int:
        return len(self.indices)

    def load_arrays(self, i: int) -> dict[str, np.ndarray]:
        """The numpy sample of item ``i`` before any transform."""
        if not 0 <= i < len(self.indices):
            raise IndexError(f"index {i} out of range for {len(self.indices)} items")
        name = f"{int(self.indices[i])}.npy"
        path = self.data_dir / "image" / name
        image = npy_image(load_npy(path), path)
        hw = image.shape[:2]
        arrays: dict[str, np.ndarray] = {"image": image}
        if "semseg" in self.tasks:
            path = self.data_dir / "label" / name
            label = npy_label(load_npy(path), path, hw, self.num_classes)
            arrays["semseg"], arrays["semseg_mask"] = label, label != IGNORE_INDEX
        if "depth" in self.tasks:
            path = self.data_dir / "depth" / name
            arrays["depth"], arrays["depth_mask"] = npy_scalar_map(load_npy(path), path, hw, "depth")
        if "normal" in self.tasks:
            path = self.data_dir / "normal" / name
            n = load_npy(path)
            if n.shape != hw + (3,):
                raise ValueError(f"{path}: normal must have shape {hw + (3,)}, got {n.shape}")
            n = n.astype(np.float32)
            mask = np.isfinite(n).all(axis=-1) & (np.linalg.norm(np.nan_to_num(n), axis=-1) > 0)
            arrays["normal"] = np.where(mask[..., None], n * self.normal_signs, 0.0).astype(np.float32)
            arrays["normal_mask"] = mask
        return arrays

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return finalize_sample(self.load_arrays(i), self.tasks, self.transform)


__all__ = [
    "NYU13_CLASS_NAMES",
    "NYU40_CLASS_NAMES",
    "NYUv2",
    "NYUv2Mat",
    "build_label_lut",
    "load_class_mapping_13",
    "load_class_mapping_40",
    "load_nyu_splits",
    "simo_split",
]
