"""NYU Depth v2 loaders: the official labeled ``.mat`` ("nyuv2_mat") and MTAN-style npy folders ("nyuv2").

Both give tasks ``semseg`` (13 classes by default, 255 = unlabelled), ``depth`` (metres, 0 / mask False where
invalid) and ``normal`` (camera frame, see :mod:`simo_merge.tasks`).

Splits. ``protocol="default"``: ``train`` (795 images) and ``test`` (654), the official split of Silberman
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
``"default"``; pass ``crop_border=`` to choose explicitly. The npy layout's normals
(precomputed by Eigen & Fergus) are returned as stored; their axis convention could not be confirmed from
sources, so ``normal_signs`` can flip axes and :func:`._geometry.normal_axis_agreement` checks it on real
data.
"""

from __future__ import annotations

import os
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
from simo_merge.datasets.npy_files import (
    check_npy_files,
    list_npy_indices,
    load_npy,
    npy_image,
    npy_label,
    npy_scalar_map,
)
from simo_merge.datasets.nyuv2_matlab import (
    NYU_BORDER_CROP,
    NormalsFile,
    check_normal_signs,
    encode_labels,
    load_label_lut,
    load_nyu_splits,
    read_labeled_layout,
    require_file,
)
from simo_merge.datasets.transforms import finalize_sample, resolve_tasks
from simo_merge.protocols import PROTOCOLS
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

NYU_NUM_TRAIN = 795
NYU_NUM_TEST = 654
SIMO_SEED = 42
SIMO_NUM_VAL = 400
NYU_TASKS: tuple[str, ...] = ("semseg", "depth", "normal")


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
    allowed = ("train", "test") if protocol == "default" else ("train", "val", "test")
    if split not in allowed:
        hint = " (use protocol='simo' for a validation split)" if split == "val" else ""
        raise ValueError(f"protocol {protocol!r} has splits {', '.join(allowed)}; got {split!r}{hint}")


def _select_split(protocol: str, split: str, train: np.ndarray, test: np.ndarray, where: str) -> np.ndarray:
    """Indices of ``split`` under ``protocol`` given the official train / test indices."""
    _check_split(protocol, split)
    if split == "train":
        return train
    if protocol == "default":
        return test
    if len(test) != NYU_NUM_TEST:
        raise ValueError(
            f"protocol 'simo' splits the {NYU_NUM_TEST} official test images, but {where} has {len(test)}"
        )
    val_idx, test_idx = simo_split(test)
    return val_idx if split == "val" else test_idx


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


def _labeled_keys(tasks: Sequence[str], depth_key: str, derive_normals: bool) -> list[str]:
    """The datasets of the labeled file that ``tasks`` read, ``images`` first."""
    needed = ["images"]
    if "depth" in tasks or ("normal" in tasks and derive_normals):
        needed.append(depth_key)
    if "semseg" in tasks:
        needed.append("labels")
    return needed


def _semseg_lut(
    tasks: Sequence[str],
    num_classes: int,
    root: Path,
    mapping40_file: str | os.PathLike | None,
    mapping13_file: str | os.PathLike | None,
) -> np.ndarray | None:
    """The raw-id -> class lookup if ``tasks`` include ``semseg`` (mapping files default under ``root``)."""
    if "semseg" not in tasks:
        return None
    return load_label_lut(
        num_classes,
        Path(mapping40_file or root / "classMapping40.mat"),
        Path(mapping13_file or root / "class13Mapping.mat"),
    )


def _resolve_crop_border(
    crop_border: bool | None, protocol: str, frame_hw: tuple[int, int], where: Path
) -> bool:
    """``crop_border`` as given, else on for the SIMO protocol's full-size frames; ValueError when the
    frames are not 480x640 but a crop is asked for."""
    if crop_border is None:  # the SIMO protocol crops full-size frames by default
        crop_border = protocol == "simo" and frame_hw == NYUV2_RGB_SIZE
    if crop_border and frame_hw != NYUV2_RGB_SIZE:
        raise ValueError(f"crop_border needs 480x640 frames, {where} has {frame_hw[0]}x{frame_hw[1]}")
    return crop_border


def _default_intrinsics(frame_hw: tuple[int, int], crop_border: bool) -> Intrinsics:
    """The Kinect RGB camera, rescaled to ``frame_hw`` and shifted by the border crop."""
    intrinsics = NYUV2_RGB_INTRINSICS
    if frame_hw != NYUV2_RGB_SIZE:
        intrinsics = intrinsics.resized(NYUV2_RGB_SIZE, frame_hw)
    if crop_border:
        intrinsics = intrinsics.cropped(NYU_BORDER_CROP[0].start, NYU_BORDER_CROP[1].start)
    return intrinsics


@DATASETS.register("nyuv2_mat")
class NYUv2Mat(Dataset):
    """NYUv2 from the official ``nyu_depth_v2_labeled.mat`` plus ``splits.mat`` and the class mappings.

    Args:
        root: folder holding the files below (each may also be given explicitly).
        split: ``train`` / ``test`` (``protocol="default"``) or ``train`` / ``val`` / ``test`` (``"simo"``).
        tasks: subset of ``("semseg", "depth", "normal")``; default all.
        transform: callable on the numpy sample (e.g. :class:`~.transforms.JointTransform`) or None.
        protocol: ``"default"`` or ``"simo"`` (see the module docstring).
        num_classes: 13 (Couprie) or 40 (Gupta).
        mat_file, splits_file, mapping40_file, mapping13_file: default ``root/nyu_depth_v2_labeled.mat``,
            ``root/splits.mat``, ``root/classMapping40.mat``, ``root/class13Mapping.mat``.
        raw_depth: use ``rawDepths`` (sensor depth with holes = 0) instead of the in-painted ``depths``.
        crop_border: crop frames to the toolbox's valid region (427x561), dropping the white border;
            default (None): on for ``protocol="simo"`` (when the frames are 480x640), off for
            ``"default"``.
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
        protocol: str = "default",
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
        self.mat_file = require_file(
            Path(mat_file or self.root / "nyu_depth_v2_labeled.mat"), "NYUv2 labeled file"
        )
        self.depth_key = "rawDepths" if raw_depth else "depths"
        self.num_frames, self.frame_hw = read_labeled_layout(
            self.mat_file, _labeled_keys(self.tasks, self.depth_key, derive_normals=normals_file is None)
        )
        self.crop_border = _resolve_crop_border(crop_border, protocol, self.frame_hw, self.mat_file)
        if intrinsics is None:
            intrinsics = _default_intrinsics(self.frame_hw, self.crop_border)
        self.intrinsics = intrinsics

        splits_path = Path(splits_file or self.root / "splits.mat")
        train_idx, test_idx = load_nyu_splits(splits_path, num_frames=self.num_frames)
        self.indices = _select_split(protocol, split, train_idx, test_idx, str(splits_path))
        self._lut = _semseg_lut(self.tasks, num_classes, self.root, mapping40_file, mapping13_file)

        self._h5: Any = None
        self._h5_pid: int | None = None
        self.normal_signs = check_normal_signs(normal_signs)
        self.normals_key = normals_key
        self.normals_file = (
            None if normals_file is None else require_file(Path(normals_file), "NYUv2 normals")
        )
        self._normals = None
        if self.normals_file is not None:
            self._normals = NormalsFile(self.normals_file, normals_key, self.normal_signs, self.crop_border)
            if "normal" in self.tasks:
                self._normals.check(self.num_frames, self.frame_hw)

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"], state["_h5_pid"] = None, None  # h5py handles cannot be pickled
        return state

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
        if "depth" in self.tasks or ("normal" in self.tasks and self._normals is None):
            depth = np.asarray(f[self.depth_key][frame], dtype=np.float32).T[crop]
            valid = np.isfinite(depth) & (depth > 0)
            depth = np.where(valid, depth, 0.0).astype(np.float32)
            if "depth" in self.tasks:
                arrays["depth"], arrays["depth_mask"] = depth, valid
            if "normal" in self.tasks and self._normals is None:
                arrays["normal"], arrays["normal_mask"] = normals_from_depth(depth, self.intrinsics, valid)
        if "normal" in self.tasks and self._normals is not None:
            arrays["normal"], arrays["normal_mask"] = self._normals.load(frame)
        if "semseg" in self.tasks:
            raw = np.asarray(f["labels"][frame]).T[crop].astype(np.int64)
            label = encode_labels(raw, self._lut, f"{self.mat_file}: labels[{frame}] (0-based frame)")
            arrays["semseg"], arrays["semseg_mask"] = label, label != IGNORE_INDEX
        return arrays

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return finalize_sample(self.load_arrays(i), self.tasks, self.transform)


@DATASETS.register("nyuv2")
class NYUv2(Dataset):
    """NYUv2 in the preprocessed MTAN layout ``root/{train,val}/{image,label,depth,normal}/<i>.npy``.

    Args:
        root: folder holding ``train/`` and ``val/`` (``val`` holds the 654 official test images).
        split: ``train`` / ``test`` (``protocol="default"``) or ``train`` / ``val`` / ``test`` (``"simo"``).
        tasks: subset of ``("semseg", "depth", "normal")``; default all.
        transform: callable on the numpy sample or None.
        protocol: ``"default"`` or ``"simo"`` (see the module docstring).
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
        protocol: str = "default",
        normal_signs: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.protocol = protocol
        self.tasks = resolve_tasks(tasks, NYU_TASKS, "nyuv2")
        self.transform = transform
        self.task_specs = _specs(self.tasks, self.num_classes)
        self.normal_signs = check_normal_signs(normal_signs)
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


__all__ = ["NYU13_CLASS_NAMES", "NYU40_CLASS_NAMES", "NYUv2", "NYUv2Mat", "simo_split"]
