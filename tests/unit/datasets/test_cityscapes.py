"""Cityscapes loaders on tiny fixtures named like the official release (PNG) and the MTAN npy layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simo_merge.datasets import DATASETS, build_dataset
from simo_merge.datasets.cityscapes import (
    CITYSCAPES7_CLASS_NAMES,
    CITYSCAPES19_CLASS_NAMES,
    Cityscapes,
    CityscapesNpy,
    decode_disparity,
    label_id_lut,
)
from simo_merge.datasets.transforms import JointTransform
from tests.helpers.cityscapes_files import make_simo_npy_root

H, W = 4, 8

# labelIds row used in every fixture frame, with the expected trainId / category of each pixel
LABEL_IDS = np.array([7, 8, 26, 33, 0, 9, 24, 23], np.uint8)
TRAIN_IDS = np.array([0, 1, 13, 18, 255, 255, 11, 10])
CATEGORIES = np.array(
    [0, 0, 6, 6, 255, 255, 5, 4]
)  # flat, flat, vehicle, vehicle, void, parking(ignored), ...
# 16-bit disparity row: p = 0 invalid, else (p - 1) / 256
DISP_RAW = np.array([0, 1, 257, 25601, 65535, 513, 0, 129], np.uint16)
DISP = np.array([0.0, 0.0, 1.0, 100.0, 255.9921875, 2.0, 0.0, 0.5], np.float32)  # 65534 / 256


def write_cityscapes_frame(root: Path, split: str, city: str, seq: int, frame: int, shade: int) -> str:
    """One frame with the official names; returns its ``{city}_{seq}_{frame}`` stem."""
    stem = f"{city}_{seq:06d}_{frame:06d}"
    paths = {
        "img": root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "lab": root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
        "disp": root / "disparity" / split / city / f"{stem}_disparity.png",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = shade
    img[..., 1] = np.arange(W, dtype=np.uint8)[None, :] * 10
    Image.fromarray(img).save(paths["img"])
    Image.fromarray(np.tile(LABEL_IDS, (H, 1))).save(paths["lab"])  # 8-bit, mode L
    Image.fromarray(np.tile(DISP_RAW, (H, 1))).save(paths["disp"])  # 16-bit grayscale PNG
    # other official files next to them must be ignored
    Image.fromarray(np.zeros((H, W), np.uint8)).save(paths["lab"].with_name(f"{stem}_gtFine_instanceIds.png"))
    return stem


@pytest.fixture()
def city_root(tmp_path: Path) -> Path:
    write_cityscapes_frame(tmp_path, "train", "zurich", 0, 19, shade=30)
    write_cityscapes_frame(tmp_path, "train", "aachen", 1, 5, shade=20)
    write_cityscapes_frame(tmp_path, "train", "aachen", 0, 19, shade=10)
    write_cityscapes_frame(tmp_path, "val", "lindau", 0, 0, shade=40)
    return tmp_path


def test_label_table_lookups_by_hand() -> None:
    lut19, lut7 = label_id_lut(19), label_id_lut(7)
    np.testing.assert_array_equal(lut19[LABEL_IDS], TRAIN_IDS)
    np.testing.assert_array_equal(lut7[LABEL_IDS], CATEGORIES)
    assert lut19[11] == 2 and lut19[17] == 5 and lut19[31] == 16 and lut19[22] == 9
    assert lut7[11] == 1 and lut7[17] == 2 and lut7[21] == 3 and lut7[12] == 1  # construction/object/nature
    for ignored in (1, 2, 3, 4, 5, 6, 10, 14, 15, 16, 18, 29, 30, 34, 255):
        assert lut19[ignored] == 255 and lut7[ignored] == 255
    assert sorted(set(lut19.tolist()) - {255}) == list(range(19))
    assert sorted(set(lut7.tolist()) - {255}) == list(range(7))
    assert CITYSCAPES19_CLASS_NAMES[0] == "road" and CITYSCAPES19_CLASS_NAMES[18] == "bicycle"
    assert CITYSCAPES7_CLASS_NAMES == ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
    with pytest.raises(ValueError, match="19 or 7"):
        label_id_lut(8)


def test_decode_disparity_by_hand() -> None:
    value, valid = decode_disparity(DISP_RAW)
    np.testing.assert_array_equal(valid, DISP_RAW > 0)
    np.testing.assert_allclose(value, DISP)


def test_official_layout_order_labels_and_disparity(city_root: Path) -> None:
    ds = Cityscapes(city_root, split="train")
    assert len(ds) == 3 and ds.tasks == ["semseg", "disparity"]
    assert [p.name for p in ds.images] == [
        "aachen_000000_000019_leftImg8bit.png",
        "aachen_000001_000005_leftImg8bit.png",
        "zurich_000000_000019_leftImg8bit.png",
    ]
    s = ds[2]
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    assert s["image"][0, 0, 0] == pytest.approx(30 / 255) and s["image"][1, 2, 5] == pytest.approx(50 / 255)
    for r in range(H):
        np.testing.assert_array_equal(s["semseg"][r].numpy(), TRAIN_IDS)
        np.testing.assert_allclose(s["disparity"][0, r].numpy(), DISP)
        np.testing.assert_array_equal(s["disparity_mask"][r].numpy(), DISP_RAW > 0)
    np.testing.assert_array_equal(s["semseg_mask"][0].numpy(), TRAIN_IDS != 255)
    assert s["semseg"].dtype == torch.int64 and s["disparity"].shape == (1, H, W)
    cat = Cityscapes(city_root, split="train", num_classes=7, tasks=["semseg"])[0]
    np.testing.assert_array_equal(cat["semseg"][1].numpy(), CATEGORIES)
    assert set(cat) == {"image", "semseg", "semseg_mask"}
    assert (
        cat is not None
        and Cityscapes(city_root, split="train", num_classes=7).task_specs["semseg"].channels == 7
    )
    assert len(Cityscapes(city_root, split="val")) == 1


def test_official_size_option_resizes_without_rescaling_values(city_root: Path) -> None:
    s = Cityscapes(city_root, split="train", size=(8, 16))[0]
    assert (
        s["image"].shape == (3, 8, 16) and s["semseg"].shape == (8, 16) and s["disparity"].shape == (1, 8, 16)
    )
    # 2x nearest upscale: column c comes from source column c // 2
    np.testing.assert_array_equal(s["semseg"][3].numpy(), np.repeat(TRAIN_IDS, 2))
    np.testing.assert_array_equal(s["disparity_mask"][3].numpy(), np.repeat(DISP_RAW > 0, 2))
    # output column 7 samples source column 3.25: 0.75 * 100 + 0.25 * 255.9921875, no rescaling by the resize
    assert s["disparity"][0, 0, 7] == pytest.approx(0.75 * 100.0 + 0.25 * 255.9921875)
    t = Cityscapes(
        city_root, split="train", size=(8, 16), transform=JointTransform(train=True, flip_prob=1.0)
    )[0]
    np.testing.assert_array_equal(t["semseg"][3].numpy(), np.repeat(TRAIN_IDS, 2)[::-1])
    ds = build_dataset("cityscapes", root=city_root, split="val", tasks=["disparity"])
    assert isinstance(ds, Cityscapes) and ds.tasks == ["disparity"]
    assert {"cityscapes", "cityscapes_npy"} <= set(DATASETS.names())


def test_official_errors_name_the_file(city_root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit[/\\]test"):
        Cityscapes(city_root, split="test")
    with pytest.raises(ValueError, match="split"):
        Cityscapes(city_root, split="training")
    missing = city_root / "disparity" / "train" / "zurich" / "zurich_000000_000019_disparity.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="zurich_000000_000019_disparity.png"):
        Cityscapes(city_root, split="train")
    assert len(Cityscapes(city_root, split="train", tasks=["semseg"])) == 3  # disparity not needed
    lab = city_root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    bad = np.tile(LABEL_IDS, (H, 1))
    bad[2, 3] = 40
    Image.fromarray(bad).save(lab)
    with pytest.raises(ValueError, match="aachen_000000_000019_gtFine_labelIds.png.*40"):
        Cityscapes(city_root, split="train", tasks=["semseg"])[0]
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(lab)
    with pytest.raises(ValueError, match="aachen_000000_000019_gtFine_labelIds.png.*shape"):
        Cityscapes(city_root, split="train", tasks=["semseg"])[0]
    empty = tmp_path_factory.mktemp("empty")
    (empty / "leftImg8bit" / "train" / "x").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="leftImg8bit.png"):
        Cityscapes(empty, split="train")


# --------------------------------------------------------------------------------------------------------
# MTAN npy layout
# --------------------------------------------------------------------------------------------------------


def make_npy_root(root: Path, n: int = 3, hw: tuple[int, int] = (4, 6)) -> Path:
    h, w = hw
    for split in ("train", "val"):
        for sub in ("image", "label_7", "label_19", "depth"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            d = root / split
            np.save(d / "image" / f"{i}.npy", np.full((h, w, 3), 0.1 * i, np.float32))
            lab7 = np.full((h, w), float(i), np.float32)
            lab7[0, 1] = -1.0
            np.save(d / "label_7" / f"{i}.npy", lab7)
            lab19 = np.full((h, w), 18.0 - i, np.float32)
            lab19[1, 0] = -1.0
            np.save(d / "label_19" / f"{i}.npy", lab19)
            disp = np.full((h, w, 1), 0.05 * (i + 1), np.float32)
            disp[2, 3, 0] = 0.0
            np.save(d / "depth" / f"{i}.npy", disp)
    return root


def test_npy_layout_labels_and_disparity(tmp_path: Path) -> None:
    root = make_npy_root(tmp_path)
    ds = CityscapesNpy(root, split="train")
    assert len(ds) == 3 and ds.num_classes == 7 and ds.task_specs["semseg"].channels == 7
    s = ds[2]
    assert torch.allclose(s["image"], torch.full((3, 4, 6), 0.2))
    assert s["semseg"][0, 1] == 255 and not s["semseg_mask"][0, 1] and s["semseg"][3, 5] == 2
    assert s["disparity"].shape == (1, 4, 6) and s["disparity"][0, 0, 0] == pytest.approx(0.15)
    assert (
        not s["disparity_mask"][2, 3] and s["disparity"][0, 2, 3] == 0.0 and s["disparity_mask"].sum() == 23
    )
    s19 = CityscapesNpy(root, split="val", num_classes=19, tasks=["semseg"])[1]
    assert (
        s19["semseg"][0, 0] == 17
        and s19["semseg"][1, 0] == 255
        and set(s19) == {"image", "semseg", "semseg_mask"}
    )


def test_npy_errors_name_the_file(tmp_path: Path) -> None:
    root = make_npy_root(tmp_path)
    bad = np.zeros((4, 6), np.float32)
    bad[1, 2] = 7.0
    np.save(root / "train" / "label_7" / "0.npy", bad)
    with pytest.raises(ValueError, match=r"label_7[/\\]0\.npy.*7.*row 1, col 2"):
        CityscapesNpy(root, split="train")[0]
    np.save(root / "train" / "depth" / "1.npy", np.ones((4, 6, 2), np.float32))
    with pytest.raises(ValueError, match=r"depth[/\\]1\.npy"):
        CityscapesNpy(root, split="train")[1]
    np.save(root / "train" / "image" / "2.npy", np.full((4, 6, 3), 255.0, np.float32))
    with pytest.raises(ValueError, match=r"image[/\\]2\.npy.*\[0, 1\]"):
        CityscapesNpy(root, split="train")[2]
    for f in (root / "val" / "label_19").iterdir():
        f.unlink()
    (root / "val" / "label_19").rmdir()
    with pytest.raises(FileNotFoundError, match=r"val[/\\]label_19"):
        CityscapesNpy(root, split="val", num_classes=19)
    assert len(CityscapesNpy(root, split="val", num_classes=19, tasks=["disparity"])) == 3
    with pytest.raises(ValueError, match="split"):
        CityscapesNpy(root, split="test")


# --------------------------------------------------------------------------------------------------------
# SIMO protocol: label_19 + part_seg + depth npy folders; 2975 train files -> 2380 / 595; test = val folder
# --------------------------------------------------------------------------------------------------------
#: torch.randperm(2975, generator=torch.Generator().manual_seed(42)): what the SIMO code's
#: ``random_split(train_set, [2380, 595], torch.Generator().manual_seed(42))`` hands out first.
SIMO_TRAIN_FIRST8 = [1492, 38, 2190, 1909, 1598, 1060, 2277, 2203]
SIMO_VAL_FIRST8 = [2015, 996, 268, 2628, 2066, 2450, 1135, 1264]


def test_npy_simo_protocol_splits_tasks_and_part_seg(tmp_path: Path) -> None:
    root = make_simo_npy_root(tmp_path)
    train = CityscapesNpy(root, split="train", protocol="simo")
    val = CityscapesNpy(root, split="val", protocol="simo")
    test = CityscapesNpy(root, split="test", protocol="simo")
    assert (len(train), len(val), len(test)) == (2380, 595, 500)
    assert train.tasks == ["semseg", "part_seg", "disparity"] and train.num_classes == 19
    assert train.task_specs["part_seg"].channels == 10 and train.task_specs["semseg"].channels == 19
    assert train.indices[:8] == SIMO_TRAIN_FIRST8 and val.indices[:8] == SIMO_VAL_FIRST8
    ref_train, ref_val = torch.utils.data.random_split(
        range(2975), [2380, 595], generator=torch.Generator().manual_seed(42)
    )
    assert train.indices == list(ref_train.indices) and val.indices == list(ref_val.indices)
    assert test.indices == list(range(500)) and test.data_dir == root / "val"
    assert train.data_dir == val.data_dir == root / "train"

    s = val[0]  # file train/*/2015.npy
    assert s["image"][0, 0, 0] == pytest.approx(0.015)
    assert s["semseg"][0, 0] == 2015 % 19 and s["semseg"][0, 1] == 255 and not s["semseg_mask"][0, 1]
    assert s["part_seg"].dtype == torch.int64 and s["part_seg"][0, 0] == 2015 % 10
    assert s["part_seg"][1, 0] == 255 and not s["part_seg_mask"][1, 0] and s["part_seg_mask"].sum() == 5
    assert s["disparity"][0, 0, 0] == pytest.approx(2.016) and not s["disparity_mask"][1, 2]
    t = test[7]
    assert t["part_seg"][0, 0] == 7 and t["disparity"][0, 0, 0] == pytest.approx(0.008)

    resized = CityscapesNpy(root, split="test", protocol="simo", transform=JointTransform(size=(4, 6)))[3]
    assert resized["part_seg"].shape == (4, 6) and set(resized["part_seg"].unique().tolist()) == {3, 255}


def test_npy_simo_protocol_errors(tmp_path: Path) -> None:
    root = make_simo_npy_root(tmp_path, n_train=5, n_val=2)
    with pytest.raises(ValueError, match=r"2975.*has 5"):
        CityscapesNpy(root, split="train", protocol="simo")
    assert len(CityscapesNpy(root, split="test", protocol="simo")) == 2
    with pytest.raises(ValueError, match="protocol='simo'"):
        CityscapesNpy(root, split="test")
    (root / "val" / "part_seg" / "1.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"part_seg[/\\]1\.npy"):
        CityscapesNpy(root, split="test", protocol="simo")
    np.save(root / "val" / "part_seg" / "1.npy", np.full((2, 3), 10.0, np.float32))
    with pytest.raises(ValueError, match=r"part_seg[/\\]1\.npy.*10"):
        CityscapesNpy(root, split="test", protocol="simo")[1]
