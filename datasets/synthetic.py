"""``synthetic_scenes``: the built-in default dataset, procedurally generated rooms with exact dense labels.

Each sample is a closed room (floor, four walls, ceiling) holding 2-6 boxes, spheres and vertical cylinders
that rest on the floor, seen by a pinhole camera with jittered height, pitch, yaw, roll and field of view.
Semantic class, z-depth and camera-frame normals are computed exactly by ray casting (see
:mod:`simo_merge.datasets._raycast`); the RGB image is Lambertian shading (ambient + one or two point lights
with cast shadows) of procedural textures whose colours are drawn per instance from palettes shared by all
classes, so a network has to use shape, shading and context rather than colour.

Sample ``i`` of split ``s`` is a pure function of ``(seed, s, i, size)`` (and ``antialias``): it does not
depend on ``num_samples`` or on which other samples were generated. The three splits use disjoint seed
streams. By default the whole split is generated once into memory (a few seconds for 2000 64x64 frames); with
``cache_dir`` it is also written to an ``.npz`` file keyed by every generation parameter and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from simo_merge.datasets import DATASETS
from simo_merge.datasets import _raycast as rc
from simo_merge.datasets.transforms import to_sample
from simo_merge.io.atomic import atomic_path
from simo_merge.runtime import on_rank_zero
from simo_merge.tasks import IGNORE_INDEX, TaskSpec, normals, regression, segmentation

GENERATOR_VERSION = 1  # bump whenever the renderer or the scene sampler changes: invalidates disk caches
_STREAM_TAG = 0x51A7E5  # keeps these seed streams apart from other users of the same integer seed
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_SPLIT_SIZES = {"train": 2000, "val": 200, "test": 200}
SUPPORTED_TASKS = ("semseg", "depth", "normal", "edge", "autoencoding")
_ARRAY_KEYS = ("image", "semseg", "depth", "normal", "edge", "rotation", "position", "focal")


def _check_seed_split(seed: int, split: str) -> None:
    if split not in SPLIT_CODES:
        raise ValueError(f"synthetic_scenes: unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"synthetic_scenes: seed must be a non-negative integer, got {seed!r}")


def _rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the scene (resolution independent) and the pixel noise of one sample."""
    _check_seed_split(seed, split)
    if index < 0:
        raise IndexError(f"synthetic_scenes: sample index must be >= 0, got {index}")
    ss = np.random.SeedSequence([_STREAM_TAG, GENERATOR_VERSION, int(seed), SPLIT_CODES[split], int(index)])
    scene_seq, noise_seq = ss.spawn(2)
    return np.random.default_rng(scene_seq), np.random.default_rng(noise_seq)


def generate_scene(seed: int, split: str, index: int) -> rc.Scene:
    """The scene (room, camera, objects, lights) of sample ``index``; independent of the resolution."""
    return rc.sample_scene(_rngs(seed, split, index)[0])


def generate_sample(
    seed: int, split: str, index: int, size: tuple[int, int] = (64, 64), antialias: int = 1
) -> dict[str, np.ndarray]:
    """Render sample ``index`` of ``split`` at ``size`` = (H, W).

    Returns ``image`` (H,W,3 uint8), ``semseg`` (H,W uint8 class ids), ``depth`` (H,W float32 z-depth in
    metres), ``normal`` (H,W,3 float32 camera-frame unit normals facing the camera), ``edge`` (H,W uint8 0/1)
    and the camera: ``rotation`` (3,3 camera->world), ``position`` (3,) and ``focal`` (pixels; the principal
    point is the image centre, pixel centres at ``index + 0.5``).
    """
    scene_rng, noise_rng = _rngs(seed, split, index)
    scene = rc.sample_scene(scene_rng)
    h, w = size
    out = rc.render(scene, h, w, noise_rng, antialias=antialias)
    return {
        "image": out["image"],
        "semseg": out["semseg"].astype(np.uint8),
        "depth": out["depth"],
        "normal": out["normal"],
        "edge": out["edge"].astype(np.uint8),
        "rotation": scene.camera.rotation,
        "position": scene.camera.position,
        "focal": np.float64(scene.camera.focal(w)),
    }


def _generate_range(
    seed: int, split: str, start: int, stop: int, size: tuple[int, int], antialias: int
) -> dict:
    """Samples ``start..stop-1`` stacked into arrays (image and normals channel-first)."""
    n = stop - start
    h, w = size
    arrays = {
        "image": np.empty((n, 3, h, w), np.uint8),
        "semseg": np.empty((n, h, w), np.uint8),
        "depth": np.empty((n, h, w), np.float32),
        "normal": np.empty((n, 3, h, w), np.float32),
        "edge": np.empty((n, h, w), np.uint8),
        "rotation": np.empty((n, 3, 3), np.float64),
        "position": np.empty((n, 3), np.float64),
        "focal": np.empty((n,), np.float64),
    }
    for k in range(n):
        s = generate_sample(seed, split, start + k, size, antialias)
        for key in ("semseg", "depth", "edge", "rotation", "position", "focal"):
            arrays[key][k] = s[key]
        arrays["image"][k] = s["image"].transpose(2, 0, 1)
        arrays["normal"][k] = s["normal"].transpose(2, 0, 1)
    return arrays


def generate_split(
    seed: int,
    split: str,
    num_samples: int,
    size: tuple[int, int] = (64, 64),
    antialias: int = 1,
    num_workers: int = 0,
) -> dict[str, np.ndarray]:
    """All ``num_samples`` samples of ``split`` as stacked numpy arrays (optionally in worker processes)."""
    _check_seed_split(seed, split)
    if num_workers <= 0 or num_samples < 64:
        return _generate_range(seed, split, 0, num_samples, size, antialias)
    chunks = np.linspace(0, num_samples, num_workers * 4 + 1).astype(int)
    bounds = [(int(a), int(b)) for a, b in zip(chunks[:-1], chunks[1:], strict=True) if b > a]
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        jobs = [pool.submit(_generate_range, seed, split, a, b, size, antialias) for a, b in bounds]
        parts = [job.result() for job in jobs]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"synthetic_scenes: size must be (height, width), got {size!r}") from None
    if h < 2 or w < 2:
        raise ValueError(f"synthetic_scenes: size must be at least (2, 2), got {(h, w)}")
    return h, w


def _check_options(
    seed: int,
    split: str,
    tasks: Sequence[str] | None,
    num_samples: int | None,
    antialias: int,
    transform: object,
) -> tuple[list[str], int]:
    """``(tasks, num_samples)`` with their defaults, after checking every constructor argument that can be
    wrong on its own; ValueError naming the argument."""
    _check_seed_split(seed, split)
    tasks = list(SUPPORTED_TASKS) if tasks is None else list(tasks)
    for task in tasks:
        if task not in SUPPORTED_TASKS:
            raise ValueError(
                f"synthetic_scenes: unsupported task {task!r}; supported: {list(SUPPORTED_TASKS)}"
            )
    if num_samples is None:
        num_samples = DEFAULT_SPLIT_SIZES[split]
    if not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"synthetic_scenes: num_samples must be a positive integer, got {num_samples!r}")
    if not isinstance(antialias, (int, np.integer)) or antialias < 1:
        raise ValueError(f"synthetic_scenes: antialias must be an integer >= 1, got {antialias!r}")
    if transform is not None and not callable(transform):
        raise ValueError(f"synthetic_scenes: transform must be callable or None, got {transform!r}")
    return tasks, num_samples


def _task_specs(tasks: Sequence[str], num_classes: int) -> dict[str, TaskSpec]:
    specs = {
        "semseg": segmentation("semseg", num_classes),
        "depth": regression("depth", 1),
        "normal": normals("normal"),
        "edge": regression("edge", 1),
        "autoencoding": regression("autoencoding", 3),
    }
    return {t: spec for t, spec in specs.items() if t in tasks}


def _read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of the cache file ``path`` if it was written for ``key``; None (with a warning) when it
    cannot be read or belongs to other parameters."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                raise ValueError(f"key mismatch: {str(z['key'])}")
            return {k: z[k] for k in _ARRAY_KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        # stacklevel: here, _load_or_generate, __init__, then the code constructing the dataset
        warnings.warn(
            f"synthetic_scenes: ignoring unreadable cache {str(path)!r} ({err}); regenerating it",
            stacklevel=4,
        )
        return None


def _stored_sample(data: dict[str, torch.Tensor], index: int) -> dict[str, np.ndarray | None]:
    """Sample ``index`` of the stacked in-memory split as :func:`generate_sample` returns it (HWC)."""
    return {
        "image": data["image"][index].numpy().transpose(1, 2, 0),
        "semseg": data["semseg"][index].numpy() if "semseg" in data else None,
        "depth": data["depth"][index].numpy() if "depth" in data else None,
        "normal": data["normal"][index].numpy().transpose(1, 2, 0) if "normal" in data else None,
        "edge": data["edge"][index].numpy() if "edge" in data else None,
    }


def _transform_arrays(
    raw: dict[str, Any], tasks: Sequence[str], size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """A raw sample in the transform format: float [0, 1] image, int64 semseg, float maps, all-True masks."""
    out: dict[str, np.ndarray] = {"image": raw["image"].astype(np.float32) / np.float32(255.0)}
    h, w = size
    for task in tasks:
        if task == "autoencoding":
            continue
        value = raw[task]
        if task == "semseg":
            value = value.astype(np.int64)
        elif task == "edge":
            value = value.astype(np.float32)
        else:
            value = np.array(value, dtype=np.float32)
        out[task] = value
        out[f"{task}_mask"] = np.ones((h, w), dtype=bool)
    return out


def _tensor_item(
    data: dict[str, torch.Tensor], index: int, tasks: Sequence[str], size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Sample ``index`` straight from the in-memory tensors (no transform): what ``to_sample`` would give."""
    image = data["image"][index].float().div_(255.0)
    out: dict[str, torch.Tensor] = {"image": image}
    h, w = size
    for task in tasks:
        if task == "semseg":
            out[task] = data["semseg"][index].long()
        elif task == "depth":
            out[task] = data["depth"][index][None].clone()
        elif task == "normal":
            out[task] = data["normal"][index].clone()
        elif task == "edge":
            out[task] = data["edge"][index][None].float()
        else:
            out[task] = image.clone()
        out[f"{task}_mask"] = torch.ones((h, w), dtype=torch.bool)
    return out


@DATASETS.register("synthetic_scenes")
class SyntheticScenes(Dataset):
    """Procedural rooms with exact semantic / depth / normal / edge labels; see the module docstring.

    Classes: 0 floor, 1 wall, 2 ceiling, 3 box, 4 sphere, 5 cylinder (every pixel labelled; masks all True).
    ``root`` is accepted for a uniform loader interface and ignored. ``size`` is (H, W) (an int means square).
    ``num_samples`` defaults to 2000 / 200 / 200 for train / val / test. ``in_memory`` generates the whole
    split at construction (uint8 images, float32 geometry); otherwise each sample is rendered on access.
    ``cache_dir`` stores / reuses the split as an ``.npz``. ``num_workers`` > 0 generates in processes.
    """

    CLASS_NAMES: tuple[str, ...] = rc.CLASS_NAMES
    num_classes: int = len(rc.CLASS_NAMES)
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Callable[[dict[str, np.ndarray]], dict[str, Any]] | None = None,
        size: int | Sequence[int] = (64, 64),
        num_samples: int | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        antialias: int = 1,
        in_memory: bool = True,
        num_workers: int = 0,
    ) -> None:
        tasks, num_samples = _check_options(seed, split, tasks, num_samples, antialias, transform)
        self.root = root
        self.split = split
        self.tasks = tasks
        self.transform = transform
        self.size = _as_size(size)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.antialias = int(antialias)
        self.num_workers = int(num_workers)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.task_specs: dict[str, TaskSpec] = _task_specs(tasks, self.num_classes)
        self._data: dict[str, torch.Tensor] | None = None
        if in_memory or self.cache_dir is not None:
            arrays = self._load_or_generate()
            keep = {"image", "rotation", "position", "focal"} | {t for t in tasks if t != "autoencoding"}
            self._data = {
                k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items() if k in keep
            }

    # ------------------------------------------------------------------------------------------- caching

    def generation_params(self) -> dict[str, Any]:
        """Every parameter the generated arrays depend on (the disk cache key)."""
        return {
            "dataset": "synthetic_scenes",
            "version": GENERATOR_VERSION,
            "seed": self.seed,
            "split": self.split,
            "num_samples": self.num_samples,
            "size": list(self.size),
            "antialias": self.antialias,
        }

    def cache_path(self) -> Path | None:
        """The ``.npz`` file this split is cached in (None without ``cache_dir``)."""
        if self.cache_dir is None:
            return None
        key = json.dumps(self.generation_params(), sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        h, w = self.size
        name = f"synthetic_scenes-{self.split}-{h}x{w}-n{self.num_samples}-seed{self.seed}-{digest}.npz"
        return self.cache_dir / name

    def _load_or_generate(self) -> dict[str, np.ndarray]:
        path = self.cache_path()
        key = json.dumps(self.generation_params(), sort_keys=True)
        if path is not None:
            if self.cache_dir.exists() and not self.cache_dir.is_dir():
                raise NotADirectoryError(
                    f"synthetic_scenes: cache_dir {str(self.cache_dir)!r} is not a folder"
                )
            cached = _read_cache(path, key) if path.exists() else None
            if cached is not None:
                return cached
        arrays = generate_split(
            self.seed, self.split, self.num_samples, self.size, self.antialias, self.num_workers
        )
        if path is not None:
            with atomic_path(path, on_rank_zero()) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, key=np.array(key), **arrays)
        return arrays

    # ------------------------------------------------------------------------------------------- access

    def __len__(self) -> int:
        return self.num_samples

    def _check_index(self, index: int) -> int:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(
                f"synthetic_scenes[{self.split}]: index {index} out of range for {self.num_samples}"
            )
        return index % self.num_samples

    def scene(self, index: int) -> rc.Scene:
        """The full scene description of sample ``index`` (room, objects, camera, lights)."""
        return generate_scene(self.seed, self.split, self._check_index(index))

    def camera(self, index: int) -> dict[str, np.ndarray]:
        """Camera of sample ``index``: ``K`` (3x3 intrinsics), ``rotation`` (camera->world), ``position``."""
        cam = self.scene(index).camera
        return {"K": cam.intrinsics(*self.size), "rotation": cam.rotation, "position": cam.position}

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` as numpy arrays in the transform format (HWC float image, int64 labels, masks)."""
        index = self._check_index(index)
        if self._data is not None:
            raw = _stored_sample(self._data, index)
        else:
            raw = generate_sample(self.seed, self.split, index, self.size, self.antialias)
        return _transform_arrays(raw, self.tasks, self.size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._check_index(int(index))
        if self.transform is None and self._data is not None:
            return _tensor_item(self._data, index, self.tasks, self.size)
        arrays = self.arrays(index)
        if self.transform is not None:
            arrays = self.transform(arrays)
        return to_sample(arrays, self.tasks)

    def __repr__(self) -> str:
        h, w = self.size
        return (
            f"SyntheticScenes(split={self.split!r}, n={self.num_samples}, size={h}x{w}, seed={self.seed}, "
            f"tasks={self.tasks})"
        )
