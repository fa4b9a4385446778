"""Generic image-classification datasets for fine-tuning classification experts from any θ0.

- ``image_folder``: torchvision's ImageFolder layout, one folder per split: ``<root>/<split>/<class>/<image>``
  (images found recursively, sorted). Class ids are the sorted class folders of ``<root>/train`` (else of
  the split itself), so every split shares them; one task, named by ``tasks=[name]``.
- ``idx``: MNIST-style IDX files (optionally ``.gz``) in ``<root>``: images ``<split>-images-idx3-ubyte``
  (``[N, H, W]`` grey or ``[N, H, W, 3]`` RGB, uint8) and labels ``<split>-labels-idx1-ubyte`` (``[N]``);
  for ``split="test"`` MNIST's ``t10k-`` names are found too. More than one task reads one label file per
  task from the same images: ``labels={task: "{split}-<name>-idx1-ubyte"}``. Class counts come from the
  ``train`` label file when present (else the split's), or ``num_classes``.

Samples are ``{"image": FloatTensor[3, S, S] in [0, 1], task: LongTensor[] class id}``; preprocessing as
the CLIP loaders (:func:`simo_merge.datasets.clip8.clip_preprocess`: ``image_size=None`` keeps the native
size, the job's ``JointTransform`` then resizes to ``data.size``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from simo_merge.datasets import DATASETS
from simo_merge.datasets.clip8 import ClassificationDataset, _FileListDataset, _subdirs, read_idx
from simo_merge.tasks import TaskSpec


def _task_names(tasks: Sequence[str] | None, default: str, dataset: str) -> list[str]:
    if tasks is None:
        return [default]
    if isinstance(tasks, str):
        raise TypeError(f"{dataset}: tasks must be a list of task names, got the string {tasks!r}")
    tasks = list(tasks)
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"{dataset}: tasks must be distinct names, got {tasks}")
    return tasks


@DATASETS.register("image_folder")
class ImageFolderDataset(_FileListDataset):
    """``<root>/<split>/<class>/<image>`` (torchvision ImageFolder per split); one classification task.

    The folder scan is the CLIP loaders' (:meth:`_FileListDataset._image_folder`): classes from
    ``<root>/train`` when it exists, images found recursively and sorted.
    """

    name = "image_folder"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Any = None,
        image_size: int | None = None,
    ) -> None:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise FileNotFoundError(f"image_folder: root folder {base} does not exist")
        self.splits = tuple(_subdirs(base))
        names = _task_names(tasks, "image_folder", "image_folder")
        if len(names) != 1:
            raise ValueError(f"image_folder: one task per folder dataset, got {names}")
        if split not in self.splits:
            raise FileNotFoundError(
                f"image_folder: split folder {base / split} not found (splits in {base}: "
                f"{list(self.splits) or 'none'}; layout <root>/<split>/<class>/<image>)"
            )
        super().__init__(base, split, None, transform, image_size)
        self.tasks = names
        self._image_folder(base, str)


@DATASETS.register("idx")
class IdxDataset(ClassificationDataset):
    """MNIST-style IDX image + label files in ``<root>`` (see the module docstring)."""

    name = "idx"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Any = None,
        image_size: int | None = None,
        images: str = "{split}-images-idx3-ubyte",
        labels: str | dict[str, str] = "{split}-labels-idx1-ubyte",
        num_classes: int | dict[str, int] | None = None,
    ) -> None:
        self.splits = (split,)  # any split with files; missing files are reported below
        super().__init__(root, split, None, transform, image_size)
        names = _task_names(tasks, "idx", "idx")
        if isinstance(labels, str):
            if len(names) != 1:
                raise ValueError(f"idx: {len(names)} tasks {names} need labels={{task: file pattern}}")
            labels = {names[0]: labels}
        missing = [t for t in names if t not in labels]
        if missing:
            raise KeyError(f"idx: no label file pattern for task(s) {missing}; labels has {sorted(labels)}")
        self.tasks = names
        self._images = read_idx(self._find(images, split))
        if self._images.ndim not in (3, 4) or (self._images.ndim == 4 and self._images.shape[3] != 3):
            raise ValueError(f"idx: images must be [N, H, W] or [N, H, W, 3], got {self._images.shape}")
        self._task_labels: dict[str, list[int]] = {}
        self._num_classes: dict[str, int] = {}
        for t in names:
            path = self._find(labels[t], split)
            y = read_idx(path)
            if y.ndim != 1 or len(y) != len(self._images):
                raise ValueError(f"idx: {path}: labels {y.shape} do not match {len(self._images)} images")
            if (y < 0).any():
                raise ValueError(f"idx: {path}: negative labels")
            self._task_labels[t] = y.astype(np.int64).tolist()
            given = num_classes.get(t) if isinstance(num_classes, dict) else num_classes
            self._num_classes[t] = int(given) if given else self._class_count(labels[t], y)
            if max(self._task_labels[t], default=0) >= self._num_classes[t]:
                raise ValueError(
                    f"idx: {path}: labels reach {max(y)} but task {t!r} has {self._num_classes[t]}"
                )
        self._labels = self._task_labels[names[0]]
        self.classnames = [str(i) for i in range(self._num_classes[names[0]])]

    def _find(self, pattern: str, split: str) -> Path:
        tried = []
        for s in (split, "t10k") if split == "test" else (split,):
            for p in (self.root / pattern.format(split=s), self.root / (pattern.format(split=s) + ".gz")):
                tried.append(str(p))
                if p.is_file():
                    return p
        raise FileNotFoundError(f"idx: none of {tried} found")

    def _class_count(self, pattern: str, y: np.ndarray) -> int:
        """Classes = max label + 1 of the train split's file (every split then agrees), else of ``y``."""
        try:
            ref = read_idx(self._find(pattern, "train"))
        except FileNotFoundError:
            ref = y
        return int(max(int(ref.max(initial=0)), int(y.max(initial=0)))) + 1

    @property
    def task_specs(self) -> dict[str, TaskSpec]:
        return {t: TaskSpec(t, "classification", self._num_classes[t]) for t in self.tasks}

    def _load_image(self, index: int) -> Image.Image:
        x = np.ascontiguousarray(self._images[index])
        return Image.fromarray(x, mode="L" if x.ndim == 2 else "RGB")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = super().__getitem__(index)
        index = index % len(self)
        for t in self.tasks:
            sample[t] = torch.tensor(self._task_labels[t][index], dtype=torch.long)
        return sample
