"""Loaders for the twelve datasets the 14- and 20-task CLIP benchmarks add to the eight of Task Arithmetic.

Registered names (= task names, the TALL masks authors' dataset names in lower case): ``flowers102``,
``pcam``, ``fer2013``, ``oxfordiiitpet``, ``stl10``, ``cifar100`` (14 tasks) and ``cifar10``, ``food101``,
``fashionmnist``, ``emnist``, ``kmnist``, ``renderedsst2`` (20 tasks). Samples, preprocessing and
``classnames`` follow :mod:`simo_merge.datasets.clip8`.

Facts from nik-dim/tall_masks (commit d10af8b21383322367fb35474bd9cd0f9ebe9ecf) ``src/datasets/<name>.py``,
which wrap torchvision's dataset classes, and from those classes:

- **splits**: the authors read torchvision's ``train`` (OxfordIIITPet: ``trainval``) and ``test`` split of
  each dataset and, through ``src/datasets/registry.py`` ``get_dataset("<Dataset>Val")``, split the
  training set with ``split_train_into_train_val`` (seed 0, 10 % capped at 5000, as task_vectors): they
  fine-tune on its first part and tune on its second. So here ``train`` / ``val`` are those two parts
  (:func:`~simo_merge.datasets.clip8.train_val_split`, over the training set in torchvision's order) and
  ``test`` is the test set. Flowers102's and RenderedSST2's own ``val`` splits are not used (as there).
- **class names**: :mod:`simo_merge.datasets.clip_templates` holds them all: the lists written in the
  authors' files (Flowers102, PCAM, FER2013, CIFAR10), else torchvision's ``classes``. Where torchvision
  reads those from the dataset's files (CIFAR10/100 ``meta``, STL10 ``class_names.txt``, Food101's
  ``meta/train.json`` keys) the loaders read them there too; OxfordIIITPet's, which torchvision derives
  from the image ids of ``trainval.txt``, come from the table and every id is checked against its
  label's name. FER2013's are the authors' synonym lists as their f-string templates print them
  (``"['happy', 'smiling']"``).

On-disk layouts, relative to ``root`` (the authors' ``--data-location``):

- ``flowers102``: ``flowers102/flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat}`` (MATLAB v5:
  ``labels`` 1..102, ``trnid`` / ``tstid`` image ids). Train 1020, test 6149.
- ``pcam``: ``PCAM/pcam/`` (the authors pass ``~/data/PCAM`` as torchvision's root) or ``pcam/``:
  ``camelyonpatch_level_2_split_{train,test}_{x,y}.h5``, ``x`` [N,96,96,3] uint8, ``y`` [N,1,1,1]. Train
  262144, test 32768.
- ``fer2013``: ``fer2013/fer2013.csv`` (columns ``emotion,pixels,Usage``; 48x48 grey pixels) or
  ``fer2013/icml_face_data.csv`` (``emotion, Usage, pixels``), torchvision's files: train = ``Training``
  rows (28709), test = ``PublicTest`` + ``PrivateTest`` rows (7178). The authors load the Hugging Face copy
  ``Jeneral/fer-2013`` instead, whose train/test have those sizes; its row order is not checked here, so
  the ``train``/``val`` parts may differ from theirs.
- ``oxfordiiitpet``: ``OxfordIIITPet/oxford-iiit-pet/{images/<id>.jpg, annotations/{trainval,test}.txt}``
  (lines ``<id> <class 1..37> <species> <breed id>``). Trainval 3680, test 3669.
- ``stl10``: ``stl10/stl10_binary/{train,test}_{X,y}.bin`` + ``class_names.txt``: ``X`` uint8 [N,3,96,96]
  stored column-major per channel, ``y`` labels 1..10. Train 5000, test 8000.
- ``cifar10`` / ``cifar100``: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` /
  ``cifar-100-python/{train, test, meta}``: Python pickles of ``{data: uint8 [N,3072], labels |
  fine_labels: [N]}``, read with the restricted unpickler (only a uint8 numpy array is rebuilt, from its
  raw bytes; no numpy code runs). Train 50000, test 10000.
- ``food101``: ``food101/food-101/{meta/{train,test}.json, images/<class>/<id>.jpg}``; classes = the sorted
  keys, samples in the JSON's order. Train 75750, test 25250.
- ``fashionmnist`` / ``kmnist``: ``<X>/<X>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (the
  authors pass ``~/data/<X>`` as torchvision's root) or ``<X>/raw/...`` (``X`` = ``FashionMNIST`` /
  ``KMNIST``). Train 60000, test 10000.
- ``emnist``: the ``digits`` split, ``EMNIST/EMNIST/raw/`` or ``EMNIST/raw/``
  ``emnist-digits-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]``; images as stored (torchvision does
  not transpose them). Train 240000, test 40000.
- ``renderedsst2``: ``RenderedSST2/rendered-sst2/{train,test}/{negative,positive}/*.png``. Train 6920,
  test 1821.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simo_merge.datasets import DATASETS
from simo_merge.datasets.clip8 import (
    ClassificationDataset,
    load_image_file,
    read_idx,
    train_val_split,
)
from simo_merge.datasets.clip_templates import classnames as clip_classnames
from simo_merge.io.unpickler import RestrictedUnpickler, StandIn


# --------------------------------------------------------------------------------------------------------
# The authors' splits: train / val = <Dataset>Val's two parts of the training set, test = the test set
# --------------------------------------------------------------------------------------------------------
class _AuthorsSplits(ClassificationDataset):
    """Subclasses implement ``_read(source)`` for ``source`` in ``("train", "test")``: it fills
    ``classnames`` and ``_labels`` for every sample of that set and whatever ``_load_row(row)`` needs.
    ``train`` / ``val`` keep the rows of ``train_val_split``; ``test`` keeps all."""

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)
        where = self._read("test" if split == "test" else "train")
        self._check_labels(where)
        n = len(self._labels)
        if n == 0:
            raise ValueError(f"{self.name}: {where} holds no samples")
        rows = np.arange(n) if split == "test" else train_val_split(n, self.name)[split == "val"]
        self._rows = rows
        self._labels = [self._labels[i] for i in rows]

    def _read(self, source: str) -> Path:
        """Fill the set ``source`` and return the file or folder it came from (for errors)."""
        raise NotImplementedError

    def _load_row(self, row: int) -> Image.Image:
        raise NotImplementedError

    def _load_image(self, index: int) -> Image.Image:
        return self._load_row(int(self._rows[index]))


class _AuthorsFiles(_AuthorsSplits):
    """Samples are image files (``_files``, one per label)."""

    _files: list[Path]

    def _load_row(self, row: int) -> Image.Image:
        return load_image_file(self._files[row], self.name)


def _first_existing(candidates: Sequence[Path], what: str, name: str) -> Path:
    for path in candidates:
        if path.exists():
            return path
    others = ", ".join(str(p) for p in candidates[1:])
    raise FileNotFoundError(
        f"{name}: {what} {candidates[0]} not found" + (f" (nor {others})" if others else "")
    )


# --------------------------------------------------------------------------------------------------------
# Image files with split lists
# --------------------------------------------------------------------------------------------------------
@DATASETS.register("flowers102")
class Flowers102(_AuthorsFiles):
    """Oxford Flowers 102: ``flowers102/flowers-102/{jpg/, imagelabels.mat, setid.mat}``."""

    name = "flowers102"

    def _read(self, source: str) -> Path:
        import scipy.io

        base = self.root / "flowers102" / "flowers-102"
        files = {k: base / f"{k}.mat" for k in ("imagelabels", "setid")}
        for path in files.values():
            if not path.is_file():
                raise FileNotFoundError(f"flowers102: file {path} not found")
        labels = scipy.io.loadmat(files["imagelabels"], squeeze_me=True)
        setid = scipy.io.loadmat(files["setid"], squeeze_me=True)
        key = {"train": "trnid", "test": "tstid"}[source]
        if "labels" not in labels:
            raise KeyError(f"flowers102: {files['imagelabels']} has no variable 'labels'")
        if key not in setid:
            raise KeyError(f"flowers102: {files['setid']} has no variable {key!r}")
        by_id = np.atleast_1d(labels["labels"]).astype(np.int64)
        ids = np.atleast_1d(setid[key]).astype(np.int64)
        if ids.size and (ids.min() < 1 or ids.max() > len(by_id)):
            raise ValueError(f"flowers102: {files['setid']}: {key} ids outside 1..{len(by_id)}")
        self.classnames = clip_classnames("Flowers102")
        self._files = [base / "jpg" / f"image_{i:05d}.jpg" for i in ids.tolist()]
        self._labels = (by_id[ids - 1] - 1).tolist()
        return files["setid"]


@DATASETS.register("oxfordiiitpet")
class OxfordIIITPet(_AuthorsFiles):
    """Oxford-IIIT Pet: ``OxfordIIITPet/oxford-iiit-pet/{images/, annotations/{trainval,test}.txt}``."""

    name = "oxfordiiitpet"

    def _read(self, source: str) -> Path:
        base = self.root / "OxfordIIITPet" / "oxford-iiit-pet"
        listing = base / "annotations" / ("trainval.txt" if source == "train" else "test.txt")
        ids, labels = self._listing(listing)
        # torchvision derives the same names from the ids of trainval.txt: breed = id minus "_<n>",
        # title-cased words; an id whose breed is not its label's name is a mislabelled line
        self.classnames = clip_classnames("OxfordIIITPet")
        self._labels = labels
        self._check_labels(listing)
        for image_id, lab in zip(ids, labels, strict=True):
            breed = " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))
            if breed != self.classnames[lab]:
                raise ValueError(
                    f"oxfordiiitpet: {listing}: {image_id} has class {lab + 1} ({self.classnames[lab]!r})"
                )
        self._files = [base / "images" / f"{i}.jpg" for i in ids]
        return listing

    @staticmethod
    def _listing(path: Path) -> tuple[list[str], list[int]]:
        if not path.is_file():
            raise FileNotFoundError(f"oxfordiiitpet: split file {path} not found")
        ids, labels = [], []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[1].isdigit():
                raise ValueError(f"oxfordiiitpet: {path}:{lineno}: expected '<image id> <class id> ...'")
            ids.append(parts[0])
            labels.append(int(parts[1]) - 1)
        return ids, labels


@DATASETS.register("food101")
class Food101(_AuthorsFiles):
    """Food-101: ``food101/food-101/{meta/{train,test}.json, images/<class>/<id>.jpg}``."""

    name = "food101"

    def _read(self, source: str) -> Path:
        base = self.root / "food101" / "food-101"
        listing = base / "meta" / f"{source}.json"
        meta = self._meta(listing)
        ref = meta if source == "train" else self._meta(listing.with_name("train.json"))
        classes = sorted(ref)
        class_to_idx = {c: i for i, c in enumerate(classes)}
        self.classnames = classes
        files, labels = [], []
        for cls, rel_paths in meta.items():
            if cls not in class_to_idx:
                raise ValueError(f"food101: {listing}: class {cls!r} is not in meta/train.json")
            files += [base / "images" / Path(*f"{rel}.jpg".split("/")) for rel in rel_paths]
            labels += [class_to_idx[cls]] * len(rel_paths)
        self._files, self._labels = files, labels
        return listing

    @staticmethod
    def _meta(path: Path) -> dict[str, list[str]]:
        if not path.is_file():
            raise FileNotFoundError(f"food101: file {path} not found")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"food101: {path}: not JSON ({err})") from None
        if not isinstance(meta, dict) or not all(isinstance(v, list) for v in meta.values()):
            raise ValueError(f"food101: {path}: expected {{class: [image paths]}}")
        return meta


@DATASETS.register("renderedsst2")
class RenderedSST2(_AuthorsFiles):
    """Rendered SST2: ``RenderedSST2/rendered-sst2/{train,test}/{negative,positive}/*.png``."""

    name = "renderedsst2"

    def _read(self, source: str) -> Path:
        folder = self.root / "RenderedSST2" / "rendered-sst2" / source
        self.classnames = clip_classnames("RenderedSST2")
        files, labels = [], []
        for label, cls in enumerate(self.classnames):
            sub = folder / cls
            if not sub.is_dir():
                raise FileNotFoundError(f"renderedsst2: class folder {sub} not found")
            for dirpath, dirnames, filenames in os.walk(sub, followlinks=True):
                dirnames.sort()
                for fn in sorted(filenames):
                    if fn.lower().endswith(".png"):
                        files.append(Path(dirpath) / fn)
                        labels.append(label)
        self._files, self._labels = files, labels
        return folder


# --------------------------------------------------------------------------------------------------------
# Arrays: HDF5, CSV, binaries, IDX, pickled batches
# --------------------------------------------------------------------------------------------------------
@DATASETS.register("pcam")
class PCAM(_AuthorsSplits):
    """PatchCamelyon: ``[PCAM/]pcam/camelyonpatch_level_2_split_<split>_{x,y}.h5`` through h5py."""

    name = "pcam"

    def _read(self, source: str) -> Path:
        import h5py

        folder = _first_existing([self.root / "PCAM" / "pcam", self.root / "pcam"], "folder", self.name)
        stem = f"camelyonpatch_level_2_split_{source}"
        self._x_path, y_path = folder / f"{stem}_x.h5", folder / f"{stem}_y.h5"
        for path in (self._x_path, y_path):
            if not path.is_file():
                raise FileNotFoundError(f"pcam: file {path} not found")
        with h5py.File(y_path, "r") as f:
            if "y" not in f:
                raise KeyError(f"pcam: {y_path} has no dataset 'y'")
            y = np.asarray(f["y"]).reshape(len(f["y"]), -1)[:, 0]
        with h5py.File(self._x_path, "r") as f:
            if "x" not in f:
                raise KeyError(f"pcam: {self._x_path} has no dataset 'x'")
            shape = f["x"].shape
        if len(shape) != 4 or shape[0] != len(y) or shape[3] != 3:
            raise ValueError(f"pcam: {self._x_path}: x has shape {shape}, expected ({len(y)}, H, W, 3)")
        self.classnames = clip_classnames("PCAM")
        self._labels = y.astype(np.int64).tolist()
        return y_path

    def _load_row(self, row: int) -> Image.Image:
        import h5py

        with h5py.File(self._x_path, "r") as f:  # opened per read, as torchvision: safe in workers
            return Image.fromarray(np.asarray(f["x"][row], dtype=np.uint8), mode="RGB")


@DATASETS.register("fer2013")
class FER2013(_AuthorsSplits):
    """FER2013: ``fer2013/fer2013.csv`` (or ``icml_face_data.csv``); test = PublicTest + PrivateTest."""

    name = "fer2013"
    usages: dict[str, tuple[str, ...]] = {"train": ("Training",), "test": ("PublicTest", "PrivateTest")}

    def _read(self, source: str) -> Path:
        base = self.root / "fer2013"
        path = _first_existing([base / "fer2013.csv", base / "icml_face_data.csv"], "file", self.name)
        images, labels = [], []
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = {"emotion", "pixels", "Usage"} - set(header)
            if missing:
                raise KeyError(f"fer2013: {path} lacks column(s) {sorted(missing)}")
            col = {h: header.index(h) for h in ("emotion", "pixels", "Usage")}
            for lineno, row in enumerate(reader, 2):
                if len(row) != len(header):
                    raise ValueError(f"fer2013: {path}:{lineno}: {len(row)} fields, expected {len(header)}")
                if row[col["Usage"]].strip() not in self.usages[source]:
                    continue
                pixels = np.array(row[col["pixels"]].split(), dtype=np.uint8)
                if pixels.size != 48 * 48:
                    raise ValueError(f"fer2013: {path}:{lineno}: {pixels.size} pixels, expected 48x48")
                images.append(pixels.reshape(48, 48))
                labels.append(int(row[col["emotion"]]))
        self.classnames = clip_classnames("FER2013")
        self._images = np.stack(images) if images else np.zeros((0, 48, 48), np.uint8)
        self._labels = labels
        return path

    def _load_row(self, row: int) -> Image.Image:
        return Image.fromarray(self._images[row], mode="L")


@DATASETS.register("stl10")
class STL10(_AuthorsSplits):
    """STL-10: ``stl10/stl10_binary/{<split>_X.bin, <split>_y.bin, class_names.txt}``."""

    name = "stl10"

    def _read(self, source: str) -> Path:
        base = self.root / "stl10" / "stl10_binary"
        x_path, y_path, names = base / f"{source}_X.bin", base / f"{source}_y.bin", base / "class_names.txt"
        for path in (x_path, y_path, names):
            if not path.is_file():
                raise FileNotFoundError(f"stl10: file {path} not found")
        self.classnames = [c for c in names.read_text().splitlines() if c]
        y = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
        per_image = 3 * 96 * 96
        if x_path.stat().st_size != len(y) * per_image:
            raise ValueError(f"stl10: {x_path} holds {x_path.stat().st_size} bytes, expected {len(y)} images")
        # [N, 3, 96, 96] with each channel stored column-major: HWC = transpose(0, 3, 2, 1)
        self._x = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(len(y), 3, 96, 96))
        self._labels = y.tolist()
        return y_path

    def _load_row(self, row: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self._x[row].transpose(2, 1, 0)), mode="RGB")


class _IDXDigits(_AuthorsSplits):
    """torchvision's MNIST-family IDX files in ``<root>/<folder>/<folder>/raw`` or ``<root>/<folder>/raw``."""

    folder: str = ""
    templates_key: str = ""

    def _stem(self, source: str, kind: str) -> str:
        prefix = "train" if source == "train" else "t10k"
        return f"{prefix}-{kind}"

    def _read(self, source: str) -> Path:
        raw = _first_existing(
            [self.root / self.folder / self.folder / "raw", self.root / self.folder / "raw"],
            "folder",
            self.name,
        )
        images = read_idx(self._find(raw, self._stem(source, "images-idx3-ubyte")))
        labels = read_idx(self._find(raw, self._stem(source, "labels-idx1-ubyte")))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{self.name}: {raw}: images {images.shape} and labels {labels.shape} do not match"
            )
        self._images = images
        self._labels = labels.astype(np.int64).tolist()
        self.classnames = clip_classnames(self.templates_key)
        return raw

    def _find(self, raw: Path, stem: str) -> Path:
        return _first_existing([raw / stem, raw / f"{stem}.gz"], "file", self.name)

    def _load_row(self, row: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self._images[row]), mode="L")


@DATASETS.register("fashionmnist")
class FashionMNIST(_IDXDigits):
    """Fashion-MNIST IDX files (torchvision ``FashionMNIST/raw``)."""

    name, folder, templates_key = "fashionmnist", "FashionMNIST", "FashionMNIST"


@DATASETS.register("kmnist")
class KMNIST(_IDXDigits):
    """Kuzushiji-MNIST IDX files (torchvision ``KMNIST/raw``)."""

    name, folder, templates_key = "kmnist", "KMNIST", "KMNIST"


@DATASETS.register("emnist")
class EMNIST(_IDXDigits):
    """EMNIST ``digits`` IDX files (torchvision ``EMNIST/raw/emnist-digits-*``)."""

    name, folder, templates_key = "emnist", "EMNIST", "EMNIST"

    def _stem(self, source: str, kind: str) -> str:
        return f"emnist-digits-{source}-{kind}"


# --------------------------------------------------------------------------------------------------------
# CIFAR's pickled batches, through the restricted unpickler
# --------------------------------------------------------------------------------------------------------
_RECONSTRUCT = {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"}


def _uint8_array(obj: Any, path: Path) -> np.ndarray:
    """The uint8 array a pickled ``numpy.ndarray`` stand-in holds, rebuilt from its raw bytes only
    (``_reconstruct(ndarray, (0,), b'b')`` + state ``(1, shape, dtype('u1'), False, bytes)``)."""
    bad = ValueError(f"{path}: 'data' is not a pickled C-ordered uint8 numpy array")
    if not isinstance(obj, StandIn) or obj.pickled_class not in _RECONSTRUCT:
        raise bad
    args, state = obj.pickled_args, obj.pickled_state
    if not (args and isinstance(args[0], type) and getattr(args[0], "pickled_class", "") == "numpy.ndarray"):
        raise bad
    if not (isinstance(state, tuple) and len(state) == 5):
        raise bad
    _, shape, dtype, fortran, raw = state
    dtype_ok = isinstance(dtype, StandIn) and dtype.pickled_class == "numpy.dtype"
    if not dtype_ok or dtype.pickled_args[:1] not in (("u1",), (b"u1",)) or fortran:
        raise bad
    if isinstance(raw, str):  # a Python 2 str read with encoding="latin1"
        raw = raw.encode("latin1")
    if not (isinstance(shape, tuple) and all(isinstance(s, int) for s in shape) and isinstance(raw, bytes)):
        raise bad
    if len(raw) != int(np.prod(shape)):
        raise ValueError(f"{path}: 'data' has {len(raw)} bytes for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def read_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """One CIFAR python batch/meta file as ``{key: value}`` (str keys; a ``data`` array rebuilt as uint8,
    byte strings decoded), through :class:`~simo_merge.io.unpickler.RestrictedUnpickler`: nothing a pickle
    names is imported or called."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cifar: file {path} not found")
    try:
        obj = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: refused or unreadable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        key = key.decode("latin1") if isinstance(key, bytes) else str(key)
        if key == "data":
            value = _uint8_array(value, path)
        elif isinstance(value, list):
            value = [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
        out[key] = value
    return out


class _CIFAR(_AuthorsSplits):
    """CIFAR python version: ``<folder>/{<train batches>, <test batch>, <meta>}``."""

    folder: str = ""
    batches: dict[str, tuple[str, ...]] = {}
    meta_file, meta_key, label_key = "", "", ""

    def _read(self, source: str) -> Path:
        base = self.root / self.folder
        if not base.is_dir():
            raise FileNotFoundError(f"{self.name}: folder {base} not found")
        meta = read_cifar_batch(base / self.meta_file)
        if self.meta_key not in meta:
            raise KeyError(f"{self.name}: {base / self.meta_file} has no {self.meta_key!r}")
        self.classnames = [str(c) for c in meta[self.meta_key]]
        images, labels = [], []
        for name in self.batches[source]:
            batch = read_cifar_batch(base / name)
            for key in ("data", self.label_key):
                if key not in batch:
                    raise KeyError(f"{self.name}: {base / name} has no {key!r}")
            data, lab = batch["data"], batch[self.label_key]
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(lab):
                raise ValueError(f"{self.name}: {base / name}: data {data.shape} for {len(lab)} labels")
            images.append(data.reshape(-1, 3, 32, 32))
            labels += [int(v) for v in lab]
        self._images = np.concatenate(images)
        self._labels = labels
        return base

    def _load_row(self, row: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self._images[row].transpose(1, 2, 0)), mode="RGB")


@DATASETS.register("cifar10")
class CIFAR10(_CIFAR):
    """CIFAR-10, ``cifar-10-batches-py``."""

    name, folder = "cifar10", "cifar-10-batches-py"
    batches = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
    meta_file, meta_key, label_key = "batches.meta", "label_names", "labels"


@DATASETS.register("cifar100")
class CIFAR100(_CIFAR):
    """CIFAR-100 (fine labels), ``cifar-100-python``."""

    name, folder = "cifar100", "cifar-100-python"
    batches = {"train": ("train",), "test": ("test",)}
    meta_file, meta_key, label_key = "meta", "fine_label_names", "fine_labels"


__all__ = [
    "CIFAR10",
    "CIFAR100",
    "EMNIST",
    "FER2013",
    "PCAM",
    "STL10",
    "FashionMNIST",
    "Flowers102",
    "Food101",
    "KMNIST",
    "OxfordIIITPet",
    "RenderedSST2",
    "read_cifar_batch",
]
