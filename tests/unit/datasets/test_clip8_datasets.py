"""Loaders of the eight CLIP classification datasets, on tiny fixtures written in each on-disk format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from simo_merge.datasets import DATASETS, build_dataset
from simo_merge.datasets.clip8 import (
    CLIP8_TASKS,
    EUROSAT_CLASSNAMES,
    GTSRB_CLASSNAMES,
    clip_preprocess,
    read_idx,
)
from tests.helpers.idx_files import write_idx


def _save(path: Path, value: int, size: tuple[int, int] = (8, 8)) -> None:
    """Write a uniform RGB image whose red channel is ``value`` (identifies the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[..., 0] = value
    Image.fromarray(arr).save(path)


def _red(sample: dict[str, torch.Tensor]) -> int:
    return int(round(float(sample["image"][0].mean()) * 255))


def _folder_split(base: Path, split: str, counts: dict[str, int], ext: str = ".png") -> None:
    for cls, n in counts.items():
        for i in range(n):
            _save(base / split / cls / f"{cls}_{i}{ext}", 10 * i)


def _labels(ds) -> list[int]:
    return [int(ds[i][ds.name]) for i in range(len(ds))]


# --------------------------------------------------------------------------------------------------------
# Preprocessing, registry
# --------------------------------------------------------------------------------------------------------
def test_registry_has_the_eight_tasks():
    assert set(CLIP8_TASKS) <= set(DATASETS.names())
    assert len(CLIP8_TASKS) == 8


def test_clip_preprocess_centre_crop_of_wide_image():
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10, 0] = 255  # left half red
    arr[:, 10:, 2] = 255  # right half blue
    out = clip_preprocess(Image.fromarray(arr), 10)  # shorter side already 10: crop columns 5..14
    assert out.shape == (10, 10, 3) and out.dtype == np.float32
    assert np.all(out[:, :5, 0] == 1.0) and np.all(out[:, :5, 2] == 0.0)
    assert np.all(out[:, 5:, 2] == 1.0) and np.all(out[:, 5:, 0] == 0.0)


def test_clip_preprocess_resizes_shorter_side_bicubic():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (12, 30, 3), dtype=np.uint8)
    out = clip_preprocess(Image.fromarray(arr), 6)
    # shorter side 12 -> 6, longer 30 -> int(6 * 30 / 12) = 15, then crop columns round(4.5)=4..9
    ref = np.asarray(Image.fromarray(arr).resize((15, 6), Image.BICUBIC), np.float32)[:, 4:10] / 255
    np.testing.assert_allclose(out, ref)
    gray = clip_preprocess(Image.fromarray(arr[..., 0]), None)
    assert gray.shape == (12, 30, 3) and np.array_equal(gray[..., 0], gray[..., 2])


# --------------------------------------------------------------------------------------------------------
# MNIST (IDX) and SVHN (.mat)
# --------------------------------------------------------------------------------------------------------
def test_mnist_idx(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    imgs = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4) * 5
    write_idx(raw / "train-images-idx3-ubyte.gz", imgs)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.array([7, 0, 3], np.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte", imgs[:2])
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([9, 1], np.uint8))
    np.testing.assert_array_equal(read_idx(raw / "train-images-idx3-ubyte.gz"), imgs)

    train = build_dataset("mnist", root=tmp_path, split="train", image_size=None)
    assert len(train) == 3 and _labels(train) == [7, 0, 3] and train.classnames[7] == "7"
    s = train[2]
    assert s["image"].shape == (3, 4, 4) and s["mnist"].dtype == torch.long and s["mnist"].ndim == 0
    for c in range(3):  # grey replicated to RGB
        np.testing.assert_allclose(s["image"][c].numpy(), imgs[2] / 255.0, atol=1e-6)
    test = build_dataset("mnist", root=tmp_path, split="test", image_size=8)
    assert _labels(test) == [9, 1] and test[0]["image"].shape == (3, 8, 8)

    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        build_dataset("mnist", root=tmp_path, split="test")
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        build_dataset("mnist", root=tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="MNIST"):
        build_dataset("mnist", root=tmp_path / "MNIST", split="train")


@pytest.mark.parametrize("sub", ["svhn", ""])
def test_svhn_mat(tmp_path, sub):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [5], [10]], np.uint8)})
    ds = build_dataset("svhn", root=tmp_path, split="test", image_size=None)
    assert len(ds) == 4 and _labels(ds) == [0, 1, 5, 0]
    np.testing.assert_allclose(ds[1]["image"].permute(1, 2, 0).numpy() * 255, x[..., 1], atol=1e-3)
    assert build_dataset("svhn", root=tmp_path, split="test")[0]["image"].shape == (3, 224, 224)
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        build_dataset("svhn", root=tmp_path, split="train")


# --------------------------------------------------------------------------------------------------------
# ImageFolder layouts
# --------------------------------------------------------------------------------------------------------
def test_eurosat_splits_and_clip_names(tmp_path):
    base = tmp_path / "EuroSAT_splits"
    _folder_split(base, "train", {"SeaLake": 2, "AnnualCrop": 1, "Forest": 2}, ".jpg")
    _folder_split(base, "test", {"SeaLake": 1, "Forest": 1}, ".jpg")  # a class absent from test
    train = build_dataset("eurosat", root=tmp_path, split="train", image_size=16)
    assert train.classnames == ["annual crop land", "forest", "lake or sea"]
    assert _labels(train) == [0, 1, 1, 2, 2]
    test = build_dataset("eurosat", root=tmp_path, split="test")
    assert _labels(test) == [1, 2] and test.num_classes == 3  # ids follow train's class list
    assert train[0]["image"].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="EuroSAT_splits/val"):
        build_dataset("eurosat", root=tmp_path, split="val")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        build_dataset("eurosat", root=tmp_path, split="valid")
    _folder_split(base, "val", {"Pasture": 1})
    with pytest.raises(ValueError, match="Pasture"):
        build_dataset("eurosat", root=tmp_path, split="val")
    assert set(EUROSAT_CLASSNAMES) == {
        "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
        "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
    }  # fmt: skip


def test_eurosat_missing_root_names_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="EuroSAT_splits"):
        build_dataset("eurosat", root=tmp_path)


def test_sun397_folder_names(tmp_path):
    base = tmp_path / "sun397"
    _folder_split(base, "train", {"b_bakery_shop": 1, "a_abbey": 2})
    _folder_split(base, "val", {"b_bakery_shop": 2})
    ds = build_dataset("sun397", root=tmp_path, split="val")
    assert ds.classnames == ["abbey", "bakery shop"]
    assert _labels(ds) == [1, 1] and [_red(ds[i]) for i in range(2)] == [0, 10]
    assert _labels(build_dataset("sun397", root=tmp_path, split="train")) == [0, 0, 1]


def test_resisc45_both_layouts(tmp_path):
    folders = tmp_path / "a"
    _folder_split(folders / "resisc45", "test", {"sea_ice": 1, "airplane": 2}, ".jpg")
    ds = build_dataset("resisc45", root=folders, split="test")
    assert ds.classnames == ["airplane", "sea ice"] and _labels(ds) == [0, 0, 1]

    native = tmp_path / "b" / "resisc45"
    for cls in ("airplane", "sea_ice", "storage_tank"):
        for i in (1, 2):
            _save(native / "NWPU-RESISC45" / cls / f"{cls}_{i:03d}.jpg", 20 * i)
    (native / "resisc45-train.txt").write_text("sea_ice_002.jpg\nairplane_001.jpg\nstorage_tank_001.jpg\n")
    ds = build_dataset("resisc45", root=native.parent, split="train")
    assert ds.classnames == ["airplane", "sea ice", "storage tank"]
    assert _labels(ds) == [1, 0, 2] and _red(ds[0]) == 40
    with pytest.raises(FileNotFoundError, match="resisc45-val.txt"):
        build_dataset("resisc45", root=native.parent, split="val")
    (native / "resisc45-test.txt").write_text("sea_ice_009.jpg\n")
    with pytest.raises(FileNotFoundError, match="sea_ice_009.jpg"):
        build_dataset("resisc45", root=native.parent, split="test")[0]


def test_dtd_both_layouts(tmp_path):
    _folder_split(tmp_path / "a" / "dtd", "train", {"zigzagged": 1, "banded": 1})
    _folder_split(tmp_path / "a" / "dtd", "val", {"zigzagged": 2})
    ds = build_dataset("dtd", root=tmp_path / "a", split="test")  # task_vectors' test set: the val folder
    assert ds.classnames == ["banded", "zigzagged"] and _labels(ds) == [1, 1]
    with pytest.raises(ValueError, match="dtd: 2 training images leave no val split"):
        build_dataset("dtd", root=tmp_path / "a", split="val")
    _folder_split(tmp_path / "a" / "dtd", "test", {"banded": 3})  # a folder per split: read as named
    assert _labels(build_dataset("dtd", root=tmp_path / "a", split="val")) == [1, 1]

    arch = tmp_path / "b" / "dtd" / "dtd"
    for cls in ("banded", "woven"):
        _save(arch / "images" / cls / f"{cls}_0001.jpg", 50)
    (arch / "labels").mkdir()
    (arch / "labels" / "test1.txt").write_text("woven/woven_0001.jpg\nbanded/banded_0001.jpg\n")
    ds = build_dataset("dtd", root=tmp_path / "b", split="test")
    assert _labels(ds) == [1, 0] and ds.classnames == ["banded", "woven"]
    with pytest.raises(FileNotFoundError, match="train2.txt"):
        build_dataset("dtd", root=tmp_path / "b", split="train", partition=2)


def task_vectors_dtd_val(n):
    """mlfoundations/task_vectors @826a64c ``src/datasets/registry.py``, transcribed: ``get_dataset(
    "DTDVal", ...)`` (l.83-93, ``val_fraction=0.1, max_val_samples=5000``) calls
    ``split_train_into_train_val`` (l.36-53, ``seed=0``):
        total_size = len(dataset.train_dataset); val_size = int(total_size * val_fraction)
        val_size = min(val_size, max_val_samples); train_size = total_size - val_size
        trainset, valset = random_split(dataset.train_dataset, [train_size, val_size],
                                        generator=torch.Generator().manual_seed(seed))
    and DTDVal tunes on ``valset`` (its ``test_dataset``, l.71) and trains on ``trainset`` (l.63)."""
    from torch.utils.data import random_split

    val_fraction, max_val_samples, seed = 0.1, 5000, 0
    total_size = n
    val_size = min(int(total_size * val_fraction), max_val_samples)
    train_size = total_size - val_size
    trainset, valset = random_split(
        range(n), [train_size, val_size], generator=torch.Generator().manual_seed(seed)
    )
    return list(trainset.indices), list(valset.indices)


def test_dtd_val_is_task_vectors_dtdval_in_both_layouts(tmp_path):
    """DTD ``val`` (what λ and realignment tune on) is DTDVal's held-out 10 % of task_vectors' dtd/train,
    index-exact, not the test set; ``train`` the other 90 %, ``test`` the val folder."""
    counts = {"banded": 9, "woven": 14, "zigzagged": 11}  # 34 images: DTDVal holds int(3.4) = 3
    _folder_split(tmp_path / "a" / "dtd", "train", counts)
    _folder_split(tmp_path / "a" / "dtd", "val", {"woven": 2})
    folder = tmp_path / "a" / "dtd" / "train"
    image_folder = [
        folder / c / f"{c}_{i}.png" for c in sorted(counts) for i in sorted(range(counts[c]), key=str)
    ]
    want_train, want_val = task_vectors_dtd_val(len(image_folder))
    assert len(want_val) == 3 and len(want_train) == 31
    splits = {s: build_dataset("dtd", root=tmp_path / "a", split=s) for s in ("train", "val", "test")}
    assert splits["val"]._files == [image_folder[i] for i in want_val]
    assert splits["train"]._files == [image_folder[i] for i in want_train]
    assert [p.parent.parent.name for p in splits["test"]._files] == ["val", "val"]
    assert not set(splits["val"]._files) & set(splits["test"]._files)
    # the archive: dtd/train = train1 + val1 listings in ImageFolder order (class, then file name)
    arch = tmp_path / "b" / "dtd"
    rels = [p.relative_to(folder).as_posix() for p in image_folder]
    listed = {
        "train": rels[1::2][::-1],
        "val": rels[0::2],
        "test": ["woven/woven_0.png", "banded/banded_0.png"],
    }
    for part, names in listed.items():
        for rel in names:
            _save(arch / "images" / rel, 40)
        (arch / "labels").mkdir(exist_ok=True)
        (arch / "labels" / f"{part}1.txt").write_text("\n".join(names) + "\n")
    archive = {s: build_dataset("dtd", root=tmp_path / "b", split=s) for s in ("train", "val", "test")}
    for split in ("train", "val"):
        assert [p.relative_to(arch / "images").as_posix() for p in archive[split]._files] == [
            p.relative_to(folder).as_posix() for p in splits[split]._files
        ]
        assert archive[split].targets == splits[split].targets
    assert archive["test"].listings == [arch / "labels" / "test1.txt"] and len(archive["test"]) == 2


def test_dtd_archive_splits_are_task_vectors_folders(tmp_path):
    """task_vectors' dtd/val (its test set) = the archive's test1.txt; dtd/train = train1 + val1."""
    from simo_merge.jobs.clip import DEFAULT_TEST_SPLITS

    arch = tmp_path / "dtd"
    parts = {"train": [f"banded/banded_{i:04d}.jpg" for i in range(6)] + ["woven/woven_0001.jpg"],
             "val": [f"woven/woven_{i:04d}.jpg" for i in range(2, 5)],
             "test": ["banded/banded_0103.jpg", "woven/woven_0103.jpg", "woven/woven_0104.jpg"]}  # fmt: skip
    for part, rels in parts.items():
        for rel in rels:
            _save(arch / "images" / rel, 40)
        (arch / "labels").mkdir(exist_ok=True)
        (arch / "labels" / f"{part}1.txt").write_text("\n".join(rels) + "\n")
    assert "dtd" not in DEFAULT_TEST_SPLITS  # the bench tests DTD on "test"
    bench_test = build_dataset("dtd", root=tmp_path, split="test")
    assert [p.relative_to(arch / "images").as_posix() for p in bench_test._files] == parts["test"]
    assert bench_test.listings == [arch / "labels" / "test1.txt"] and _labels(bench_test) == [0, 1, 1]
    train, val = (build_dataset("dtd", root=tmp_path, split=s) for s in ("train", "val"))
    pooled = sorted(parts["train"] + parts["val"])
    assert len(val) == 1 and len(train) == 9  # int(10 * 0.1) = 1 held out
    got = [p.relative_to(arch / "images").as_posix() for p in train._files + val._files]
    assert sorted(got) == pooled
    official = build_dataset("dtd", root=tmp_path, split="val", archive_split="official")
    assert [p.name for p in official._files] == ["woven_0002.jpg", "woven_0003.jpg", "woven_0004.jpg"]
    with pytest.raises(ValueError, match="archive_split"):
        build_dataset("dtd", root=tmp_path, split="val", archive_split="paper")


def test_gtsrb_torchvision_layout(tmp_path):
    base = tmp_path / "gtsrb"
    for cls, n in (("00000", 2), ("00002", 1)):
        for i in range(n):
            _save(base / "GTSRB" / "Training" / cls / f"{cls}_{i:05d}.ppm", 30 * i)
        (base / "GTSRB" / "Training" / cls / f"GT-{cls}.csv").write_text("Filename;ClassId\n")
    train = build_dataset("gtsrb", root=tmp_path, split="train")
    assert _labels(train) == [0, 0, 2] and train.num_classes == 43
    assert train.classnames[14] == "stop" and len(GTSRB_CLASSNAMES) == 43

    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    for i in range(3):
        _save(test_dir / f"{i:05d}.ppm", 7 * i)
    (base / "GT-final_test.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
        "00000.ppm;8;8;0;0;7;7;16\n00001.ppm;8;8;0;0;7;7;1\n00002.ppm;8;8;0;0;7;7;42\n"
    )
    test = build_dataset("gtsrb", root=tmp_path, split="test")
    assert _labels(test) == [16, 1, 42] and _red(test[1]) == 7
    (base / "GT-final_test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="GT-final_test.csv"):
        build_dataset("gtsrb", root=tmp_path, split="test")


def test_gtsrb_image_folder_uses_numeric_ids(tmp_path):
    _folder_split(tmp_path / "gtsrb", "train", {"2": 1, "10": 2})  # sorted as strings: "10" < "2"
    ds = build_dataset("gtsrb", root=tmp_path, split="train")
    assert _labels(ds) == [10, 10, 2]
    _folder_split(tmp_path / "gtsrb", "test", {"stop": 1})
    with pytest.raises(ValueError, match="stop"):
        build_dataset("gtsrb", root=tmp_path, split="test")


def _struct_array(rows: list[tuple[str, int]]) -> np.ndarray:
    arr = np.zeros((1, len(rows)), dtype=[("bbox_x1", "O"), ("class", "O"), ("fname", "O")])
    for i, (fname, cls) in enumerate(rows):
        arr[0, i] = (np.array([[1]], np.uint8), np.array([[cls]], np.uint8), fname)
    return arr


def test_cars_devkit_layout(tmp_path):
    base = tmp_path / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.array(
        ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Ram C/V Cargo Van Minivan 2012"], object
    )
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    scipy.io.savemat(
        base / "devkit" / "cars_train_annos.mat",
        {"annotations": _struct_array([("00001.jpg", 3), ("00002.jpg", 1)])},
    )
    scipy.io.savemat(
        base / "cars_test_annos_withlabels.mat", {"annotations": _struct_array([("00001.jpg", 2)])}
    )
    for split in ("train", "test"):
        for i in (1, 2):
            _save(base / f"cars_{split}" / f"{i:05d}.jpg", 60 * i, size=(12, 8))
    train = build_dataset("cars", root=tmp_path, split="train", image_size=8)
    assert train.classnames == list(names) and _labels(train) == [2, 0]
    assert train[0]["image"].shape == (3, 8, 8) and _red(train[1]) == 120
    test = build_dataset("cars", root=tmp_path, split="test")
    assert len(test) == 1 and _labels(test) == [1]
    with pytest.raises(ValueError, match="train, test"):
        build_dataset("cars", root=tmp_path, split="val")
    (base / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(FileNotFoundError, match="cars_meta.mat"):
        build_dataset("cars", root=tmp_path, split="train")


def test_cars_image_folder(tmp_path):
    _folder_split(
        tmp_path / "stanford_cars", "train", {"Acura RL Sedan 2012": 1, "AM General Hummer SUV 2000": 1}
    )
    ds = build_dataset("cars", root=tmp_path, split="train")
    assert ds.classnames == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]  # plain sorted()
    assert _labels(ds) == [0, 1]


# --------------------------------------------------------------------------------------------------------
# Common behaviour
# --------------------------------------------------------------------------------------------------------
def test_tasks_transform_specs_and_batching(tmp_path):
    _folder_split(tmp_path / "dtd", "train", {"banded": 2, "woven": 1})
    _folder_split(tmp_path / "dtd", "test", {"banded": 1})  # a folder per split: train read as it is
    calls = []

    def flip(arrays):
        calls.append(arrays["image"].shape)
        return {"image": arrays["image"][:, ::-1]}

    ds = build_dataset("dtd", root=tmp_path, split="train", transform=flip, image_size=8)
    assert ds.tasks == ["dtd"] and set(ds[0]) == {"image", "dtd"} and calls == [(8, 8, 3)]
    assert set(build_dataset("dtd", root=tmp_path, tasks=[])[0]) == {"image"}
    with pytest.raises(ValueError, match="unsupported"):
        build_dataset("dtd", root=tmp_path, tasks=["semseg"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 8, 8) and batch["dtd"].tolist() == [0, 0, 1]
    assert ds[-1]["dtd"].item() == 1
    with pytest.raises(IndexError):
        ds[3]
    specs = ds.task_specs
    assert specs["dtd"].kind == "classification" and specs["dtd"].channels == 2
