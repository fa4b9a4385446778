"""Cityscapes loaders: the official folders ("cityscapes") and the MTAN-style npy layout ("cityscapes_npy").

Tasks: ``semseg`` (19 train classes or the 7 categories; 255 = ignore) and ``disparity``.

Facts used (checked against public sources):

- Official layout: ``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png``, ground truth
  ``gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png`` and
  ``disparity/{split}/{city}/{city}_{seq}_{frame}_disparity.png``; 2048x1024.
- Disparity PNGs are 16-bit: a pixel value ``p > 0`` means disparity ``(p - 1) / 256`` pixels, ``p = 0`` is
  an invalid measurement (Cityscapes README).
- The label table of cityscapesScripts ``helpers/labels.py`` (id, trainId, category, categoryId,
  ignoreInEval) is reproduced in :data:`CITYSCAPES_LABELS`. trainIds 0..18 are the 19 evaluated classes;
  the other ids map to 255.
- The 7 categories are flat, construction, object, nature, sky, human, vehicle (categoryId 1..7; void = 0).
  Choice: a pixel gets category ``categoryId - 1`` only when its class is one of the 19 evaluated classes
  (ignoreInEval False); void and the ignoreInEval classes (parking, rail track, guard rail, bridge, tunnel,
  polegroup, caravan, trailer) are 255, as in the official category-level evaluation.
- MTAN npy layout (lorenmt/mtan README; loaders in follow-up MTL code such as nash-mtl):
  ``{train,val}/{image,label_7,label_19,depth}/<i>.npy``; image HxWx3 float in [0, 1], labels HxW float with
  -1 = ignore, ``depth`` HxWx1. The author states (lorenmt/mtan issues #15 and #25) that this "depth" is the
  Cityscapes disparity used as inverse depth, rescaled (values about 0..0.5) and 0 = invalid. Choice: it is
  served as the ``disparity`` task, values as stored (no unit conversion), mask = value > 0.

- SIMO protocol (``cityscapes_npy``, ``protocol="simo"``; d23845jg/simo_merging ``utils.py``
  ``get_data_loaders`` and ``training/create_dataset.py`` ``CityScapes`` / ``SplitCityScapes``, commit
  2fcaa49a64461f036dc4a7fcc1fc0985d2cd5977): tasks ``label_19`` (19 classes, our ``semseg``), ``part_seg``
  (10 classes) and ``depth`` (disparity, our ``disparity``), all read from the npy folders. ``train`` and
  ``val`` are ``random_split`` of the 2975 files of ``train/`` into 2380 / 595 with
  ``torch.Generator().manual_seed(42)`` (positions ``perm[:2380]`` / ``perm[2380:]`` of
  ``torch.randperm(2975)``, in permutation order, file ``train/*/<position>.npy``); ``test`` is the whole
  ``val/`` folder (the 500 official val images), in file order.
- ``part_seg`` npy files hold the Auto-Lambda part classes (lorenmt/auto-lambda ``create_dataset.py``
  ``map_part_seg_label``, from the Cityscapes-Panoptic-Parts ``sid_pid`` codes): 0 background (every pixel
  that is not one of the parts below), 1..4 person/rider torso, head, arms, legs, 5..9 car/truck/bus
  windows, wheels, lights, license plate, chassis; -1 = ignore (as for the labels). The SIMO loader reads
  them with ``np.load(".../part_seg/<i>.npy")`` as integer class ids, so they are served as stored.
- The SIMO metric for disparity counts a pixel when its stored value is non-zero (``training/utils.py``,
  ``TaskMetric.update_metric``), so Auto-Lambda's ``-1`` invalid marker would be counted there. Choice:
  we keep ``mask = value > 0`` (invalid measurements excluded), documented rather than reproduced.

Disparity of the official loader stays in pixels of the full-resolution 2048-wide image even when ``size``
resizes the sample (values are never rescaled by a plain resize; see :mod:`.transforms`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from simo_merge.datasets import DATASETS
from simo_merge.datasets.npy_files import (
    check_npy_files,
    list_npy_indices,
    load_npy,
    npy_image,
    npy_label,
    npy_scalar_map,
)
from simo_merge.datasets.transforms import JointTransform, finalize_sample, resolve_tasks
from simo_merge.protocols import PROTOCOLS
from simo_merge.tasks import IGNORE_INDEX, TaskSpec, regression, segmentation


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    category_id: int
    ignore_in_eval: bool


#: cityscapesScripts labels table, ids 0..33 (``license plate``, id -1, never appears in labelIds PNGs).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(
    CityscapesLabel(*row)
    for row in (
        ("unlabeled", 0, 255, "void", 0, True),
        ("ego vehicle", 1, 255, "void", 0, True),
        ("rectification border", 2, 255, "void", 0, True),
        ("out of roi", 3, 255, "void", 0, True),
        ("static", 4, 255, "void", 0, True),
        ("dynamic", 5, 255, "void", 0, True),
        ("ground", 6, 255, "void", 0, True),
        ("road", 7, 0, "flat", 1, False),
        ("sidewalk", 8, 1, "flat", 1, False),
        ("parking", 9, 255, "flat", 1, True),
        ("rail track", 10, 255, "flat", 1, True),
        ("building", 11, 2, "construction", 2, False),
        ("wall", 12, 3, "construction", 2, False),
        ("fence", 13, 4, "construction", 2, False),
        ("guard rail", 14, 255, "construction", 2, True),
        ("bridge", 15, 255, "construction", 2, True),
        ("tunnel", 16, 255, "construction", 2, True),
        ("pole", 17, 5, "object", 3, False),
        ("polegroup", 18, 255, "object", 3, True),
        ("traffic light", 19, 6, "object", 3, False),
        ("traffic sign", 20, 7, "object", 3, False),
        ("vegetation", 21, 8, "nature", 4, False),
        ("terrain", 22, 9, "nature", 4, False),
        ("sky", 23, 10, "sky", 5, False),
        ("person", 24, 11, "human", 6, False),
        ("rider", 25, 12, "human", 6, False),
        ("car", 26, 13, "vehicle", 7, False),
        ("truck", 27, 14, "vehicle", 7, False),
        ("bus", 28, 15, "vehicle", 7, False),
        ("caravan", 29, 255, "vehicle", 7, True),
        ("trailer", 30, 255, "vehicle", 7, True),
        ("train", 31, 16, "vehicle", 7, False),
        ("motorcycle", 32, 17, "vehicle", 7, False),
        ("bicycle", 33, 18, "vehicle", 7, False),
    )
)
CITYSCAPES_MAX_LABEL_ID = 33
CITYSCAPES19_CLASS_NAMES: tuple[str, ...] = tuple(
    lab.name for lab in sorted((x for x in CITYSCAPES_LABELS if x.train_id != 255), key=lambda x: x.train_id)
)
CITYSCAPES7_CLASS_NAMES: tuple[str, ...] = (
    "flat",
    "construction",
    "object",
    "nature",
    "sky",
    "human",
    "vehicle",
)
CITYSCAPES_PART_CLASS_NAMES: tuple[str, ...] = (
    "background", "human torso", "human head", "human arms", "human legs", "vehicle windows",
    "vehicle wheels", "vehicle lights", "vehicle license plate", "vehicle chassis",
)  # fmt: skip
CITYSCAPES_TASKS: tuple[str, ...] = ("semseg", "disparity")
CITYSCAPES_NPY_TASKS: tuple[str, ...] = ("semseg", "part_seg", "disparity")
_SPLITS = ("train", "val", "test")
#: SIMO protocol: ``random_split(train_set, [2380, 595], torch.Generator().manual_seed(42))``.
SIMO_NUM_TRAIN_FILES = 2975
SIMO_NUM_TRAIN = 2380
SIMO_SEED = 42


def label_id_lut(num_classes: int) -> np.ndarray:
    """uint8 lookup of 256 entries from labelIds to trainIds (19) or categories (7); unmapped ids -> 255."""
    if num_classes not in (19, 7):
        raise ValueError(f"num_classes must be 19 or 7, got {num_classes}")
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lab in CITYSCAPES_LABELS:
        if not lab.ignore_in_eval:
            lut[lab.id] = lab.train_id if num_classes == 19 else lab.category_id - 1
    return lut


def decode_disparity(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16-bit disparity PNG values -> (disparity in pixels, valid mask): ``(p - 1) / 256`` where p > 0."""
    raw = raw.astype(np.float64)
    valid = raw > 0
    return np.where(valid, (raw - 1.0) / 256.0, 0.0).astype(np.float32), valid


def _specs(tasks: Sequence[str], num_classes: int) -> dict[str, TaskSpec]:
    table = {
        "semseg": segmentation("semseg", num_classes),
        "part_seg": segmentation("part_seg", len(CITYSCAPES_PART_CLASS_NAMES)),
        "disparity": regression("disparity", 1),
    }
    return {t: table[t] for t in tasks}


def _read_png(path: Path, rgb: bool = False) -> np.ndarray:
    """Pixels of a PNG as stored (``rgb``: converted to 8-bit RGB); errors name the file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")) if rgb else np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read image {path}: {exc}") from exc


@DATASETS.register("cityscapes")
class Cityscapes(Dataset):
    """Cityscapes from the official ``leftImg8bit`` / ``gtFine`` / ``disparity`` folders.

    Args:
        root: folder holding ``leftImg8bit/``, ``gtFine/`` and ``disparity/``.
        split: ``train``, ``val`` or ``test`` (test ground truth is not public).
        tasks: subset of ``("semseg", "disparity")``; default both.
        transform: callable on the numpy sample or None (applied after the ``size`` resize).
        num_classes: 19 (trainIds) or 7 (categories).
        size: optional ``(H, W)`` every sample is first resized to (bilinear image / disparity, nearest
            labels); disparity values stay in full-resolution pixels.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Any = None,
        *,
        num_classes: int = 19,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.root = Path(root)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}")
        self.split = split
        self.tasks = resolve_tasks(tasks, CITYSCAPES_TASKS, "cityscapes")
        self.transform = transform
        self.num_classes = num_classes
        self._lut = label_id_lut(num_classes)
        self.class_names = CITYSCAPES19_CLASS_NAMES if num_classes == 19 else CITYSCAPES7_CLASS_NAMES
        self.task_specs = _specs(self.tasks, num_classes)
        self.size = size
        self._pre = JointTransform(size=size, train=False) if size is not None else None

        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"Cityscapes image folder not found: {image_dir}")
        suffix = "_leftImg8bit.png"
        self.images = sorted(p for p in image_dir.glob(f"*/*{suffix}") if p.is_file())
        if not self.images:
            raise FileNotFoundError(f"no */*{suffix} files under {image_dir}")
        self.labels: list[Path] = []
        self.disparities: list[Path] = []
        for img in self.images:
            city, stem = img.parent.name, img.name[: -len(suffix)]
            self.labels.append(self.root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
            self.disparities.append(self.root / "disparity" / split / city / f"{stem}_disparity.png")
        needed = []
        if "semseg" in self.tasks:
            needed.append(("label", self.labels))
        if "disparity" in self.tasks:
            needed.append(("disparity", self.disparities))
        for what, paths in needed:
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"missing {len(missing)} Cityscapes {what} file(s), e.g. {missing[0]}"
                )

    def __len__(self) -> int:
        return len(self.images)

    def load_arrays(self, i: int) -> dict[str, np.ndarray]:
        """The numpy sample of item ``i`` at full resolution, before any resize or transform."""
        if not 0 <= i < len(self.images):
            raise IndexError(f"index {i} out of range for {len(self.images)} items")
        image = _read_png(self.images[i], rgb=True)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{self.images[i]}: expected an RGB image, got shape {image.shape}")
        hw = image.shape[:2]
        arrays: dict[str, np.ndarray] = {"image": image.astype(np.float32) / 255.0}
        if "semseg" in self.tasks:
            path = self.labels[i]
            ids = _read_png(path)
            if ids.shape != hw:
                raise ValueError(
                    f"{path}: labelIds must be a single-channel {hw} image, got shape {ids.shape}"
                )
            if ids.min() < 0 or ids.max() > CITYSCAPES_MAX_LABEL_ID:
                raise ValueError(
                    f"{path}: labelIds must be in 0..{CITYSCAPES_MAX_LABEL_ID}, got {ids.min()}..{ids.max()}"
                )
            label = self._lut[ids.astype(np.int64)].astype(np.int64)
            arrays["semseg"], arrays["semseg_mask"] = label, label != IGNORE_INDEX
        if "disparity" in self.tasks:
            path = self.disparities[i]
            raw = _read_png(path)
            if raw.shape != hw or raw.dtype.kind not in "iu":
                raise ValueError(
                    f"{path}: disparity must be a 16-bit single-channel {hw} PNG, got shape {raw.shape} "
                    f"dtype {raw.dtype}"
                )
            arrays["disparity"], arrays["disparity_mask"] = decode_disparity(raw)
        return arrays

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return finalize_sample(self.load_arrays(i), self.tasks, self.transform, pre=self._pre)


@DATASETS.register("cityscapes_npy")
class CityscapesNpy(Dataset):
    """Cityscapes in the preprocessed npy layout ``root/{train,val}/{image,label_*,part_seg,depth}/<i>.npy``.

    Args:
        root: folder holding ``train/`` and ``val/``.
        split: ``train`` / ``val`` (``protocol="default"``: the two folders) or ``train`` / ``val`` /
            ``test`` (``protocol="simo"``: see the module docstring).
        tasks: subset of ``("semseg", "part_seg", "disparity")``; default ``("semseg", "disparity")``
            for ``"default"`` and all three for ``"simo"``. ``disparity`` reads the ``depth`` folder
            (inverse depth, see the module docstring), ``part_seg`` the ``part_seg`` folder (10 classes).
        transform: callable on the numpy sample or None.
        num_classes: 7 (``label_7``) or 19 (``label_19``); default 7 for ``"default"``, 19 for ``"simo"``.
        protocol: ``"default"`` or ``"simo"``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Any = None,
        *,
        num_classes: int | None = None,
        protocol: str = "default",
    ) -> None:
        self.root = Path(root)
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        allowed = ("train", "val") if protocol == "default" else _SPLITS
        if split not in allowed:
            hint = " (use protocol='simo' for a test split)" if split == "test" else ""
            raise ValueError(f"protocol {protocol!r} has splits {', '.join(allowed)}; got {split!r}{hint}")
        if num_classes is None:
            num_classes = 19 if protocol == "simo" else 7
        if num_classes not in (7, 19):
            raise ValueError(f"num_classes must be 7 or 19, got {num_classes}")
        self.split = split
        self.protocol = protocol
        if tasks is None:
            tasks = CITYSCAPES_NPY_TASKS if protocol == "simo" else CITYSCAPES_TASKS
        self.tasks = resolve_tasks(tasks, CITYSCAPES_NPY_TASKS, "cityscapes_npy")
        self.transform = transform
        self.num_classes = num_classes
        self.class_names = CITYSCAPES19_CLASS_NAMES if num_classes == 19 else CITYSCAPES7_CLASS_NAMES
        self.task_specs = _specs(self.tasks, num_classes)
        self.label_folder = f"label_{num_classes}"
        if not self.root.is_dir():
            raise FileNotFoundError(f"Cityscapes npy root folder not found: {self.root}")
        folder = split if protocol == "default" else ("val" if split == "test" else "train")
        self.data_dir = self.root / folder
        files = list_npy_indices(self.data_dir / "image")
        if protocol == "simo" and split != "test":
            if len(files) != SIMO_NUM_TRAIN_FILES:
                raise ValueError(
                    f"protocol 'simo' splits the {SIMO_NUM_TRAIN_FILES} training images, but "
                    f"{self.data_dir / 'image'} has {len(files)}"
                )
            perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(SIMO_SEED)).tolist()
            positions = perm[:SIMO_NUM_TRAIN] if split == "train" else perm[SIMO_NUM_TRAIN:]
            self.indices = [files[p] for p in positions]
        else:
            self.indices = files
        folders = {"semseg": self.label_folder, "part_seg": "part_seg", "disparity": "depth"}
        check_npy_files(self.data_dir, [folders[t] for t in self.tasks], self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def load_arrays(self, i: int) -> dict[str, np.ndarray]:
        """The numpy sample of item ``i`` before any transform."""
        if not 0 <= i < len(self.indices):
            raise IndexError(f"index {i} out of range for {len(self.indices)} items")
        name = f"{self.indices[i]}.npy"
        path = self.data_dir / "image" / name
        image = npy_image(load_npy(path), path)
        hw = image.shape[:2]
        arrays: dict[str, np.ndarray] = {"image": image}
        if "semseg" in self.tasks:
            path = self.data_dir / self.label_folder / name
            label = npy_label(load_npy(path), path, hw, self.num_classes)
            arrays["semseg"], arrays["semseg_mask"] = label, label != IGNORE_INDEX
        if "part_seg" in self.tasks:
            path = self.data_dir / "part_seg" / name
            label = npy_label(load_npy(path), path, hw, len(CITYSCAPES_PART_CLASS_NAMES))
            arrays["part_seg"], arrays["part_seg_mask"] = label, label != IGNORE_INDEX
        if "disparity" in self.tasks:
            path = self.data_dir / "depth" / name
            arrays["disparity"], arrays["disparity_mask"] = npy_scalar_map(
                load_npy(path), path, hw, "disparity"
            )
        return arrays

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return finalize_sample(self.load_arrays(i), self.tasks, self.transform)


__all__ = [
    "CITYSCAPES19_CLASS_NAMES",
    "CITYSCAPES_PART_CLASS_NAMES",
    "CITYSCAPES7_CLASS_NAMES",
    "CITYSCAPES_LABELS",
    "Cityscapes",
    "CityscapesNpy",
    "decode_disparity",
    "label_id_lut",
]
