"""Writer of the 20-task CLIP benchmark's stand-in data: a few tiny images per split of each data set, each
in that data set's own on-disk layout (as :mod:`simo_merge.datasets.clip_extra` and ``clip8`` read them).

Every image is :func:`stand_in_image` of its (task, set, row), so a test can compare what a loader decodes
with what was written; its mean colour depends on the class (0 or 1), so centroid heads separate them.
The twelve added tasks get :data:`N_TRAIN` training images (their ``train`` / ``val`` parts are 9 / 1)
and :data:`N_TEST` test images, labels alternating 0, 1; the eight of Task Arithmetic are written by
:func:`tests.helpers.clip8_fixture.write_clip8_data` (their test sets).
"""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

from simo_merge.datasets import clip_templates as ct
from simo_merge.datasets.clip8 import CLIP8_TASKS, CLIP20_TASKS
from tests.helpers.idx_files import write_idx

N_TRAIN, N_TEST = 10, 4
#: image side per task where the format fixes it (else 12)
SIDE = {"stl10": 96, "fer2013": 48, "cifar10": 32, "cifar100": 32}
GREY = ("fer2013", "fashionmnist", "kmnist", "emnist")


def label(row: int) -> int:
    """Class of every row: 0, 1, 0, 1, ..."""
    return row % 2


def stand_in_image(task: str, source: str, row: int) -> np.ndarray:
    """The uint8 image written as row ``row`` of ``task``'s ``source`` set ("train" / "test"): HxWx3,
    or HxW for the grey data sets; a class colour plus a row-dependent pattern that differs along x and y
    (so a transposed or channel-swapped read shows)."""
    side = SIDE.get(task, 12)
    yy, xx = np.mgrid[0:side, 0:side]
    offset = 100 * (source == "test") + 3 * row
    pattern = (5 * xx + 2 * yy + offset) % 40 - 20
    if task in GREY:
        return np.clip((170, 80)[label(row)] + pattern, 0, 255).astype(np.uint8)
    base = np.array([[160, 90, 60], [60, 90, 160]][label(row)])
    return np.clip(base + pattern[..., None] * np.array([1, -1, 2]), 0, 255).astype(np.uint8)


def _rows(task: str, source: str) -> range:
    return range(N_TRAIN if source == "train" else N_TEST)


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    jpeg = {"quality": 100, "subsampling": 0} if path.suffix == ".jpg" else {}  # near-lossless JPEG
    Image.fromarray(image).save(path, **jpeg)


# ------------------------------------------------------------------------------------------- writers
def _flowers102(root: Path) -> None:
    base = root / "flowers102" / "flowers-102"
    ids = {"train": list(range(1, N_TRAIN + 1)), "test": list(range(N_TRAIN + 1, N_TRAIN + N_TEST + 1))}
    labels = np.zeros(N_TRAIN + N_TEST, np.uint8)
    for source, image_ids in ids.items():
        for row, image_id in enumerate(image_ids):
            _save(base / "jpg" / f"image_{image_id:05d}.jpg", stand_in_image("flowers102", source, row))
            labels[image_id - 1] = label(row) + 1
    scipy.io.savemat(base / "imagelabels.mat", {"labels": labels[None, :]})
    setid = {"trnid": ids["train"], "valid": [], "tstid": ids["test"]}
    scipy.io.savemat(base / "setid.mat", {k: np.array(v, np.uint16)[None, :] for k, v in setid.items()})


def _oxfordiiitpet(root: Path) -> None:
    base = root / "OxfordIIITPet" / "oxford-iiit-pet"
    breeds = ("Abyssinian", "american_bulldog")  # class ids 1, 2 (a cat, a dog)
    for source, listing in (("train", "trainval.txt"), ("test", "test.txt")):
        lines = []
        for row in _rows("oxfordiiitpet", source):
            image_id = f"{breeds[label(row)]}_{100 * (source == 'test') + row + 1}"
            _save(base / "images" / f"{image_id}.jpg", stand_in_image("oxfordiiitpet", source, row))
            lines.append(f"{image_id} {label(row) + 1} {label(row) + 1} 1")
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / listing).write_text("\n".join(lines) + "\n")


def _food101(root: Path) -> None:
    base = root / "food101" / "food-101"
    classes = ct.classnames("Food101")
    for source in ("train", "test"):
        meta: dict[str, list[str]] = {c: [] for c in classes}
        for row in _rows("food101", source):
            cls = classes[label(row)]
            rel = f"{cls}/{source}{row}"
            _save(base / "images" / f"{rel}.jpg", stand_in_image("food101", source, row))
            meta[cls].append(rel)
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{source}.json").write_text(json.dumps(meta))


def _renderedsst2(root: Path) -> None:
    base = root / "RenderedSST2" / "rendered-sst2"
    for source in ("train", "test"):
        for row in _rows("renderedsst2", source):
            cls = ("negative", "positive")[label(row)]
            # file names sort in row order within a class, as the loader lists them
            _save(base / source / cls / f"{row:03d}.png", stand_in_image("renderedsst2", source, row))
        (base / "valid" / "negative").mkdir(parents=True, exist_ok=True)  # torchvision's val: unused


def _pcam(root: Path) -> None:
    base = root / "PCAM" / "pcam"
    base.mkdir(parents=True, exist_ok=True)
    for source in ("train", "test"):
        rows = _rows("pcam", source)
        stem = base / f"camelyonpatch_level_2_split_{source}"
        with h5py.File(f"{stem}_x.h5", "w") as f:
            f["x"] = np.stack([stand_in_image("pcam", source, r) for r in rows])
        with h5py.File(f"{stem}_y.h5", "w") as f:
            f["y"] = np.array([label(r) for r in rows], np.uint8).reshape(-1, 1, 1, 1)


def _fer2013(root: Path) -> None:
    path = root / "fer2013" / "fer2013.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for source in ("train", "test"):
            for row in _rows("fer2013", source):
                usage = "Training" if source == "train" else ("PublicTest", "PrivateTest")[row >= N_TEST // 2]
                pixels = " ".join(str(v) for v in stand_in_image("fer2013", source, row).reshape(-1))
                writer.writerow([label(row), pixels, usage])


def _stl10(root: Path) -> None:
    base = root / "stl10" / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    (base / "class_names.txt").write_text("\n".join(ct.classnames("STL10")) + "\n")
    for source in ("train", "test"):
        rows = _rows("stl10", source)
        images = np.stack([stand_in_image("stl10", source, r) for r in rows])  # N, H, W, 3
        images.transpose(0, 3, 2, 1).tofile(base / f"{source}_X.bin")  # channels, each column-major
        np.array([label(r) + 1 for r in rows], np.uint8).tofile(base / f"{source}_y.bin")


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))  # writing a stand-in file; reading never unpickles


def _cifar_data(task: str, rows: Iterable[int], source: str) -> np.ndarray:
    return np.stack([stand_in_image(task, source, r).transpose(2, 0, 1).reshape(-1) for r in rows])


def _cifar10(root: Path) -> None:
    base = root / "cifar-10-batches-py"
    names = [c.encode() for c in ct.classnames("CIFAR10")]
    _pickle(base / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    per = N_TRAIN // 5
    for b in range(5):
        rows = range(b * per, (b + 1) * per)
        _pickle(
            base / f"data_batch_{b + 1}",
            {b"data": _cifar_data("cifar10", rows, "train"), b"labels": [label(r) for r in rows]},
        )
    rows = _rows("cifar10", "test")
    _pickle(
        base / "test_batch",
        {b"data": _cifar_data("cifar10", rows, "test"), b"labels": [label(r) for r in rows]},
    )


def _cifar100(root: Path) -> None:
    base = root / "cifar-100-python"
    _pickle(base / "meta", {b"fine_label_names": [c.encode() for c in ct.classnames("CIFAR100")]})
    for source in ("train", "test"):
        rows = _rows("cifar100", source)
        _pickle(
            base / source,
            {
                b"data": _cifar_data("cifar100", rows, source),
                b"fine_labels": [label(r) for r in rows],
                b"coarse_labels": [0 for _ in rows],
            },
        )


def _idx(root: Path, task: str, folder: str, stems: dict[str, str]) -> None:
    raw = root / folder / folder / "raw"  # the authors pass <data>/<folder> as torchvision's root
    for source, stem in stems.items():
        rows = _rows(task, source)
        write_idx(
            raw / f"{stem}-images-idx3-ubyte", np.stack([stand_in_image(task, source, r) for r in rows])
        )
        write_idx(raw / f"{stem}-labels-idx1-ubyte.gz", np.array([label(r) for r in rows], np.uint8))


WRITERS = {
    "flowers102": _flowers102,
    "oxfordiiitpet": _oxfordiiitpet,
    "food101": _food101,
    "renderedsst2": _renderedsst2,
    "pcam": _pcam,
    "fer2013": _fer2013,
    "stl10": _stl10,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "fashionmnist": lambda root: _idx(
        root, "fashionmnist", "FashionMNIST", {"train": "train", "test": "t10k"}
    ),
    "kmnist": lambda root: _idx(root, "kmnist", "KMNIST", {"train": "train", "test": "t10k"}),
    "emnist": lambda root: _idx(
        root, "emnist", "EMNIST", {"train": "emnist-digits-train", "test": "emnist-digits-test"}
    ),
}


def write_clip20_data(root: Path, tasks: Iterable[str] | None = None) -> None:
    """Stand-in data of ``tasks`` (default: all 20 of ``CLIP20_TASKS``) under ``root``, each in its real
    layout; any of the eight Task Arithmetic tasks writes all eight (``write_clip8_data``)."""
    root = Path(root)
    tasks = list(CLIP20_TASKS if tasks is None else tasks)
    unknown = [t for t in tasks if t not in CLIP20_TASKS]
    if unknown:
        raise ValueError(f"write_clip20_data: unknown tasks {unknown}; known: {list(CLIP20_TASKS)}")
    if any(t in CLIP8_TASKS for t in tasks):
        from tests.helpers.clip8_fixture import write_clip8_data

        write_clip8_data(root)
    for t in tasks:
        if t in WRITERS:
            WRITERS[t](root)
