"""Loaders for the eight-task CLIP classification benchmark of Task Arithmetic (Ilharco et al. 2023).

Registered names (= task names): ``sun397``, ``cars``, ``resisc45``, ``eurosat``, ``svhn``, ``gtsrb``,
``mnist``, ``dtd``. A sample is ``{"image": FloatTensor[3,S,S] in [0,1], name: LongTensor[] class id}``;
``classnames`` lists the CLIP class names in class-id order (the lists of mlfoundations/task_vectors).

Preprocessing follows CLIP (``open_clip`` / OpenAI ``_transform``): convert to RGB, resize the shorter side
to ``image_size`` with bicubic interpolation (the longer side becomes ``int(image_size * long / short)``, as
torchvision's ``Resize``), centre crop ``image_size`` (offset ``round((side - size) / 2)``), scale to [0, 1].
Mean/std normalisation is left to the encoder. ``image_size=None`` keeps the native size. ``transform``,
when given, is called on ``{"image": HxWx3 float32}`` after that preprocessing (e.g. for augmentation).

On-disk layouts, relative to ``root`` (the ``location`` / ``--data-location`` of task_vectors). The
first layout found is used. Facts from mlfoundations/task_vectors ``src/datasets/*.py`` and from the
dataset-configuration script linked from its issue #1 (``configure_merge_vision_datasets.py``), and from
torchvision's dataset classes:

- ``mnist``: torchvision ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (IDX: big-endian
  magic ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, then the data). Splits train/test.
- ``svhn``: ``svhn/{train,test,extra}_32x32.mat`` (task_vectors puts torchvision's SVHN root at
  ``<location>/svhn``) or the same files directly in ``root``. ``X`` is [32,32,3,N] uint8, ``y`` [N,1] in
  1..10 where 10 is the digit 0.
- ``eurosat``: ``EuroSAT_splits/{train,val,test}/<class>/`` (task_vectors) or ``eurosat/splits/...`` (the
  configuration script). The ten folder names map to the CLIP names of task_vectors (see
  :data:`EUROSAT_CLASSNAMES`); task_vectors tests on ``test`` and validates on ``val``.
- ``resisc45``: ``resisc45/{train,val,test}/<class>/`` (configuration script), or the task_vectors/torchgeo
  layout ``resisc45/NWPU-RESISC45/<class>/<class>_NNN.jpg`` with ``resisc45/resisc45-<split>.txt`` listing
  the file names of each split. Classes are the sorted class folders; names with ``_`` -> space.
- ``dtd``: task_vectors' folders ``dtd/train/<class>/`` + ``dtd/val/<class>/``, or the original archive
  ``dtd/images/<class>/*.jpg`` + ``dtd/labels/{train,val,test}<partition>.txt`` (also under ``dtd/dtd/``
  as torchvision extracts it; ``partition`` 1..10, lines ``<class>/<file>``). Sorted classes, ``_`` ->
  space. task_vectors' code evaluates DTD on its ``dtd/val`` folder (mlfoundations/task_vectors
  ``src/datasets/dtd.py``, commit 826a64c67082fab0f40628233287948f0f8d7fa3), and its authors say what
  that folder holds (task_vectors issue #1, as in PAINT): the archive's **test** files, unchanged, while
  ``dtd/train`` holds the archive's train + val files. It tunes on ``DTDVal`` (``src/datasets/registry.py``
  ``split_train_into_train_val``: ``torch.utils.data.random_split`` of ``dtd/train`` in ImageFolder order
  into ``[n - v, v]``, ``v = min(int(n * 0.1), 5000)``, ``torch.Generator().manual_seed(0)``) and
  fine-tunes on the rest. So here ``test`` = the ``val`` folder (the archive's ``test<p>.txt``), ``val``
  = DTDVal's held-out part and ``train`` = DTDVal's train part (:func:`train_val_split`), in both layouts.
  ``archive_split="official"`` reads each ``<split><p>.txt`` as it is instead; a folder layout with a
  ``dtd/test`` folder is read folder by folder as named.
- ``sun397``: ``sun397/{train,val[,test]}/<folder>/`` where ``<folder>`` is the image's directory in the
  SUN397 archive joined by ``_`` (``/a/abbey`` -> ``a_abbey``, ``/b/bakery/shop`` -> ``b_bakery_shop``);
  ``train`` holds ``Partitions/Training_01.txt`` and ``val`` ``Testing_01.txt`` (the task_vectors test
  set). Classes are the sorted folders; CLIP name = folder minus its 2-character letter prefix, ``_`` ->
  space.
- ``gtsrb``: torchvision ``gtsrb/GTSRB/Training/<NNNNN>/*.ppm`` (train) and
  ``gtsrb/GTSRB/Final_Test/Images/*.ppm`` with labels in ``gtsrb/GT-final_test.csv`` (``;``-separated,
  columns ``Filename`` and ``ClassId``) (test), or ImageFolder ``gtsrb/{train,val,test}/<class id>/``.
  Class folders must be integers (zero padded or not): the label is ``int(folder)``, so ``"10"`` is class
  10 whatever the sort order. Names: the 43 CLIP prompt names (:data:`GTSRB_CLASSNAMES`).
- ``cars``: torchvision / task_vectors ``stanford_cars/{cars_train,cars_test}/`` with
  ``stanford_cars/devkit/cars_meta.mat`` (``class_names``), ``devkit/cars_train_annos.mat`` and
  ``cars_test_annos_withlabels.mat`` (in ``stanford_cars/`` or ``devkit/``); ``annotations`` has ``fname``
  and 1-based ``class``. Class order and names are ``class_names``. Or ImageFolder
  ``stanford_cars/{train,val,test}/<class>/`` with sorted folder names as classes (matches ``class_names``
  only if the folders were named so that they sort in that order, e.g. a zero-padded id prefix).

For ImageFolder layouts the class list comes from the ``train`` folder when it exists (else the requested
split), so every split uses the same ids; a class folder present in another split but not in ``train``
is an error.
"""

from __future__ import annotations

import csv
import gzip
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from simo_merge.datasets import DATASETS
from simo_merge.datasets.transforms import resolve_tasks
from simo_merge.tasks import TaskSpec

CLIP8_TASKS: tuple[str, ...] = ("sun397", "cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")
#: The 14- and 20-task benchmarks of the TALL masks / Consensus authors, in their order
#: (nik-dim/tall_masks ``src/utils/variables_and_paths.py`` ``ALL_DATASETS[:14]`` / ``[:20]``, commit
#: d10af8b21383322367fb35474bd9cd0f9ebe9ecf); each name is the authors' dataset name in lower case. Their
#: first eight are :data:`CLIP8_TASKS` in another order; the loaders of the twelve others are in
#: :mod:`simo_merge.datasets.clip_extra`.
CLIP14_TASKS: tuple[str, ...] = (
    "cars", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "svhn", "sun397",
    "stl10", "oxfordiiitpet", "flowers102", "cifar100", "pcam", "fer2013",
)  # fmt: skip
CLIP20_TASKS: tuple[str, ...] = CLIP14_TASKS + (
    "cifar10", "food101", "fashionmnist", "renderedsst2", "emnist", "kmnist",
)  # fmt: skip
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGIT_CLASSNAMES: tuple[str, ...] = tuple(str(i) for i in range(10))

#: EuroSAT folder name -> CLIP class name (task_vectors ``ours_to_open_ai``).
EUROSAT_CLASSNAMES: dict[str, str] = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road",
    "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments",
    "River": "river",
    "SeaLake": "lake or sea",
}

#: GTSRB class names by class id, from OpenAI CLIP ``data/prompts.md`` (as used by task_vectors).
GTSRB_CLASSNAMES: tuple[str, ...] = (
    "red and white circle 20 kph speed limit",
    "red and white circle 30 kph speed limit",
    "red and white circle 50 kph speed limit",
    "red and white circle 60 kph speed limit",
    "red and white circle 70 kph speed limit",
    "red and white circle 80 kph speed limit",
    "end / de-restriction of 80 kph speed limit",
    "red and white circle 100 kph speed limit",
    "red and white circle 120 kph speed limit",
    "red and white circle red car and black car no passing",
    "red and white circle red truck and black car no passing",
    "red and white triangle road intersection warning",
    "white and yellow diamond priority road",
    "red and white upside down triangle yield right-of-way",
    "stop",
    "empty red and white circle",
    "red and white circle no truck entry",
    "red circle with white horizonal stripe no entry",
    "red and white triangle with exclamation mark warning",
    "red and white triangle with black left curve approaching warning",
    "red and white triangle with black right curve approaching warning",
    "red and white triangle with black double curve approaching warning",
    "red and white triangle rough / bumpy road warning",
    "red and white triangle car skidding / slipping warning",
    "red and white triangle with merging / narrow lanes warning",
    "red and white triangle with person digging / construction / road work warning",
    "red and white triangle with traffic light approaching warning",
    "red and white triangle with person walking warning",
    "red and white triangle with child and person walking warning",
    "red and white triangle with bicyle warning",
    "red and white triangle with snowflake / ice warning",
    "red and white triangle with deer warning",
    "white circle with gray strike bar no speed limit",
    "blue circle with white right turn arrow mandatory",
    "blue circle with white left turn arrow mandatory",
    "blue circle with white forward arrow mandatory",
    "blue circle with white forward or right turn arrow mandatory",
    "blue circle with white forward or left turn arrow mandatory",
    "blue circle with white keep right arrow mandatory",
    "blue circle with white keep left arrow mandatory",
    "blue circle with white arrows indicating a traffic circle",
    "white circle with gray strike bar indicating no passing for cars has ended",
    "white circle with gray strike bar indicating no passing for trucks has ended",
)

SPLITS: tuple[str, ...] = ("train", "val", "test")


# --------------------------------------------------------------------------------------------------------
# Preprocessing and file helpers
# --------------------------------------------------------------------------------------------------------
def clip_preprocess(image: Image.Image, image_size: int | None = 224) -> np.ndarray:
    """CLIP's resize (bicubic, shorter side) + centre crop, as HxWx3 float32 in [0, 1].

    Normalisation is not applied (the encoder does it). ``image_size=None`` only converts.
    """
    image = image.convert("RGB")
    if image_size is not None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1 or None, got {image_size}")
        w, h = image.size
        if w <= h:
            new_w, new_h = image_size, int(image_size * h / w)
        else:
            new_w, new_h = int(image_size * w / h), image_size
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.BICUBIC)
        top = int(round((new_h - image_size) / 2.0))
        left = int(round((new_w - image_size) / 2.0))
        image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image, dtype=np.float32) / 255.0


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _first_dir(root: Path, candidates: Sequence[str]) -> Path | None:
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in dtypes:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(dtypes[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX shape {shape} needs {expected} bytes, file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


# --------------------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------------------
class ClassificationDataset(Dataset):
    """Common part of the CLIP-benchmark loaders: split check, preprocessing, sample dict.

    Subclasses set ``name``, ``splits``, ``classnames`` and ``_labels`` (one int per sample) and implement
    ``_load_image(index) -> PIL.Image``.
    """

    name: str = ""
    splits: tuple[str, ...] = SPLITS

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
        image_size: int | None = 224,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name}: root folder {self.root} does not exist")
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; known: {', '.join(self.splits)}")
        self.split = split
        self.tasks = resolve_tasks(tasks, [self.name], self.name)
        self.transform = transform
        self.image_size = image_size
        self.classnames: list[str] = []
        self._labels: list[int] = []

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def task_specs(self) -> dict[str, TaskSpec]:
        """``{name: TaskSpec(name, "classification", num_classes)}`` for the returned tasks."""
        return {t: TaskSpec(t, "classification", self.num_classes) for t in self.tasks}

    @property
    def targets(self) -> list[int]:
        """Class id of every sample, in order (reads no image)."""
        return list(self._labels)

    def _check_labels(self, where: Path | str) -> None:
        bad = [lab for lab in self._labels if not 0 <= lab < self.num_classes]
        if bad:
            raise ValueError(
                f"{self.name}: {where}: labels {sorted(set(bad))[:5]} outside 0..{self.num_classes - 1}"
            )

    def _load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        index = index % len(self)
        arrays = {"image": clip_preprocess(self._load_image(index), self.image_size)}
        if self.transform is not None:
            arrays = self.transform(arrays)
        image = torch.from_numpy(np.ascontiguousarray(arrays["image"], dtype=np.float32)).permute(2, 0, 1)
        sample = {"image": image.contiguous()}
        for t in self.tasks:
            sample[t] = torch.tensor(self._labels[index], dtype=torch.long)
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"


def load_image_file(path: Path, name: str) -> Image.Image:
    """The image at ``path``, read in full (the file closed); a missing file names data set ``name``."""
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: image file {path} not found") from None


class _FileListDataset(ClassificationDataset):
    """Samples are image files with labels."""

    _files: list[Path]

    def _load_image(self, index: int) -> Image.Image:
        return load_image_file(self._files[index], self.name)

    def _dataset_folder(self, dirname: str) -> Path:
        """``root/dirname``, which must exist (the error names it)."""
        base = self.root / dirname
        if not base.is_dir():
            raise FileNotFoundError(f"{self.name}: folder {base} not found")
        return base

    def _scan_folder(self, folder: Path, class_to_idx: dict[str, int]) -> None:
        """Fill ``_files``/``_labels`` from ``folder/<class>/<image>`` (sorted, recursive as ImageFolder)."""
        files: list[Path] = []
        labels: list[int] = []
        for cls in _subdirs(folder):
            if cls not in class_to_idx:
                raise ValueError(
                    f"{self.name}: class folder {folder / cls} is not a class of the reference split "
                    f"({len(class_to_idx)} classes)"
                )
            for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
                dirnames.sort()
                for fn in sorted(filenames):
                    if _is_image(fn):
                        files.append(Path(dirpath) / fn)
                        labels.append(class_to_idx[cls])
        if not files:
            raise FileNotFoundError(f"{self.name}: no images found under {folder}/<class>/")
        self._files, self._labels = files, labels

    def _image_folder(self, base: Path, name_of: Callable[[str], str], split: str | None = None) -> None:
        """ImageFolder layout ``base/<split>/<class>/`` (``split``: this dataset's unless given); classes
        from ``base/train`` when it exists."""
        folder = base / (split or self.split)
        if not folder.is_dir():
            have = [s for s in SPLITS if (base / s).is_dir()]
            raise FileNotFoundError(
                f"{self.name}: split folder {folder} not found (splits present in {base}: {have or 'none'})"
            )
        ref = base / "train" if (base / "train").is_dir() else folder
        classes = _subdirs(ref)
        if not classes:
            raise FileNotFoundError(f"{self.name}: no class folders in {ref}")
        self.class_folders = classes
        self.classnames = [name_of(c) for c in classes]
        self._scan_folder(folder, {c: i for i, c in enumerate(classes)})

    def _keep(self, indices: np.ndarray) -> None:
        """Keep the samples at ``indices``, in that order."""
        self._files = [self._files[i] for i in indices]
        self._labels = [self._labels[i] for i in indices]


def _underscores(folder: str) -> str:
    return folder.replace("_", " ")


# --------------------------------------------------------------------------------------------------------
# Digit datasets
# --------------------------------------------------------------------------------------------------------
@DATASETS.register("mnist")
class MNIST(ClassificationDataset):
    """MNIST from torchvision's ``<root>/MNIST/raw`` IDX files; splits train (60k) / test (10k)."""

    name = "mnist"
    splits = ("train", "test")

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        raw = self.root / "MNIST" / "raw"
        if not raw.is_dir():
            raise FileNotFoundError(f"mnist: folder {raw} not found (torchvision MNIST layout)")
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(self._find(raw, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(self._find(raw, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"mnist: {raw}: images {images.shape} and labels {labels.shape} do not match")
        self._images = images
        self._labels = labels.astype(np.int64).tolist()
        self.classnames = list(DIGIT_CLASSNAMES)
        self._check_labels(raw)

    @staticmethod
    def _find(raw: Path, stem: str) -> Path:
        for p in (raw / stem, raw / f"{stem}.gz"):
            if p.is_file():
                return p
        raise FileNotFoundError(f"mnist: file {raw / stem} (or .gz) not found")

    def _load_image(self, index: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self._images[index]), mode="L")


@DATASETS.register("svhn")
class SVHN(ClassificationDataset):
    """SVHN cropped digits ``<split>_32x32.mat`` in ``<root>/svhn`` or ``<root>``; label 10 -> digit 0."""

    name = "svhn"
    splits = ("train", "test", "extra")

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        import scipy.io

        fname = f"{split}_32x32.mat"
        candidates = [self.root / "svhn" / fname, self.root / fname]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"svhn: file {candidates[0]} (or {candidates[1]}) not found")
        mat = scipy.io.loadmat(path)
        for key in ("X", "y"):
            if key not in mat:
                raise KeyError(f"svhn: {path} has no variable {key!r}")
        x, y = mat["X"], np.asarray(mat["y"]).reshape(-1).astype(np.int64)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise ValueError(f"svhn: {path}: X has shape {x.shape}, expected (32, 32, 3, {len(y)})")
        if ((y < 1) | (y > 10)).any():
            raise ValueError(f"svhn: {path}: labels must be in 1..10, got {sorted(set(y.tolist()))[:5]}")
        self._x = x
        self._labels = (y % 10).tolist()
        self.classnames = list(DIGIT_CLASSNAMES)

    def _load_image(self, index: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self._x[..., index]).astype(np.uint8), mode="RGB")


# --------------------------------------------------------------------------------------------------------
# Folder datasets
# --------------------------------------------------------------------------------------------------------
@DATASETS.register("eurosat")
class EuroSAT(_FileListDataset):
    """EuroSAT RGB in ``EuroSAT_splits/<split>/<class>/`` (or ``eurosat/splits``); 10 classes."""

    name = "eurosat"
    dirs: tuple[str, ...] = ("EuroSAT_splits", "eurosat/splits")

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        base = _first_dir(self.root, self.dirs)
        if base is None:
            raise FileNotFoundError(
                f"eurosat: folder {self.root / self.dirs[0]} (or {self.dirs[1]}) not found"
            )
        self._image_folder(base, lambda c: EUROSAT_CLASSNAMES.get(c, _underscores(c)))


@DATASETS.register("resisc45")
class RESISC45(_FileListDataset):
    """NWPU-RESISC45: ``resisc45/<split>/<class>/``, or ``NWPU-RESISC45/`` + ``resisc45-<split>.txt``."""

    name = "resisc45"

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        base = self._dataset_folder("resisc45")
        if any((base / s).is_dir() for s in SPLITS):
            self._image_folder(base, _underscores)
            return
        images = base / "NWPU-RESISC45"
        listing = base / f"resisc45-{split}.txt"
        if not images.is_dir():
            raise FileNotFoundError(f"resisc45: neither {base}/{{train,val,test}}/ nor {images} found")
        if not listing.is_file():
            raise FileNotFoundError(f"resisc45: split file {listing} not found")
        classes = _subdirs(images)
        class_to_idx = {c: i for i, c in enumerate(classes)}
        self.class_folders = classes
        self.classnames = [_underscores(c) for c in classes]
        files, labels = [], []
        for lineno, line in enumerate(listing.read_text().splitlines(), 1):
            fn = line.strip()
            if not fn:
                continue
            cls = fn.rsplit("_", 1)[0]
            if cls not in class_to_idx:
                raise ValueError(
                    f"resisc45: {listing}:{lineno}: class {cls!r} of {fn!r} has no folder in {images}"
                )
            files.append(images / cls / fn)
            labels.append(class_to_idx[cls])
        if not files:
            raise ValueError(f"resisc45: split file {listing} lists no images")
        self._files, self._labels = files, labels


#: Which archive label files make each split: as task_vectors' folders hold them (train and val =
#: DTDVal's two parts of train + val, test = test; issue #1 of mlfoundations/task_vectors) or the archive's
#: own partition.
DTD_ARCHIVE_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "task_vectors": {"train": ("train", "val"), "val": ("train", "val"), "test": ("test",)},
    "official": {"train": ("train",), "val": ("val",), "test": ("test",)},
}
#: task_vectors ``get_dataset`` defaults for a ``<Dataset>Val`` split: ``val_fraction``, ``max_val_samples``,
#: and ``split_train_into_train_val``'s ``seed`` (the same in nik-dim/tall_masks ``src/datasets/registry.py``)
VAL_FRACTION, MAX_VAL, VAL_SEED = 0.1, 5000, 0


def train_val_split(n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``<Dataset>Val``'s ``(train, val)`` indices into the ``n`` samples of ``name``'s training set (in the
    order its torchvision / task_vectors loader lists them), each in ``random_split``'s order: ``perm =
    randperm(n, manual_seed(0))``, ``train = perm[:n - v]``, ``val = perm[n - v:]`` with ``v = min(int(n *
    0.1), 5000)``."""
    val_size = min(int(n * VAL_FRACTION), MAX_VAL)
    if not 0 < val_size < n:
        raise ValueError(f"{name}: {n} training images leave no val split (10 % of them, at least 1)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED)).numpy()
    return perm[: n - val_size], perm[n - val_size :]


@DATASETS.register("dtd")
class DTD(_FileListDataset):
    """Describable Textures: ``dtd/<split>/<class>/`` or the archive ``dtd/[dtd/]{images,labels}``."""

    name = "dtd"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        partition: int = 1,
        archive_split: str = "task_vectors",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, split, **kwargs)
        if archive_split not in DTD_ARCHIVE_SPLITS:
            raise ValueError(
                f"dtd: archive_split must be one of {sorted(DTD_ARCHIVE_SPLITS)}, got {archive_split!r}"
            )
        base = self._dataset_folder("dtd")
        if (base / "test").is_dir():  # a folder per split, read as named
            self._image_folder(base, _underscores)
            return
        if any((base / s).is_dir() for s in SPLITS):  # task_vectors' train/ + val/ (its test set)
            self._image_folder(base, _underscores, "val" if split == "test" else "train")
            if split != "test":
                self._keep(train_val_split(len(self._files), "dtd")[split == "val"])
            return
        if not 1 <= partition <= 10:
            raise ValueError(f"dtd: partition must be in 1..10, got {partition}")
        archive = _first_dir(self.root, ("dtd/dtd/labels", "dtd/labels"))
        if archive is None:
            raise FileNotFoundError(f"dtd: neither {base}/{{train,val,test}}/ nor {base}/labels found")
        archive = archive.parent
        images = archive / "images"
        if not images.is_dir():
            raise FileNotFoundError(f"dtd: folder {images} not found")
        if split not in DTD_ARCHIVE_SPLITS[archive_split]:
            raise ValueError(
                f"dtd: unknown split {split!r}; expected one of {list(DTD_ARCHIVE_SPLITS[archive_split])}"
            )
        listings = [
            archive / "labels" / f"{part}{partition}.txt" for part in DTD_ARCHIVE_SPLITS[archive_split][split]
        ]
        self.listings = listings
        classes = _subdirs(images)
        class_to_idx = {c: i for i, c in enumerate(classes)}
        self.class_folders = classes
        self.classnames = [_underscores(c) for c in classes]
        files, labels = _dtd_listed(listings, images, class_to_idx)
        if not files:
            raise ValueError(f"dtd: split files {[str(x) for x in listings]} list no images")
        self._files, self._labels = files, labels
        if archive_split == "task_vectors" and split != "test":  # dtd/train in ImageFolder order, then DTDVal
            order = sorted(range(len(files)), key=lambda i: (labels[i], files[i].name))
            self._keep(np.asarray(order)[train_val_split(len(files), "dtd")[split == "val"]])


def _dtd_listed(
    listings: list[Path], images: Path, class_to_idx: dict[str, int]
) -> tuple[list[Path], list[int]]:
    """The image files and labels the DTD archive's split files list (in listing order)."""
    files, labels = [], []
    for listing in listings:
        if not listing.is_file():
            raise FileNotFoundError(f"dtd: split file {listing} not found")
        for lineno, line in enumerate(listing.read_text().splitlines(), 1):
            rel = line.strip()
            if not rel:
                continue
            cls = rel.split("/", 1)[0]
            if cls not in class_to_idx:
                raise ValueError(f"dtd: {listing}:{lineno}: class {cls!r} has no folder in {images}")
            files.append(images / rel)
            labels.append(class_to_idx[cls])
    return files, labels


@DATASETS.register("sun397")
class SUN397(_FileListDataset):
    """SUN397 as reorganised by task_vectors: ``sun397/<split>/<letter>_<class path>/``."""

    name = "sun397"

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        base = self._dataset_folder("sun397")
        self._image_folder(base, lambda c: c[2:].replace("_", " "))


@DATASETS.register("gtsrb")
class GTSRB(_FileListDataset):
    """GTSRB: torchvision ``gtsrb/GTSRB/...`` + ``GT-final_test.csv``, or ``gtsrb/<split>/<id>/``."""

    name = "gtsrb"

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        base = self._dataset_folder("gtsrb")
        self.classnames = list(GTSRB_CLASSNAMES)
        if any((base / s).is_dir() for s in SPLITS):
            folder = base / split
            if not folder.is_dir():
                raise FileNotFoundError(f"gtsrb: split folder {folder} not found")
            self._scan_folder(folder, self._id_map(folder))
        elif split == "train":
            folder = base / "GTSRB" / "Training"
            if not folder.is_dir():
                raise FileNotFoundError(f"gtsrb: neither {base}/{{train,val,test}}/ nor {folder} found")
            self._scan_folder(folder, self._id_map(folder))
        elif split == "test":
            self._read_test_csv(base)
        else:
            raise ValueError(f"gtsrb: the torchvision layout in {base} has splits train, test; got {split!r}")
        self._check_labels(base)

    @staticmethod
    def _id_map(folder: Path) -> dict[str, int]:
        mapping = {}
        for c in _subdirs(folder):
            if not c.isdigit():
                raise ValueError(f"gtsrb: class folder {folder / c} is not a class id (expected digits)")
            mapping[c] = int(c)
        return mapping

    def _read_test_csv(self, base: Path) -> None:
        images = base / "GTSRB" / "Final_Test" / "Images"
        table = base / "GT-final_test.csv"
        if not images.is_dir():
            raise FileNotFoundError(f"gtsrb: neither {base}/{{train,val,test}}/ nor {images} found")
        if not table.is_file():
            raise FileNotFoundError(f"gtsrb: label file {table} not found")
        files, labels = [], []
        with open(table, newline="") as f:
            reader = csv.DictReader(f, delimiter=";", skipinitialspace=True)
            missing = {"Filename", "ClassId"} - set(reader.fieldnames or [])
            if missing:
                raise KeyError(f"gtsrb: {table} lacks column(s) {sorted(missing)}")
            for row in reader:
                files.append(images / row["Filename"])
                labels.append(int(row["ClassId"]))
        if not files:
            raise ValueError(f"gtsrb: label file {table} has no rows")
        self._files, self._labels = files, labels


@DATASETS.register("cars")
class StanfordCars(_FileListDataset):
    """Stanford Cars: torchvision devkit layout (train/test), or ``stanford_cars/<split>/<class>/``."""

    name = "cars"

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        base = self._dataset_folder("stanford_cars")
        if any((base / s).is_dir() for s in SPLITS):
            self._image_folder(base, lambda c: c)
            return
        if split == "val":
            raise ValueError(f"cars: the devkit layout in {base} has splits train, test; got 'val'")
        import scipy.io

        devkit = base / "devkit"
        meta = devkit / "cars_meta.mat"
        if not meta.is_file():
            raise FileNotFoundError(f"cars: neither {base}/{{train,val,test}}/ nor {meta} found")
        if split == "train":
            annos = devkit / "cars_train_annos.mat"
        else:
            annos = base / "cars_test_annos_withlabels.mat"
            if not annos.is_file() and (devkit / annos.name).is_file():
                annos = devkit / annos.name
        images = base / f"cars_{split}"
        if not annos.is_file():
            raise FileNotFoundError(f"cars: annotation file {annos} not found")
        if not images.is_dir():
            raise FileNotFoundError(f"cars: image folder {images} not found")
        meta_mat = scipy.io.loadmat(meta, squeeze_me=True)
        if "class_names" not in meta_mat:
            raise KeyError(f"cars: {meta} has no variable 'class_names'")
        self.classnames = [str(c) for c in np.atleast_1d(meta_mat["class_names"]).tolist()]
        mat = scipy.io.loadmat(annos, squeeze_me=True)
        if "annotations" not in mat:
            raise KeyError(f"cars: {annos} has no variable 'annotations'")
        rows = np.atleast_1d(mat["annotations"])
        names = rows.dtype.names or ()
        for field in ("fname", "class"):
            if field not in names:
                raise KeyError(f"cars: {annos}: annotations lack field {field!r} (have {names})")
        self._files = [images / str(r["fname"]) for r in rows]
        self._labels = [int(r["class"]) - 1 for r in rows]
        self._check_labels(annos)


__all__ = [
    "CLIP8_TASKS",
    "CLIP14_TASKS",
    "CLIP20_TASKS",
    "DTD",
    "EUROSAT_CLASSNAMES",
    "GTSRB",
    "GTSRB_CLASSNAMES",
    "MNIST",
    "RESISC45",
    "SUN397",
    "SVHN",
    "ClassificationDataset",
    "EuroSAT",
    "StanfordCars",
    "clip_preprocess",
    "read_idx",
    "train_val_split",
]
