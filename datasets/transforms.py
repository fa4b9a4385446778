"""Joint (image + dense targets) augmentation with albumentations, and conversion to the sample contract.

Every loader builds its numpy sample ``{"image": HxWx3 float32 in [0, 1], task: array, f"{task}_mask": HxW
bool}``, optionally passes it through :class:`JointTransform`, then calls :func:`to_sample` to get the tensor
dict described in :mod:`simo_merge.tasks`.

Interpolation: bilinear for the image and continuous targets (depth, disparity, edge, keypoints2d), nearest
(pixel-centre exact) for labels, masks and normals; normals are renormalised after resampling and their x
component is negated when a horizontal flip happened. A continuous target that comes with a mask is
resampled as ``interp(value * mask) / interp(mask)`` so invalid pixels (e.g. depth 0) never bleed into valid
ones; its new mask is the nearest-resampled mask where some valid source pixel contributed.

Two training pipelines, chosen by ``augmentation`` (the protocol's, :mod:`simo_merge.protocols`):
``"resize_flip"`` (ours: resize to ``size`` or the ``scale``/``crop`` options above, h-flip) and
``"scale_crop_flip"``, the SIMO code's ``DataTransform`` (d23845jg/simo_merging
``training/create_dataset.py`` lines 16-103): a scale drawn from :data:`SIMO_SCALES`, resize to
``int(h * s) x int(w * s)`` (torch bilinear for the image, torch nearest for every target, depth included),
pad right / bottom to ``size`` where smaller (image: reflect; targets: the padding is invalid, which is
what their fill values -1 / 0 mean to their losses), a random ``size`` crop, h-flip with probability 0.5
(normals' x negated); depth divided by ``s``, disparity multiplied.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from albumentations.core.transforms_interface import DualTransform

from simo_merge.tasks import IGNORE_INDEX

#: Targets resampled bilinearly (one channel, HxW).
CONTINUOUS_TASKS: tuple[str, ...] = ("depth", "disparity", "edge", "keypoints2d")
#: Targets resampled with nearest neighbour.
LABEL_TASKS: tuple[str, ...] = ("semseg", "part_seg")
VECTOR_TASKS: tuple[str, ...] = ("normal",)
SPATIAL_TASKS: tuple[str, ...] = LABEL_TASKS + CONTINUOUS_TASKS + VECTOR_TASKS
#: Targets derived from the (transformed) image by :func:`to_sample`.
DERIVED_TASKS: tuple[str, ...] = ("autoencoding",)
ALL_TASKS: tuple[str, ...] = SPATIAL_TASKS + DERIVED_TASKS

#: the SIMO code's scale set (``DataTransform(..., scales=[1.0, 1.2, 1.5])``, create_dataset.py l. 150)
SIMO_SCALES: tuple[float, ...] = (1.0, 1.2, 1.5)
#: :class:`JointTransform`'s ``augmentation`` choices (``Protocol.augmentation``)
AUGMENTATIONS: tuple[str, ...] = ("resize_flip", "scale_crop_flip")

_VALID = "_valid"  # internal: 1 where the pixel comes from the input (0 in padding)
_NEAREST = cv2.INTER_NEAREST_EXACT
_LINEAR = cv2.INTER_LINEAR
_EPS = 1e-6


def _num_key(task: str) -> str:
    return f"_num_{task}"


def _den_key(task: str) -> str:
    return f"_den_{task}"


def _additional_targets(nearest_continuous: bool = False) -> dict[str, str]:
    """albumentations target kinds: "image" targets are resampled bilinearly, "mask" ones by nearest
    (continuous targets too when ``nearest_continuous``, as SIMO resizes depth / disparity)."""
    continuous = "mask" if nearest_continuous else "image"
    targets: dict[str, str] = {_VALID: "mask"}
    for task in LABEL_TASKS + VECTOR_TASKS:
        targets[task] = "mask"
    for task in CONTINUOUS_TASKS:
        targets[task] = continuous
        targets[_num_key(task)] = continuous
        targets[_den_key(task)] = continuous
    for task in ALL_TASKS:
        targets[f"{task}_mask"] = "mask"
    return targets


class SimoScale(DualTransform):
    """SIMO's random scale: ``s`` from ``scales``, resize to ``int(h * s) x int(w * s)`` with torch's
    bilinear (image; torchvision ``resize`` on a tensor, antialiased) or nearest (every other target)
    interpolation, as ``DataTransform`` does (create_dataset.py lines 23-50)."""

    def __init__(self, scales: Sequence[float] = SIMO_SCALES, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.scales = tuple(float(v) for v in scales)

    def get_params(self) -> dict[str, float]:
        return {"scale": self.py_random.choice(self.scales)}

    def apply(self, img: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        return _torch_resize(img, scale, "bilinear")

    def apply_to_mask(self, mask: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        return _torch_resize(mask, scale, "nearest")

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scales",)


def _torch_resize(array: np.ndarray, scale: float, mode: str) -> np.ndarray:
    """``array`` (HxW or HxWxC) resized to ``int(h * scale) x int(w * scale)`` by ``F.interpolate``."""
    h, w = array.shape[:2]
    out_hw = (int(h * scale), int(w * scale))
    if out_hw == (h, w):
        return array
    chw = array[..., None] if array.ndim == 2 else array
    t = torch.from_numpy(np.ascontiguousarray(chw.transpose(2, 0, 1)))[None]
    if mode == "bilinear":
        out = F.interpolate(t.float(), size=out_hw, mode="bilinear", align_corners=False, antialias=True)
    else:  # nearest on float64 is exact for every integer label
        out = F.interpolate(t.double(), size=out_hw, mode="nearest")
    res = out[0].numpy().transpose(1, 2, 0).astype(array.dtype)
    return res[..., 0] if array.ndim == 2 else res


class PadBottomRight(DualTransform):
    """Pad right and bottom up to ``(min_height, min_width)``: the image by reflection, every other
    target with 0 (the validity map's 0 marks the padding invalid), as ``DataTransform`` pads
    (create_dataset.py lines 52-79: ``padding=(0, 0, right_pad, bottom_pad)``, image ``"reflect"``)."""

    def __init__(self, min_height: int, min_width: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.min_height, self.min_width = int(min_height), int(min_width)

    def _pads(self, array: np.ndarray) -> tuple[int, int]:
        h, w = array.shape[:2]
        return max(self.min_height - h, 0), max(self.min_width - w, 0)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        bottom, right = self._pads(img)
        if bottom == right == 0:
            return img
        return cv2.copyMakeBorder(img, 0, bottom, 0, right, cv2.BORDER_REFLECT_101)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        bottom, right = self._pads(mask)
        widths = ((0, bottom), (0, right)) + ((0, 0),) * (mask.ndim - 2)
        return np.pad(mask, widths, mode="constant", constant_values=0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_height", "min_width")


class JointTransform:
    """Resize / random-scale-crop / horizontal-flip an image and its dense targets together.

    Args:
        size: output ``(H, W)``; None keeps the input size.
        train: random augmentation (scale, crop, flip) when True; otherwise only a resize to ``size``.
        augmentation: the training pipeline, one of :data:`AUGMENTATIONS`: ``"resize_flip"`` (ours, shaped
            by ``hflip``/``scale``/``crop``) or ``"scale_crop_flip"`` (SIMO's ``DataTransform``, see the
            module docstring; in train mode it needs ``size`` and ignores ``scale``/``crop``/``flip_prob``).
        hflip: in train mode, flip horizontally with probability ``flip_prob`` (0.5).
        scale: in train mode, resize by a factor drawn uniformly from this range before cropping; needs
            ``crop=True`` (otherwise the final resize would undo it).
        crop: in train mode, random-crop to ``size`` (or the input size), zero-padding where the scaled
            image is smaller; padded pixels are marked invalid in every mask (and 255 in ``semseg``).
            Without crop, train mode resizes to ``size``.
        seed: seed of the augmentation random state (None: nondeterministic). Inside a DataLoader worker
            the state is reseeded once per worker from ``seed`` and the worker's torch seed, so workers
            do not repeat each other.
        scale_depth: after a random scale ``s``, divide depth and multiply disparity by ``s`` (a zoom
            mimics a closer camera, as in MTAN / Auto-Lambda's RandomScaleCrop). Plain resizes never change
            target values.
        flip_prob: probability of the horizontal flip when ``hflip`` (1.0 forces it, e.g. in tests).
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        train: bool = False,
        hflip: bool = True,
        scale: tuple[float, float] = (1.0, 1.0),
        crop: bool = False,
        seed: int | None = None,
        scale_depth: bool = True,
        flip_prob: float = 0.5,
        augmentation: str = "resize_flip",
    ) -> None:
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
        if augmentation == "scale_crop_flip" and train and size is None:
            raise ValueError("augmentation 'scale_crop_flip' crops to size: give size=(H, W)")
        if size is not None:
            if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
                raise ValueError(f"size must be (H, W) with positive integers, got {size!r}")
            size = (int(size[0]), int(size[1]))
        if len(scale) != 2 or not (0 < scale[0] <= scale[1]):
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale!r}")
        if train and tuple(scale) != (1.0, 1.0) and not crop:
            raise ValueError(
                f"scale={tuple(scale)} needs crop=True: without a crop the resize undoes the scaling"
            )
        self.size = size
        self.train = train
        self.hflip = hflip
        self.scale = (float(scale[0]), float(scale[1]))
        self.crop = crop
        self.seed = seed
        self.scale_depth = scale_depth
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.flip_prob = float(flip_prob)
        self.augmentation = augmentation
        self._rng = np.random.default_rng(seed)
        self._py_rng = random.Random(seed)
        self._rng_owner: tuple[int, int] | None = None
        self._composes: dict[tuple[int, int], A.Compose] = {}

    def __repr__(self) -> str:
        return (
            f"JointTransform(size={self.size}, train={self.train}, hflip={self.hflip}, scale={self.scale}, "
            f"crop={self.crop}, seed={self.seed}, scale_depth={self.scale_depth}, "
            f"flip_prob={self.flip_prob}, augmentation={self.augmentation!r})"
        )

    # -- random state -------------------------------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Restart the augmentation random state from ``seed`` (e.g. at the start of a training stage)."""
        self.seed = seed
        self._rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._py_rng.seed(seed)
        self._rng_owner = None

    def _maybe_reseed_for_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return
        owner = (os.getpid(), int(info.seed))
        if self._rng_owner == owner:
            return
        self._rng_owner = owner
        entropy = [int(info.seed) % (2**63)] + ([] if self.seed is None else [int(self.seed)])
        ss = np.random.SeedSequence(entropy)
        self._rng.bit_generator.state = np.random.default_rng(ss).bit_generator.state
        self._py_rng.seed(int(ss.generate_state(1)[0]))

    # -- pipeline -----------------------------------------------------------------------------------
    def _compose_for(self, hw: tuple[int, int]) -> A.Compose:
        """The albumentations pipeline for inputs of size ``hw`` (built once per output size)."""
        out_hw = self.size or hw
        compose = self._composes.get(out_hw)
        if compose is None:
            ops = _pipeline_ops(self, out_hw)
            simo = self.train and self.augmentation == "scale_crop_flip"
            compose = A.Compose(ops, additional_targets=_additional_targets(simo), save_applied_params=True)
            compose.set_random_state(self._rng, self._py_rng)
            self._composes[out_hw] = compose
        return compose

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Transform ``arrays`` jointly; returns the same keys (see the module docstring for the rules)."""
        return self.apply(arrays)[0]

    def apply(self, arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Like calling the transform, and also returns the applied ops' parameters by op name (e.g.
        ``{"SimoScale": {"scale": 1.2, ...}, "RandomCrop": {"crop_coords": ...}}``): what was drawn."""
        data = validate_arrays(arrays)
        self._maybe_reseed_for_worker()
        compose = self._compose_for(data["image"].shape[:2])
        inputs = _pipeline_inputs(data)
        out = compose(**inputs)
        applied = {name: params for name, params in out.get("applied_transforms", [])}
        result = _pipeline_outputs(data, inputs, out, flipped="HorizontalFlip" in applied)
        for op in ("RandomScale", "SimoScale"):
            if self.scale_depth and op in applied:
                _rescale_depth(result, float(applied[op]["scale"]))
        return result, applied


def _pipeline_ops(t: JointTransform, out_hw: tuple[int, int]) -> list[Any]:
    """The albumentations ops of transform ``t`` for output size ``out_hw``, in the order they run."""
    if not t.train:
        return [_resize(out_hw)] if t.size is not None else []
    if t.augmentation == "scale_crop_flip":  # SIMO's DataTransform, in its order
        return [
            SimoScale(SIMO_SCALES),
            PadBottomRight(*out_hw),
            A.RandomCrop(height=out_hw[0], width=out_hw[1]),
            A.HorizontalFlip(p=0.5),
        ]
    ops: list[Any] = []
    if t.scale != (1.0, 1.0):
        limit = (t.scale[0] - 1.0, t.scale[1] - 1.0)
        ops.append(
            A.RandomScale(scale_limit=limit, interpolation=_LINEAR, mask_interpolation=_NEAREST, p=1.0)
        )
    if t.crop:
        ops.append(
            A.RandomCrop(
                height=out_hw[0],
                width=out_hw[1],
                pad_if_needed=True,
                pad_position="random",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0.0,
                fill_mask=0.0,
            )
        )
    elif t.size is not None:
        ops.append(_resize(out_hw))
    if t.hflip:
        ops.append(A.HorizontalFlip(p=t.flip_prob))
    return ops


def _resize(out_hw: tuple[int, int]) -> A.Resize:
    return A.Resize(*out_hw, interpolation=_LINEAR, mask_interpolation=_NEAREST)


def _pipeline_inputs(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays handed to albumentations: masks as uint8, masked continuous targets as numerator and
    denominator, labels as int32, plus the all-ones validity map that marks padding."""
    inputs: dict[str, np.ndarray] = {
        "image": data["image"],
        _VALID: np.ones(data["image"].shape[:2], np.uint8),
    }
    for key, value in data.items():
        if key == "image":
            continue
        if key.endswith("_mask"):
            inputs[key] = value.astype(np.uint8)
        elif key in CONTINUOUS_TASKS and f"{key}_mask" in data:
            m = data[f"{key}_mask"]
            inputs[_num_key(key)] = np.where(m, value, 0.0).astype(np.float32)
            inputs[_den_key(key)] = m.astype(np.float32)
        elif key in LABEL_TASKS:
            inputs[key] = value.astype(np.int32)
        else:
            inputs[key] = value.astype(np.float32)
    return inputs


def _pipeline_outputs(
    data: dict[str, np.ndarray], inputs: dict[str, np.ndarray], out: dict[str, Any], flipped: bool
) -> dict[str, np.ndarray]:
    """The transformed sample from albumentations' ``out``: masks first, then every target by its kind."""
    valid = out[_VALID].astype(bool)
    result: dict[str, np.ndarray] = {"image": np.clip(out["image"], 0.0, 1.0).astype(np.float32)}
    for key in data:
        if key.endswith("_mask"):
            result[key] = out[key].astype(bool) & valid
    for key in data:
        if key == "image" or key.endswith("_mask"):
            continue
        if key in CONTINUOUS_TASKS and _num_key(key) in inputs:
            result[key] = _masked_continuous(out, key, result)
        elif key in LABEL_TASKS:
            result[key] = _label(out[key], valid, result.get(f"{key}_mask"))
        elif key in VECTOR_TASKS:
            result[key] = _vector(out[key], valid, flipped, result, f"{key}_mask")
        else:
            result[key] = np.where(valid, out[key], 0.0).astype(np.float32)
    return result


def _masked_continuous(out: dict[str, Any], key: str, result: dict[str, np.ndarray]) -> np.ndarray:
    """``interp(value * mask) / interp(mask)``; narrows ``result``'s mask to where some valid pixel fed in."""
    den = out[_den_key(key)]
    ok = den > _EPS
    value = np.where(ok, out[_num_key(key)] / np.where(ok, den, 1.0), 0.0)
    result[f"{key}_mask"] &= ok
    return np.where(result[f"{key}_mask"], value, 0.0).astype(np.float32)


def _label(out: np.ndarray, valid: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """int64 labels with the ignore index in padding and wherever the (resampled) mask is False."""
    label = out.astype(np.int64)
    invalid = ~valid
    if mask is not None:
        invalid |= ~mask
    label[invalid] = IGNORE_INDEX
    return label


def _vector(
    out: np.ndarray, valid: np.ndarray, flipped: bool, result: dict[str, np.ndarray], mask_key: str
) -> np.ndarray:
    """Renormalised normals (x negated after a flip), 0 where invalid; narrows ``result[mask_key]``."""
    vec = out.astype(np.float32)
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    ok = (norm[..., 0] > _EPS) & valid
    vec = np.where(ok[..., None], vec / np.maximum(norm, _EPS), 0.0).astype(np.float32)
    if flipped:
        vec[..., 0] = np.where(ok, -vec[..., 0], 0.0)
    if mask_key in result:
        result[mask_key] &= ok
    return vec


def _rescale_depth(result: dict[str, np.ndarray], s: float) -> None:
    """After a zoom by ``s``: depth divided by ``s``, disparity multiplied (a closer camera)."""
    if "depth" in result:
        result["depth"] = (result["depth"] / s).astype(np.float32)
    if "disparity" in result:
        result["disparity"] = (result["disparity"] * s).astype(np.float32)


def validate_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check keys, shapes and dtypes of a numpy sample; returns a normalised shallow copy.

    ``image`` may be uint8 (scaled to [0, 1]) or float; one-channel targets may be HxW or HxWx1.
    """
    if "image" not in arrays:
        raise KeyError(f"sample has no 'image' key; keys: {sorted(arrays)}")
    image = np.asarray(arrays["image"])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"'image' must be HxWx3, got shape {image.shape}")
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    hw = image.shape[:2]
    known_masks = {f"{t}_mask" for t in ALL_TASKS}
    data: dict[str, np.ndarray] = {"image": image}
    for key, value in arrays.items():
        if key == "image":
            continue
        value = np.asarray(value)
        if key in DERIVED_TASKS:
            raise ValueError(f"{key!r} is derived from the image by to_sample; do not pass it as an array")
        if key in known_masks:
            if value.shape != hw:
                raise ValueError(f"{key!r} must have shape {hw}, got {value.shape}")
            data[key] = value.astype(bool)
        elif key in LABEL_TASKS or key in CONTINUOUS_TASKS:
            if value.ndim == 3 and value.shape[2] == 1:
                value = value[..., 0]
            if value.shape != hw:
                raise ValueError(f"{key!r} must have shape {hw} (or {hw + (1,)}), got {value.shape}")
            data[key] = value.astype(np.int64) if key in LABEL_TASKS else value.astype(np.float32)
        elif key in VECTOR_TASKS:
            if value.shape != hw + (3,):
                raise ValueError(f"{key!r} must have shape {hw + (3,)}, got {value.shape}")
            data[key] = value.astype(np.float32)
        else:
            raise ValueError(
                f"unknown sample key {key!r}; known: image, {', '.join(SPATIAL_TASKS)} and <task>_mask"
            )
    return data


def default_mask(task: str, value: np.ndarray) -> np.ndarray:
    """Validity of a target when the loader gave no mask: labelled / positive finite / non-zero normal."""
    if task in LABEL_TASKS:
        return (value >= 0) & (value != IGNORE_INDEX)
    if task in ("depth", "disparity"):
        return np.isfinite(value) & (value > 0)
    if task in CONTINUOUS_TASKS:
        return np.isfinite(value)
    if task in VECTOR_TASKS:
        return np.isfinite(value).all(axis=-1) & (np.linalg.norm(np.nan_to_num(value), axis=-1) > 0)
    raise ValueError(f"no default mask for task {task!r}")


def _consistent(task: str, value: np.ndarray) -> np.ndarray:
    """What a given mask is intersected with: a label must not be the ignore index, values must be finite,
    a normal must be non-zero. (A zero disparity, i.e. infinitely far, stays valid if the mask says so.)"""
    if task in LABEL_TASKS or task in VECTOR_TASKS:
        return default_mask(task, value)
    return np.isfinite(value)


def to_sample(arrays: Mapping[str, np.ndarray], tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """Convert a numpy sample to the tensor contract for ``tasks``.

    Returns ``image`` FloatTensor[3,H,W]; per task its target (``semseg`` LongTensor[H,W] with 255 where
    invalid, one-channel targets FloatTensor[1,H,W], ``normal`` FloatTensor[3,H,W], ``autoencoding`` a
    copy of the image) and ``f"{task}_mask"`` BoolTensor[H,W]. Invalid pixels of a target are set to 255
    (labels) or 0 (others). A missing mask is derived with :func:`default_mask`; a given one is trusted
    (intersected only with: label not 255, value finite, normal non-zero).
    """
    data = validate_arrays(arrays)
    image = data["image"]
    hw = image.shape[:2]
    sample: dict[str, torch.Tensor] = {
        "image": torch.from_numpy(np.ascontiguousarray(np.clip(image, 0.0, 1.0).transpose(2, 0, 1)))
    }
    for task in tasks:
        if task not in ALL_TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(ALL_TASKS)}")
        if task == "autoencoding":
            sample[task] = sample["image"].clone()
            sample[f"{task}_mask"] = torch.ones(hw, dtype=torch.bool)
            continue
        if task not in data:
            raise KeyError(f"sample has no array for task {task!r}; keys: {sorted(data)}")
        value = data[task]
        given = data.get(f"{task}_mask")
        mask = default_mask(task, value) if given is None else given & _consistent(task, value)
        if task in LABEL_TASKS:
            target = torch.from_numpy(np.where(mask, value, IGNORE_INDEX).astype(np.int64))
        elif task in VECTOR_TASKS:
            vec = np.where(mask[..., None], value, 0.0).astype(np.float32)
            target = torch.from_numpy(np.ascontiguousarray(vec.transpose(2, 0, 1)))
        else:
            target = torch.from_numpy(np.where(mask, value, 0.0).astype(np.float32)[None])
        sample[task] = target
        sample[f"{task}_mask"] = torch.from_numpy(np.ascontiguousarray(mask))
    return sample


def resolve_tasks(tasks: Sequence[str] | None, supported: Sequence[str], dataset: str) -> list[str]:
    """The task list a loader returns: ``supported`` when ``tasks`` is None, else ``tasks`` checked."""
    if tasks is None:
        return list(supported)
    if isinstance(tasks, str):
        raise TypeError(f"{dataset}: tasks must be a list of task names, got the string {tasks!r}")
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in supported]
    if unknown:
        raise ValueError(f"{dataset}: unsupported task(s) {unknown}; supported: {list(supported)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"{dataset}: duplicate task names in {tasks}")
    return tasks


def finalize_sample(
    arrays: Mapping[str, np.ndarray],
    tasks: Sequence[str],
    transform: Any = None,
    pre: Any = None,
) -> dict[str, torch.Tensor]:
    """Loader tail: optional ``pre`` (e.g. a fixed resize), the user ``transform``, then :func:`to_sample`."""
    if pre is not None:
        arrays = pre(arrays)
    if transform is not None:
        arrays = transform(arrays)
    return to_sample(arrays, tasks)


__all__ = [
    "ALL_TASKS",
    "CONTINUOUS_TASKS",
    "JointTransform",
    "default_mask",
    "finalize_sample",
    "resolve_tasks",
    "to_sample",
    "validate_arrays",
]
