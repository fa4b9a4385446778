"""Taskonomy loader (registered as ``"taskonomy"``): per-building PNG annotations of indoor scans.

What it reads
-------------
One sample is one ``(building, point, view)`` camera that has an ``rgb`` image *and* a file for every
requested task. Files are named as in the release, ``point_{p}_view_{v}_domain_{domain}.png``, one folder
per (task, building). Two on-disk layouts produced by the official download paths are supported
(``layout="auto"`` picks the one present):

- ``"omnidata"``: ``{root}/{task}/taskonomy/{building}/point_{p}_view_{v}_domain_{task}.png``. This is what
  ``omnitools.download ... --components taskonomy`` writes (the Omnidata download tool untars every
  ``{task}__taskonomy__{building}`` archive into ``dest/{domain}/{component}/{building}``; repository
  EPFL-VILAB/omnidata, ``omnidata_tools/dataset/download.py``, ``untar(output_structure=...)``; the same
  layout is the one its torch dataloader expects, ``omnidata_tools/torch/dataloader/omnidata_dataset.py``).
  The Taskonomy data README (StanfordVL/taskonomy, ``data/README.md``) points to this tool as the
  download route since Oct 2021.
- ``"building"``: ``{root}/{building}/{task}/point_...png``, i.e. each original per-building archive
  ``{building}_{task}.tar`` (whose single top folder is ``{task}/``) extracted into a folder named after the
  building; this is also how the official sample building (alexsax/taskonomy-sample-model-1) is laid out.
- ``"building_task"``: ``{root}/{building}_{task}/[{task}/]point_...png``, each archive extracted into a
  folder named after the archive.

Older releases (and that sample building) use legacy folder/domain names; they are accepted as aliases:
``segmentsemantic`` for ``segment_semantic``, ``edge2d`` for ``edge_texture``, ``keypoint2d`` for
``keypoints2d`` and ``depth`` for ``depth_zbuffer`` (the sample README documents its ``depth/`` folder as
z-buffer depth in 1/512 m).

Tasks (Taskonomy name -> our name)
----------------------------------
``rgb`` is the input image (3-channel 8-bit PNG, returned in [0, 1]). Targets:

- ``depth_zbuffer`` -> ``"depth"``: single-channel 16-bit PNG in units of 1/512 m, range 128 m
  (StanfordVL/taskonomy ``data/README.md``: "Units of 1/512m with a max range of 128m"; the annotator's
  settings, EPFL-VILAB/omnidata ``omnidata_annotator/scripts/settings.py``: 16-bit, 128 m max, "sensitivity
  1/512m"; the Omnidata dataloader divides by 512, ``omnidata_tools/torch/dataloader/transforms.py``
  ``transform_16bit_depth``). The saturated value 65535 marks missing geometry / beyond range: the Omnidata
  task config masks ``depth_zbuffer`` where the value normalised by 2**16-1 equals 1.0
  (``task_configs.py``, ``mask_val: 1.0``; ``masks.py``). We return metres, with ``depth_mask`` False where
  the raw value is 65535 or 0 (zero depth is never a valid pinhole depth) and depth set to 0 there.
- ``normal`` -> ``"normal"``: 3-channel 8-bit PNG, channel value c maps to ``2 * c / 255 - 1``
  (EPFL-VILAB/omnidata issue #13, answered by the dataset author: "stored as RGB images with values
  between 0 and 1, that should be remapped to between -1 and 1, and a vector of (0,0,1) faces towards the
  camera"; same remap in ``transforms.py``). Invalid pixels are stored as (128, 128, 128): the Omnidata task
  config masks normals at 0.502 = 128/255 in all channels (``task_configs.py`` ``mask_val: 0.502``,
  ``masks.py`` ``build_mask``). Axis convention: the stored vectors are used **as they are**, in our
  camera frame (x right, y down, z forward), i.e. :data:`NORMAL_SIGNS` = (1, 1, 1). An earlier version
  read the Omnidata issue's "+Z from screen to me" as a z to negate ((1, 1, -1)); measured on a real
  Taskonomy view against normals derived from its z-buffer depth, that flip is wrong (mean angle 50.6°
  with it; issue 11 of this project): the stored vectors already agree with the depth-derived normals,
  which face the camera. The SIMO code, too, uses ``2 * c / 255 - 1`` without any flip
  (``training/create_dataset.py`` ``Taskonomy.__getitem__``). ``normal_signs=`` overrides the signs;
  :func:`simo_merge.datasets._geometry.normal_axis_agreement` checks them on real data (the view's
  intrinsics follow from its ``field_of_view_rads`` in ``point_info``). Vectors are renormalised to unit
  length; ``normal_mask`` is False (and the vector 0) at (128,128,128) pixels.
- ``segment_semantic`` -> ``"semseg"``: single-channel 8-bit PNG of class ids. The data README
  (StanfordVL/taskonomy ``data/README.md``): 18 labels, "The classes 0 and 1 mark uncertain and background
  pixels, respectively"; uncertain pixels "should be masked during learning"; the other 16 are COCO classes
  listed after "background" in ``taskbank/assets/web_assets/pseudosemantics/coco_selected_classes.txt``
  (bottle, chair, couch, potted plant, bed, dining table, toilet, tv, microwave, oven, toaster, sink,
  refrigerator, book, clock, vase). We map raw 0 -> 255 (ignore), raw k in 1..17 -> k - 1, i.e. 17 classes
  with background = 0 and :data:`SEMSEG_CLASSES` in that order. Any raw value > 17 is an error.
- ``keypoints2d`` -> ``"keypoints2d"`` and ``edge_texture`` -> ``"edge"``: single-channel 16-bit PNGs
  decoded as ``value / 65535`` into [0, 1] (Omnidata ``transforms.py`` ``transform_16bit_single_channel``
  for ``keypoints2d``/``edge_texture``). The Omnidata dataset README lists these two as 8-bit; 8-bit files
  are therefore also accepted and decoded as ``value / 255``. Both are defined at every pixel (mask all
  True); no further clipping/rescaling (papers rescale keypoints, e.g. clip at 0.005, but that is a
  training choice, not the encoding).
- ``"autoencoding"``: the target is the (transformed) image itself; it needs no extra file.

Taskonomy names are accepted in ``tasks=`` as aliases of our names.

Protocols
---------
``protocol="default"`` decodes as above. ``protocol="simo"`` reproduces the SIMO paper's
Taskonomy subset (d23845jg/simo_merging, ``utils.py`` ``get_data_loaders`` and ``training/create_dataset.py``
``Taskonomy``, adapted there from tstandley/taskgrouping ``taskonomy_loader.py``; commit
2fcaa49a64461f036dc4a7fcc1fc0985d2cd5977; the paper's appendix A gives the same buildings and counts):

- buildings :data:`SIMO_SPLITS` (train 8, val 4, test 4) and, per building, the first
  :data:`SIMO_PER_BUILDING` rgb files (2000 train, 1000 val / test) **in the string order of their file
  names** (the SIMO loader sorts the full paths, so ``point_10_...`` precedes ``point_1_...``); buildings
  follow the list order (the SIMO loader takes them in ``os.walk`` order, which the file system decides);
  a missing task file is an error (``strict``), as it is there.
- encodings as that code computes its targets: ``depth`` = ``log1p(raw) / log(2**16)`` of the raw
  z-buffer value (mask: raw > 0, the SIMO metric counts every non-zero target); ``keypoints2d`` and
  ``edge`` = ``raw`` clipped to [0, 3129] resp. [0, 11041] and mapped linearly to [-1, 1] (mask all True);
  ``semseg`` = the 18 raw classes 0..17 as stored, class 0 (uncertain) masked (the SIMO segmentation head
  has ``ignore_index=0`` for ``segment_semantic``; its confusion matrix, unlike ours, still counts
  class-0 pixels); ``normal`` as in the official mode (on the resized [0, 1] values, grey within 1e-3).
- the layout ``"task_building"`` (``{root}/{task}/{building}/point_...png``, the taskgrouping layout the
  SIMO loader walks) is supported besides the others.

- the SIMO loader's reading and resizing (``process_image``, create_dataset.py lines 397-410): every file
  is read as torchvision's ``to_tensor`` reads it (8-bit RGB -> [0, 1] floats; 8-bit grey as uint8; a
  16-bit PNG, which Pillow opens as ``I;16``, as **int16**, so 65535 wraps to -1) and resized to
  :data:`SIMO_SIZE` (``output_size=(256, 256)``) with torchvision's antialiased bilinear ``resize`` (labels
  too; integer results rounded, int16 truncated, as torchvision casts back) **before** encoding. Their
  ``log1p`` of the wrapped 65535 is -inf: that is the missing depth, masked (and 0) here.
- ``mask_valid`` (read with both protocols when the folder exists, ``{mask_valid}/.../point_{p}_view_{v}
  _domain_depth_zbuffer.png`` as the SIMO loader names it, or ``..._domain_mask_valid.png``; non-zero =
  valid): ``protocol="default"`` narrows ``depth_mask`` with it; ``"simo"`` uses it, resized and rounded as
  above, as the mask of every abs-error task (depth, keypoints2d, edge), as their metric does
  (``training/utils.py`` lines 218-225, ``img_metas["mask"]``).
- ``autoencoding``: the SIMO target is the network input, the image mapped to [-1, 1] (``ys["rgb"] = im``,
  line 512); under ``"simo"`` the target is ``2x - 1``, matching the ``2x - 1`` input normalisation, and
  [0, 1] under ``"default"``.

The training split's flip-only augmentation (``augment=True``, no scale / crop) is what
:attr:`TaskonomyDataset.protocol_augmentation` names for ``"simo"``.

Splits
------
:data:`TINY_SPLITS` is Taskonomy's "tiny" partition (25 train / 5 val / 5 test buildings; table in
StanfordVL/taskonomy ``data/README.md``). The official per-split file (``data/assets/splits_taskonomy.zip``)
is binary and could not be read here; the building lists were checked instead against (a) the
"full" split CSV shipped with the Omnidata tools
(``omnidata_tools/dataset/starter_dataset/component_datasets/taskonomy/train_val_test_full.csv``): every
tiny building sits in the same train/val/test column there, (b) the 35 Gibson "tiny" scene names (the
Gibson/3D-Scene-Graph tiny set is the same 35 buildings), and (c) two independent public Taskonomy
loaders found in the code index (one of them the Visual Token Matching few-shot loader) that hard-code
the same 25/5/5 assignment. The SIMO paper used other buildings (not the tiny split): those are
:data:`SIMO_SPLITS`, read with ``protocol="simo"`` (see Protocols); ``buildings=`` overrides either list.
Note that the Omnidata tool lists
``woodbine`` (a tiny *train* building) among buildings it does not serve, so an Omnidata download of the
tiny train split may lack it: pass ``skip_missing_buildings=True`` or ``buildings=`` in that case.

Resizing/augmentation is the ``transform``'s job (``JointTransform`` in
:mod:`simo_merge.datasets.transforms`, called on the decoded numpy arrays); the result goes through that
module's ``to_sample`` (via ``finalize_sample``). Taskonomy images are 512x512. The data README calls the
normals "127-centered"; the invalid value is nevertheless 128 in every channel (Omnidata's 0.502 mask
value, tolerance 1e-3, excludes 127).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from simo_merge.datasets import DATASETS
from simo_merge.protocols import PROTOCOLS
from simo_merge.tasks import IGNORE_INDEX, TaskSpec, normals, regression, segmentation

logger = logging.getLogger(__name__)

TINY_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "allensville", "beechwood", "benevolence", "coffeen", "cosmos", "forkland", "hanson",
        "hiteman", "klickitat", "lakeville", "leonardo", "lindenwood", "marstons", "merom",
        "mifflinburg", "newfields", "onaga", "pinesdale", "pomaria", "ranchester", "shelbyville",
        "stockman", "tolstoy", "wainscott", "woodbine",
    ),
    "val": ("collierville", "corozal", "darden", "markleeville", "wiconisco"),
    "test": ("ihlen", "mcdade", "muleshoe", "noxapater", "uvalda"),
}  # fmt: skip

SEMSEG_CLASSES: tuple[str, ...] = (
    "background", "bottle", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
)  # fmt: skip

DEPTH_UNITS_PER_METRE = 512.0
DEPTH_INVALID_RAW = 65535
NORMAL_INVALID_RAW = 128
NORMAL_SIGNS: tuple[float, float, float] = (1.0, 1.0, 1.0)  # stored axes are ours (see the module docstring)

#: The SIMO paper's Taskonomy subset (``get_data_loaders``, ``model_whitelist``).
SIMO_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "allensville", "coffeen", "collierville", "leonardo", "merom", "pinesdale", "ranchester", "stockman",
    ),
    "val": ("beechwood", "corozal", "klickitat", "shelbyville"),
    "test": ("ihlen", "mcdade", "onaga", "tolstoy"),
}  # fmt: skip
#: rgb files per building (``model_limit``): first N in file-name order.
SIMO_PER_BUILDING: dict[str, int] = {"train": 2000, "val": 1000, "test": 1000}
SIMO_KEYPOINTS_MAX = 3129.0
SIMO_EDGE_MAX = 11041.0
SIMO_DEPTH_LOG_SCALE = float(np.log(2.0**16))
#: the SIMO loader's ``output_size``: every file is resized to it before encoding
SIMO_SIZE: tuple[int, int] = (256, 256)
#: the ``mask_valid`` folder and the file domains it may use (the SIMO loader's is ``depth_zbuffer``)
MASK_VALID_DOMAINS: tuple[str, ...] = ("depth_zbuffer", "mask_valid")

# our task name -> (Taskonomy task, accepted folder / file-domain names, first is the current one)
_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "semseg": ("segment_semantic", ("segment_semantic", "segmentsemantic")),
    "depth": ("depth_zbuffer", ("depth_zbuffer", "depth")),
    "normal": ("normal", ("normal",)),
    "keypoints2d": ("keypoints2d", ("keypoints2d", "keypoint2d")),
    "edge": ("edge_texture", ("edge_texture", "edge2d")),
    "autoencoding": ("autoencoding", ()),
}
_RGB_NAMES: tuple[str, ...] = ("rgb",)
_ALIASES: dict[str, str] = {tk: ours for ours, (tk, _) in _TASKS.items()}
_TASK_SPECS: dict[str, TaskSpec] = {
    "semseg": segmentation("semseg", len(SEMSEG_CLASSES)),
    "depth": regression("depth", 1),
    "normal": normals("normal"),
    "keypoints2d": regression("keypoints2d", 1),
    "edge": regression("edge", 1),
    "autoencoding": regression("autoencoding", 3),
}
LAYOUTS = ("omnidata", "building", "building_task", "task_building")
_FILE_RE = re.compile(r"^point_(\d+)_view_(\d+)_domain_([A-Za-z0-9_]+)\.png$")


# ----------------------------------------------------------------------------------------------- decoding
def _read_png(path: str) -> tuple[np.ndarray, str]:
    """Raw pixel array of a PNG and its PIL mode, with the path in any error."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.array(img)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return arr, mode


def _single_channel(arr: np.ndarray, path: str) -> np.ndarray:
    """HxW view of a label image; a 3-channel file is accepted only if its channels are identical."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
    raise ValueError(f"{path}: expected a single-channel image, got array of shape {arr.shape}")


def _is_16bit(mode: str, arr: np.ndarray) -> bool:
    return mode.startswith("I") or arr.dtype in (np.uint16, np.int32, np.uint32)


def load_rgb(path: str) -> np.ndarray:
    """HxWx3 float32 image in [0, 1] from an 8-bit RGB(A)/grey PNG."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA", "L", "P"):
                raise ValueError(f"{path}: expected an 8-bit RGB image, got PIL mode {img.mode!r}")
            arr = np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return arr.astype(np.float32) / 255.0


def decode_depth_zbuffer(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw 16-bit z-buffer values -> (depth in metres float32, valid mask); invalid pixels get depth 0."""
    raw = raw.astype(np.int64)
    mask = (raw > 0) & (raw < DEPTH_INVALID_RAW)
    depth = np.where(mask, raw / DEPTH_UNITS_PER_METRE, 0.0).astype(np.float32)
    return depth, mask


def decode_normal(raw: np.ndarray, signs: Sequence[float] = NORMAL_SIGNS) -> tuple[np.ndarray, np.ndarray]:
    """Raw HxWx3 uint8 normals -> (unit normals in our camera frame float32 HxWx3, valid mask).

    ``2 * c / 255 - 1`` per channel, times ``signs`` per axis, renormalised; (128, 128, 128) is invalid
    (within Omnidata's tolerance 1e-3 of 128/255, so resized float values decode too).
    """
    raw = raw[..., :3].astype(np.float64)
    stored = (raw * (2.0 / 255.0) - 1.0).astype(np.float32)
    vec = stored * np.asarray(signs, dtype=np.float32)
    norm = np.linalg.norm(vec, axis=-1)
    grey = np.all(np.abs(raw - NORMAL_INVALID_RAW) <= 255e-3, axis=-1)
    mask = ~grey & (norm > 0.5)
    out = np.zeros_like(vec)
    out[mask] = vec[mask] / norm[mask][:, None]
    return out, mask


def decode_segment_semantic(raw: np.ndarray, path: str = "<array>") -> np.ndarray:
    """Raw class ids (0 uncertain, 1 background, 2..17 objects) -> int64 labels, 255 where uncertain."""
    raw = raw.astype(np.int64)
    bad = raw > len(SEMSEG_CLASSES)
    if bad.any():
        values = sorted({int(v) for v in np.unique(raw[bad])})[:10]
        raise ValueError(f"{path}: segment_semantic ids must be in 0..{len(SEMSEG_CLASSES)}, found {values}")
    return np.where(raw == 0, IGNORE_INDEX, raw - 1).astype(np.int64)


def decode_unit_16bit(raw: np.ndarray, sixteen_bit: bool = True) -> np.ndarray:
    """keypoints2d / edge_texture raw values -> float32 in [0, 1] (divide by 65535, or 255 for 8-bit)."""
    scale = 65535.0 if sixteen_bit else 255.0
    return (raw.astype(np.float32) / scale).astype(np.float32)


def decode_depth_simo(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SIMO depth target: ``log1p(raw) / log(2**16)`` of the (resized, int16-read) z-buffer values; valid
    where non-zero and finite (65535, read as -1, gives -inf: missing depth, set to 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log1p(raw.astype(np.float64)) / SIMO_DEPTH_LOG_SCALE
    mask = np.isfinite(value) & (value != 0)
    return np.where(mask, value, 0.0).astype(np.float32), mask


def simo_read(arr: np.ndarray, mode: str, size: tuple[int, int] = SIMO_SIZE) -> np.ndarray:
    """A PNG's pixels (``arr``, PIL ``mode``) as the SIMO loader's ``process_image`` makes them: read as
    torchvision's ``to_tensor`` / ``from_numpy`` reads them, resized to ``size`` by torchvision's
    antialiased bilinear ``resize`` (an integer result rounded, except int16 which is truncated, as
    torchvision casts back). Returns HxW (grey) or HxWx3 (RGB, floats in [0, 1])."""
    import torch.nn.functional as F

    if arr.ndim == 3:  # RGB: to_tensor -> float in [0, 1]
        chw = torch.from_numpy(np.ascontiguousarray(arr[..., :3].transpose(2, 0, 1))).float() / 255.0
    elif mode == "L":  # grey 8-bit: torch.from_numpy, uint8
        chw = torch.from_numpy(np.ascontiguousarray(arr))[None]
    else:  # 16-bit: to_tensor reads "I;16" as int16 (65535 -> -1) and "I" as int32
        dtype = np.int32 if mode == "I" else np.int16
        chw = torch.from_numpy(np.ascontiguousarray(arr).astype(dtype))[None]
    out_dtype = chw.dtype
    img = chw[None].float() if out_dtype != torch.float32 else chw[None]
    img = F.interpolate(img, size=list(size), mode="bilinear", align_corners=False, antialias=True)[0]
    if out_dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        img = torch.round(img)
    out = img.to(out_dtype).numpy()
    return out.transpose(1, 2, 0) if out.shape[0] == 3 else out[0]


def decode_rescaled(raw: np.ndarray, max_value: float) -> np.ndarray:
    """SIMO keypoints / edges target: ``raw`` clipped to ``[0, max_value]`` and mapped linearly to [-1, 1]."""
    clipped = np.clip(raw.astype(np.float64), 0.0, max_value)
    return (2.0 * clipped / max_value - 1.0).astype(np.float32)


def decode_segment_semantic_simo(raw: np.ndarray, path: str = "<array>") -> tuple[np.ndarray, np.ndarray]:
    """SIMO semseg: the 18 raw classes 0..17 as stored, class 0 (uncertain) masked out."""
    raw = raw.astype(np.int64)
    bad = raw > len(SEMSEG_CLASSES)
    if bad.any():
        values = sorted({int(v) for v in np.unique(raw[bad])})[:10]
        raise ValueError(f"{path}: segment_semantic ids must be in 0..{len(SEMSEG_CLASSES)}, found {values}")
    return raw, raw != 0


def _load_target(
    task: str,
    path: str,
    normal_signs: Sequence[float],
    protocol: str = "default",
    simo_size: tuple[int, int] = SIMO_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """(target array, valid mask) for one of our task names from its Taskonomy file; under ``"simo"``
    the pixels are read and resized as the SIMO loader does (:func:`simo_read`) before decoding."""
    arr, mode = _read_png(path)
    simo = protocol == "simo"
    if task == "normal":
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise ValueError(
                f"{path}: normal must be an 8-bit RGB PNG, got shape {arr.shape}, dtype {arr.dtype}"
            )
        return decode_normal(simo_read(arr, mode, simo_size) * 255.0 if simo else arr, normal_signs)
    arr1 = _single_channel(arr, path)
    if task == "depth":
        if not _is_16bit(mode, arr1):
            raise ValueError(f"{path}: depth_zbuffer must be a 16-bit PNG, got PIL mode {mode!r}")
        if arr1.min() < 0 or arr1.max() > 65535:
            raise ValueError(f"{path}: depth values outside the 16-bit range")
        return decode_depth_simo(simo_read(arr1, mode, simo_size)) if simo else decode_depth_zbuffer(arr1)
    if simo:
        arr1 = simo_read(arr1, mode, simo_size)
    if task == "semseg":
        if simo:
            return decode_segment_semantic_simo(arr1, path)
        label = decode_segment_semantic(arr1, path)
        return label, label != IGNORE_INDEX
    if task in ("keypoints2d", "edge") and simo:
        value = decode_rescaled(arr1, SIMO_KEYPOINTS_MAX if task == "keypoints2d" else SIMO_EDGE_MAX)
        return value, np.ones(value.shape, dtype=bool)
    if task in ("keypoints2d", "edge"):
        value = decode_unit_16bit(arr1, _is_16bit(mode, arr1))
        return value, np.ones(value.shape, dtype=bool)
    raise KeyError(f"no file decoder for task {task!r}")


def load_mask_valid(path: str, protocol: str, simo_size: tuple[int, int] = SIMO_SIZE) -> np.ndarray:
    """A view's ``mask_valid`` file as a bool mask (non-zero = valid); under ``"simo"`` read and resized as
    the SIMO loader does (:func:`simo_read`, then ``.bool()``)."""
    arr, mode = _read_png(path)
    arr1 = _single_channel(arr, path)
    return (simo_read(arr1, mode, simo_size) if protocol == "simo" else arr1) != 0


# ----------------------------------------------------------------------------------------------- dataset
def canonical_task(name: str) -> str:
    """Our task name for ``name`` (ours or the Taskonomy one); ValueError naming it otherwise."""
    if name in _TASKS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = sorted(set(_TASKS) | set(_ALIASES))
    raise ValueError(f"taskonomy: unknown task {name!r}; known: {', '.join(known)}")


def _list_views(folder: str, domains: Sequence[str]) -> dict[tuple[int, int], str]:
    """(point, view) -> file path for the release-named PNGs of ``domains`` in ``folder``."""
    found: dict[tuple[int, int], str] = {}
    for name in sorted(os.listdir(folder)):
        m = _FILE_RE.match(name)
        if m is None or m.group(3) not in domains:
            continue
        found.setdefault((int(m.group(1)), int(m.group(2))), os.path.join(folder, name))
    return found


def _candidate_dirs(root: str, names: Sequence[str], building: str, layout: str) -> list[str]:
    """Folders that may hold the files of folder ``names`` of ``building`` under ``layout``, in order."""
    dirs = []
    for name in names:
        if layout == "omnidata":
            dirs.append(os.path.join(root, name, "taskonomy", building))
        elif layout == "building":
            dirs.append(os.path.join(root, building, name))
        elif layout == "task_building":
            dirs.append(os.path.join(root, name, building))
        else:
            outer = os.path.join(root, f"{building}_{name}")
            dirs += [os.path.join(outer, name), outer]
    return dirs


def _find_dir(root: str, names: Sequence[str], building: str, layout: str) -> str | None:
    """The first existing folder of :func:`_candidate_dirs`, or None."""
    for d in _candidate_dirs(root, names, building, layout):
        if os.path.isdir(d):
            return d
    return None


def detect_layout(root: str, buildings: Sequence[str]) -> str:
    """The first of :data:`LAYOUTS` under which some building has an rgb folder; FileNotFoundError if none."""
    for layout in LAYOUTS:
        for building in buildings:
            if any(os.path.isdir(d) for d in _candidate_dirs(root, _RGB_NAMES, building, layout)):
                return layout
    looked = [_candidate_dirs(root, _RGB_NAMES, buildings[0], lay)[0] for lay in LAYOUTS]
    raise FileNotFoundError(
        f"taskonomy: no rgb folder for any of buildings {buildings} under {root}; looked for e.g. {looked}"
    )


def _task_views(
    root: str, layout: str, building: str, tasks: Sequence[str]
) -> dict[str, tuple[str, dict[tuple[int, int], str]]]:
    """``{task: (folder, {(point, view): file})}`` of ``building`` for every task that reads a file."""
    per_task: dict[str, tuple[str, dict[tuple[int, int], str]]] = {}
    for task in tasks:
        if task == "autoencoding":
            continue
        tk_name, folder_names = _TASKS[task]
        tdir = _find_dir(root, folder_names, building, layout)
        if tdir is None:
            expected = _candidate_dirs(root, folder_names, building, layout)[0]
            raise FileNotFoundError(
                f"taskonomy: {tk_name} folder of building {building!r} not found: {expected}"
            )
        per_task[task] = (tdir, _list_views(tdir, folder_names))
    return per_task


def _first_views(rgb: dict[tuple[int, int], str], per_building: int | None) -> list[tuple[int, int]]:
    """The rgb views to keep: all in (point, view) order, or the first ``per_building`` in file-name
    (string) order, as the SIMO loader takes them."""
    if per_building is None:
        return sorted(rgb)
    return sorted(rgb, key=lambda k: os.path.basename(rgb[k]))[:per_building]


def _resolve_buildings(
    protocol: str, split: str, buildings: Sequence[str] | None, per_building: int | None
) -> tuple[list[str], int | None]:
    """``(buildings, per_building)``: the split's buildings of the protocol's table unless given, and the
    SIMO per-building count for ``"simo"`` unless given; ValueError naming a bad split or value."""
    table = SIMO_SPLITS if protocol == "simo" else TINY_SPLITS
    if per_building is None and protocol == "simo":
        if split not in SIMO_PER_BUILDING:
            raise ValueError(f"taskonomy: unknown split {split!r}; expected one of {sorted(SIMO_SPLITS)}")
        per_building = SIMO_PER_BUILDING[split]
    if per_building is not None and per_building < 1:
        raise ValueError(f"taskonomy: per_building must be >= 1, got {per_building}")
    if buildings is None:
        if split not in table:
            raise ValueError(f"taskonomy: unknown split {split!r}; expected one of {sorted(table)}")
        buildings = table[split]
    elif isinstance(buildings, str) or len(buildings) == 0:
        raise ValueError(f"taskonomy: buildings must be a non-empty list of names, got {buildings!r}")
    return [str(b) for b in buildings], per_building


def _resolve_tasks(
    tasks: Sequence[str] | None, protocol: str
) -> tuple[list[str], dict[str, TaskSpec], tuple[str, ...]]:
    """``(tasks, task_specs, class_names)``: our task names (aliases resolved, duplicates dropped), their
    specs and the semseg class names under ``protocol`` (SIMO keeps the 18 raw classes, 0 = uncertain)."""
    names = list(_TASKS) if tasks is None else [canonical_task(t) for t in tasks]
    if len(names) == 0:
        raise ValueError("taskonomy: tasks must not be empty")
    tasks = list(dict.fromkeys(names))
    specs = dict(_TASK_SPECS)
    if protocol == "simo":  # the 18 raw classes, class 0 (uncertain) masked
        specs["semseg"] = segmentation("semseg", len(SEMSEG_CLASSES) + 1)
    class_names = ("uncertain",) + SEMSEG_CLASSES if protocol == "simo" else SEMSEG_CLASSES
    return tasks, {t: specs[t] for t in tasks}, class_names


def _with_mask_valid(
    task: str, mask: np.ndarray, valid: np.ndarray | None, value: np.ndarray, protocol: str
) -> np.ndarray:
    """``task``'s mask given the view's ``mask_valid`` (None: no file): ``"default"`` narrows depth's
    mask with it; ``"simo"`` makes it the mask of depth, keypoints2d and edge (their abs-error metric's
    ``img_metas["mask"]``), finite values only."""
    if valid is None:
        return mask
    if valid.shape != mask.shape:
        raise ValueError(f"taskonomy: mask_valid is {valid.shape[:2]} but {task} is {mask.shape[:2]}")
    if protocol == "simo" and task in ("depth", "keypoints2d", "edge"):
        return valid & np.isfinite(value)
    if task == "depth":
        return mask & valid
    return mask


def _check_normal_signs(normal_signs: Sequence[float]) -> tuple[float, float, float]:
    if len(normal_signs) != 3 or any(s not in (-1, 1) for s in normal_signs):
        raise ValueError(f"taskonomy: normal_signs must be three of +-1, got {normal_signs!r}")
    return tuple(float(s) for s in normal_signs)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    """``size`` as (H, W) of positive integers; ValueError naming it otherwise."""
    if len(size) != 2 or any(int(v) != v or v < 1 for v in size):
        raise ValueError(f"taskonomy: simo_size must be (H, W) with positive integers, got {size!r}")
    return int(size[0]), int(size[1])


@DATASETS.register("taskonomy")
class TaskonomyDataset(Dataset):
    """Taskonomy views of a building split; see the module docstring for layouts and encodings.

    Args:
        root: dataset root (layout detected unless ``layout`` is given).
        split: "train", "val" or "test" of the tiny partition (``protocol="default"``) or of
            :data:`SIMO_SPLITS` (``"simo"``); ignored when ``buildings`` is given.
        tasks: our task names (or Taskonomy aliases); default all six.
        transform: callable on the dict of numpy arrays (``JointTransform`` interface) or None.
        buildings: explicit building list overriding the split.
        layout: "auto", "omnidata", "building", "building_task" or "task_building".
        strict: raise on an rgb view with a missing task file instead of skipping (and counting) it;
            default: True for ``"simo"``, False for ``"default"``.
        skip_missing_buildings: skip (and log) buildings without an rgb folder instead of raising.
        normal_signs: per-axis signs from the stored normal axes to ours (see :data:`NORMAL_SIGNS`).
        protocol: "default" (release encodings, all views) or "simo" (the SIMO paper's subset and encodings).
        per_building: the first N rgb files of each building (file-name order); default: all for
            ``"default"``, :data:`SIMO_PER_BUILDING` of the split for ``"simo"``.
        simo_size: under ``"simo"``, the size files are resized to before encoding (:data:`SIMO_SIZE`).
    """

    #: the training augmentation a protocol uses here instead of its own: the SIMO loader only flips
    #: Taskonomy views (``augment=True``: no scale / crop), after resizing them to :data:`SIMO_SIZE`
    protocol_augmentation: dict[str, str] = {"simo": "resize_flip"}

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
        *,
        buildings: Sequence[str] | None = None,
        layout: str = "auto",
        strict: bool | None = None,
        skip_missing_buildings: bool = False,
        normal_signs: Sequence[float] = NORMAL_SIGNS,
        protocol: str = "default",
        per_building: int | None = None,
        simo_size: tuple[int, int] = SIMO_SIZE,
    ) -> None:
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"taskonomy root folder not found: {self.root}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"taskonomy: unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
        self.protocol, self.simo_size = protocol, _check_size(simo_size)
        self.buildings, self.per_building = _resolve_buildings(protocol, split, buildings, per_building)
        self.split = split
        self.tasks, self.task_specs, self.class_names = _resolve_tasks(tasks, protocol)
        self.transform = transform
        self.strict = protocol == "simo" if strict is None else strict
        self.normal_signs = _check_normal_signs(normal_signs)
        if layout != "auto" and layout not in LAYOUTS:
            raise ValueError(f"taskonomy: unknown layout {layout!r}; expected 'auto' or one of {LAYOUTS}")
        self.layout = detect_layout(self.root, self.buildings) if layout == "auto" else layout

        self.samples: list[tuple[str, int, int]] = []
        self._paths: list[dict[str, str]] = []
        self.skipped: dict[str, int] = {t: 0 for t in self.tasks if t != "autoencoding"}
        self.missing_buildings: list[str] = []
        for building in self.buildings:
            self._index_building(building, skip_missing_buildings)
        self._report_index()

    # ------------------------------------------------------------------------------------------- index
    def _index_building(self, building: str, skip_missing: bool) -> None:
        """Add the views of ``building`` that have every task file (count or raise on the others)."""
        rgb_dir = _find_dir(self.root, _RGB_NAMES, building, self.layout)
        if rgb_dir is None:
            expected = _candidate_dirs(self.root, _RGB_NAMES, building, self.layout)[0]
            if skip_missing:
                logger.warning(
                    "taskonomy: skipping building %r, rgb folder not found: %s", building, expected
                )
                self.missing_buildings.append(building)
                return
            raise FileNotFoundError(f"taskonomy: rgb folder of building {building!r} not found: {expected}")
        rgb = _list_views(rgb_dir, _RGB_NAMES)
        per_task = _task_views(self.root, self.layout, building, self.tasks)
        mask_dir = _find_dir(self.root, ("mask_valid",), building, self.layout)
        masks = _list_views(mask_dir, MASK_VALID_DOMAINS) if mask_dir else {}
        for key in _first_views(rgb, self.per_building):
            missing = [t for t, (_, files) in per_task.items() if key not in files]
            for task in missing:
                tdir = per_task[task][0]
                expected = os.path.join(tdir, f"point_{key[0]}_view_{key[1]}_domain_{_TASKS[task][0]}.png")
                if self.strict:
                    raise FileNotFoundError(f"taskonomy: missing {_TASKS[task][0]} file {expected}")
                self.skipped[task] += 1
            if missing:
                continue
            self.samples.append((building, key[0], key[1]))
            paths = {"image": rgb[key]} | {t: files[key] for t, (_, files) in per_task.items()}
            self._paths.append(paths | ({"mask_valid": masks[key]} if key in masks else {}))

    def _report_index(self) -> None:
        """Log the views skipped for missing task files; ValueError when none is left."""
        n_skipped = sum(self.skipped.values())
        if n_skipped:
            logger.warning(
                "taskonomy %s: skipped rgb views lacking task files (per task: %s); kept %d",
                self.split,
                {k: v for k, v in self.skipped.items() if v},
                len(self.samples),
            )
        if not self.samples:
            raise ValueError(
                f"taskonomy: no samples with rgb and all of {self.tasks} under {self.root} "
                f"(layout {self.layout!r}, buildings {self.buildings})"
            )

    # ------------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.samples)

    def load_arrays(self, index: int) -> dict[str, np.ndarray]:
        """Decoded numpy arrays of sample ``index`` before any transform (HWC image, HxW targets)."""
        paths = self._paths[index]
        image = load_rgb(paths["image"])
        if self.protocol == "simo":  # to_tensor, then resized as every SIMO file is
            image = simo_read(np.round(image * 255.0).astype(np.uint8), "RGB", self.simo_size)
        arrays: dict[str, np.ndarray] = {"image": image}
        mask_file = paths.get("mask_valid")
        valid = load_mask_valid(mask_file, self.protocol, self.simo_size) if mask_file else None
        for task in self.tasks:
            if task == "autoencoding":
                continue
            value, mask = _load_target(task, paths[task], self.normal_signs, self.protocol, self.simo_size)
            if value.shape[:2] != image.shape[:2]:
                raise ValueError(
                    f"{paths[task]}: size {value.shape[1]}x{value.shape[0]} differs from its rgb "
                    f"{paths['image']} ({image.shape[1]}x{image.shape[0]})"
                )
            arrays[task] = value
            arrays[f"{task}_mask"] = _with_mask_valid(task, mask, valid, value, self.protocol)
        return arrays

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"taskonomy: index {index} out of range for {len(self)} samples")
        from simo_merge.datasets.transforms import finalize_sample  # shared tail: transform, to_sample

        sample = finalize_sample(self.load_arrays(index), self.tasks, transform=self.transform)
        if self.protocol == "simo" and "autoencoding" in sample:  # SIMO's target: the [-1, 1] input
            sample["autoencoding"] = 2.0 * sample["autoencoding"] - 1.0
        return sample
