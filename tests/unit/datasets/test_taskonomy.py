"""Taskonomy loader on tiny fixtures written in the release's exact on-disk format."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simo_merge.datasets import DATASETS, build_dataset
from simo_merge.datasets.taskonomy import (
    SEMSEG_CLASSES,
    TINY_SPLITS,
    TaskonomyDataset,
    decode_depth_zbuffer,
)
from simo_merge.datasets.transforms import JointTransform
from tests.helpers.taskonomy_files import FOLDER, H, W
from tests.helpers.taskonomy_files import omnidata as _omnidata
from tests.helpers.taskonomy_files import task_building as _task_building
from tests.helpers.taskonomy_files import write as _write
from tests.helpers.taskonomy_files import write_view as _write_view


@pytest.fixture()
def omni_root(tmp_path: Path) -> Path:
    folder = _omnidata(tmp_path)
    _write_view(folder, "allensville", 0, 0)
    _write_view(folder, "allensville", 0, 1)
    _write_view(folder, "allensville", 1, 0, skip=("normal",))  # rgb without a normal file
    _write_view(folder, "collierville", 3, 0)  # val building
    _write_view(folder, "ihlen", 5, 2)  # test building
    return tmp_path


def test_fixture_files_have_release_bit_depths(omni_root: Path) -> None:
    png = str(omni_root / "{0}/taskonomy/allensville/point_0_view_0_domain_{0}.png")
    with Image.open(png.format("depth_zbuffer")) as depth:
        assert depth.mode.startswith("I;16") and np.array(depth).max() == 65535
    with (
        Image.open(png.format("normal")) as normal,
        Image.open(png.format("segment_semantic")) as seg,
    ):
        assert normal.mode == "RGB" and seg.mode == "L"


def test_decoded_values_match_hand_computed(omni_root: Path) -> None:
    ds = TaskonomyDataset(omni_root, buildings=["allensville"])
    assert ds.layout == "omnidata"
    assert ds.tasks == ["semseg", "depth", "normal", "keypoints2d", "edge", "autoencoding"]
    assert ds.samples == [("allensville", 0, 0), ("allensville", 0, 1)]
    assert ds.skipped == {"semseg": 0, "depth": 0, "normal": 1, "keypoints2d": 0, "edge": 0}
    s = ds[0]

    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    assert torch.allclose(s["image"][:, 0, 0], torch.tensor([0.2, 0.4, 1.0]))

    # depth in metres, 65535 and 0 masked
    assert s["depth"].shape == (1, H, W)
    assert torch.allclose(s["depth"][0, 0], torch.tensor([1.0, 2.0, 0.0, 0.0, 0.5, 1 / 512]))
    assert s["depth_mask"][0].tolist() == [True, True, False, False, True, True]
    assert torch.allclose(s["depth"][0, 1:], torch.full((H - 1, W), 5.0))

    # semseg: 0 uncertain -> 255 (ignored), k -> k - 1; 17 classes with background 0
    assert s["semseg"].dtype == torch.int64 and s["semseg"].shape == (H, W)
    assert s["semseg"][0].tolist() == [255, 0, 1, 16, 4, 2]
    assert s["semseg_mask"][0].tolist() == [False, True, True, True, True, True]
    assert (
        SEMSEG_CLASSES[1] == "bottle" and SEMSEG_CLASSES[16] == "vase" and SEMSEG_CLASSES[4] == "potted plant"
    )
    assert ds.task_specs["semseg"].channels == 17

    # normals: unit, stored axes used as they are (x right / y down / z forward)
    n, m = s["normal"], s["normal_mask"]
    assert n.shape == (3, H, W) and n.dtype == torch.float32
    assert m[0].tolist() == [True, True, True, False, True, True]
    eps = 1 / 255  # 2 * 128 / 255 - 1
    facing = torch.tensor([eps, eps, -1.0]) / math.sqrt(1 + 2 * eps**2)  # B = 0 -> -1
    assert torch.allclose(n[:, 0, 0], facing, atol=1e-6)
    assert n[2, 0, 0] < -0.9999  # a surface facing the camera points back at it: -z
    up = torch.tensor([eps, -1.0, eps]) / math.sqrt(1 + 2 * eps**2)
    assert torch.allclose(n[:, 0, 1], up, atol=1e-6)  # G = 0 -> y = -1 (up, since y is down)
    assert n[0, 0, 2] < -0.9999 and n[0, 0, 4] > 0.9999  # R = 0 -> left, R = 255 -> right
    assert torch.equal(n[:, 0, 3], torch.zeros(3))
    norms = n.norm(dim=0)
    assert torch.allclose(norms[m], torch.ones(int(m.sum())), atol=1e-6)

    # 16-bit keypoints / edges divided by 65535, defined everywhere
    assert torch.allclose(s["keypoints2d"][0, 0, :3], torch.tensor([1.0, 32768 / 65535, 0.0]))
    assert torch.allclose(s["edge"][0, 0, :3], torch.tensor([0.2, 0.0, 1.0]))
    assert s["edge_mask"].all() and s["keypoints2d_mask"].all()

    # autoencoding target is the image
    assert torch.equal(s["autoencoding"], s["image"]) and s["autoencoding_mask"].all()
    for task in ds.tasks:
        assert s[f"{task}_mask"].dtype == torch.bool and s[f"{task}_mask"].shape == (H, W)


def test_decode_depth_function_directly() -> None:
    depth, mask = decode_depth_zbuffer(np.array([[5120, 65535, 65534]], dtype=np.uint16))
    assert depth.tolist() == [[10.0, 0.0, 65534 / 512]] and mask.tolist() == [[True, False, True]]


def test_missing_task_file_is_skipped_and_logged_or_raises_when_strict(
    omni_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        ds = TaskonomyDataset(omni_root, buildings=["allensville"], tasks=["normal"])
    assert len(ds) == 2 and ds.skipped == {"normal": 1}
    assert "skipped" in caplog.text and "'normal': 1" in caplog.text

    only_depth = TaskonomyDataset(omni_root, buildings=["allensville"], tasks=["depth"])
    assert len(only_depth) == 3 and only_depth.samples[-1] == ("allensville", 1, 0)

    with pytest.raises(FileNotFoundError, match=r"normal.*allensville.*point_1_view_0_domain_normal\.png"):
        TaskonomyDataset(omni_root, buildings=["allensville"], tasks=["normal"], strict=True)


def test_missing_task_folder_names_the_folder(omni_root: Path) -> None:
    edge_dir = omni_root / "edge_texture" / "taskonomy" / "allensville"
    for f in edge_dir.iterdir():
        f.unlink()
    edge_dir.rmdir()
    with pytest.raises(FileNotFoundError, match=r"edge_texture.*" + os.sep + "allensville"):
        TaskonomyDataset(omni_root, buildings=["allensville"], tasks=["depth", "edge"])
    # without the edge task the building is fine
    assert len(TaskonomyDataset(omni_root, buildings=["allensville"], tasks=["depth"])) == 3


def test_split_by_building(omni_root: Path) -> None:
    kw = dict(tasks=["depth", "semseg"], skip_missing_buildings=True)
    train = TaskonomyDataset(omni_root, split="train", **kw)
    val = TaskonomyDataset(omni_root, split="val", **kw)
    test = TaskonomyDataset(omni_root, split="test", **kw)
    assert {b for b, _, _ in train.samples} == {"allensville"} and len(train) == 3
    assert val.samples == [("collierville", 3, 0)]
    assert test.samples == [("ihlen", 5, 2)]
    assert "beechwood" in train.missing_buildings and len(train.missing_buildings) == 24
    assert len(TINY_SPLITS["train"]) == 25 and len(TINY_SPLITS["val"]) == 5 and len(TINY_SPLITS["test"]) == 5
    all_buildings = [b for names in TINY_SPLITS.values() for b in names]
    assert len(set(all_buildings)) == 35

    with pytest.raises(FileNotFoundError, match=r"rgb folder of building 'beechwood'.*beechwood"):
        TaskonomyDataset(omni_root, split="train", tasks=["depth"])
    with pytest.raises(ValueError, match="unknown split 'trainval'"):
        TaskonomyDataset(omni_root, split="trainval")


def test_buildings_override_and_registry(omni_root: Path) -> None:
    ds = build_dataset("taskonomy", root=omni_root, split="test", buildings=["collierville", "ihlen"],
                       tasks=["segment_semantic", "depth_zbuffer", "edge_texture"])  # fmt: skip
    assert DATASETS.get("taskonomy") is TaskonomyDataset
    assert ds.tasks == ["semseg", "depth", "edge"]  # Taskonomy names map to ours
    assert ds.samples == [("collierville", 3, 0), ("ihlen", 5, 2)]
    with pytest.raises(ValueError, match="unknown task 'curvature'"):
        TaskonomyDataset(omni_root, buildings=["ihlen"], tasks=["curvature"])
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        TaskonomyDataset(omni_root / "no_such_dir")


def test_building_layout_with_legacy_names(tmp_path: Path) -> None:
    """Per-building tar extraction (``{root}/{building}/{task}``), legacy folder/domain names."""
    legacy = {"semseg": "segmentsemantic", "edge": "edge2d", "keypoints2d": "keypoint2d"}

    def folder(task_folder: str, building: str) -> Path:
        task = next((t for t, f in FOLDER.items() if f == task_folder), None)
        return tmp_path / building / legacy.get(task, task_folder)

    _write_view(folder, "hanson", 2, 3, domain=legacy)
    ds = TaskonomyDataset(tmp_path, buildings=["hanson"])
    assert ds.layout == "building" and ds.samples == [("hanson", 2, 3)]
    s = ds[0]
    assert s["semseg"][0].tolist() == [255, 0, 1, 16, 4, 2]
    assert torch.allclose(s["edge"][0, 0, 0], torch.tensor(0.2))


def test_building_task_layout(tmp_path: Path) -> None:
    """Each ``{building}_{task}.tar`` extracted into a folder named after it."""
    _write_view(lambda f, b: tmp_path / f"{b}_{f}" / f, "merom", 0, 0)
    ds = TaskonomyDataset(tmp_path, buildings=["merom"], tasks=["depth", "normal"])
    assert ds.layout == "building_task" and len(ds) == 1
    assert ds[0]["depth"][0, 0, 0] == 1.0


def test_bad_files_raise_errors_naming_them(tmp_path: Path) -> None:
    folder = _omnidata(tmp_path)
    _write_view(folder, "onaga", 0, 0)
    seg_path = folder("segment_semantic", "onaga") / "point_0_view_0_domain_segment_semantic.png"
    _write(seg_path, np.full((H, W), 40, dtype=np.uint8))
    ds = TaskonomyDataset(tmp_path, buildings=["onaga"], tasks=["semseg"])
    with pytest.raises(ValueError, match=r"point_0_view_0_domain_segment_semantic\.png.*found \[40\]"):
        ds[0]

    depth_path = folder("depth_zbuffer", "onaga") / "point_0_view_0_domain_depth_zbuffer.png"
    _write(depth_path, np.full((H, W), 7, dtype=np.uint8))  # 8-bit depth is not the release format
    with pytest.raises(ValueError, match=r"domain_depth_zbuffer\.png: depth_zbuffer must be a 16-bit PNG"):
        TaskonomyDataset(tmp_path, buildings=["onaga"], tasks=["depth"])[0]

    normal_path = folder("normal", "onaga") / "point_0_view_0_domain_normal.png"
    _write(normal_path, np.full((H + 1, W, 3), 128, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"domain_normal\.png: size 6x5 differs"):
        TaskonomyDataset(tmp_path, buildings=["onaga"], tasks=["normal"])[0]


def test_transform_receives_numpy_arrays_and_autoencoding_follows_image(omni_root: Path) -> None:
    seen = {}

    def crop(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.update({k: (v.dtype, v.shape) for k, v in arrays.items()})
        out = {k: v[1:3, 2:5].copy() for k, v in arrays.items()}
        out["image"] = 1.0 - out["image"]
        return out

    ds = TaskonomyDataset(
        omni_root, buildings=["ihlen"], tasks=["depth", "normal", "autoencoding"], transform=crop
    )
    s = ds[0]
    assert seen["image"] == (np.float32, (H, W, 3)) and seen["normal"] == (np.float32, (H, W, 3))
    assert seen["depth"] == (np.float32, (H, W)) and seen["depth_mask"] == (np.bool_, (H, W))
    assert "autoencoding" not in seen
    assert s["image"].shape == (3, 2, 3) and s["depth"].shape == (1, 2, 3) and s["normal"].shape == (3, 2, 3)
    assert torch.equal(s["autoencoding"], s["image"])
    assert torch.allclose(s["depth"], torch.full((1, 2, 3), 5.0))


def test_normal_signs_override(omni_root: Path) -> None:
    ds = TaskonomyDataset(omni_root, buildings=["ihlen"], tasks=["normal"], normal_signs=(1, 1, -1))
    assert ds[0]["normal"][2, 0, 0] > 0.9999
    with pytest.raises(ValueError, match="normal_signs"):
        TaskonomyDataset(omni_root, buildings=["ihlen"], tasks=["normal"], normal_signs=(1, 0, 1))


def test_joint_transform_resize(omni_root: Path) -> None:
    ds = TaskonomyDataset(omni_root, buildings=["ihlen"], transform=JointTransform(size=(8, 12)))
    s = ds[0]
    assert s["image"].shape == (3, 8, 12) and s["semseg"].shape == (8, 12) and s["depth"].shape == (1, 8, 12)
    assert set(s["semseg"].unique().tolist()) <= {255, 0, 1, 16, 4, 2}
    n = s["normal"]
    valid = s["normal_mask"]
    assert torch.allclose(n.norm(dim=0)[valid], torch.ones(int(valid.sum())), atol=1e-4)


# --------------------------------------------------------------------------------------------------------
# normal sign convention on a rendered view: decoded normals must agree with normals derived from depth
# --------------------------------------------------------------------------------------------------------
def _rendered_building(root: Path, building: str, hw: tuple[int, int] = (48, 64)) -> tuple[dict, float]:
    """One ray-cast room written as a Taskonomy view: 16-bit z-buffer in 1/512 m, normals stored in the
    convention the loader documents (our camera frame, facing the camera, channel = (n + 1) / 2 * 255)."""
    from simo_merge.datasets._raycast import render, sample_scene

    scene = sample_scene(np.random.default_rng(7))
    frame = render(scene, *hw)
    folder = _omnidata(root)
    raw_depth = np.clip(np.round(frame["depth"] * 512.0), 1, 65534).astype(np.uint16)
    raw_normal = np.clip(np.round((frame["normal"] + 1.0) * 127.5), 0, 255).astype(np.uint8)
    _write(folder("rgb", building) / "point_0_view_0_domain_rgb.png", frame["image"])
    _write(folder("depth_zbuffer", building) / "point_0_view_0_domain_depth_zbuffer.png", raw_depth)
    _write(folder("normal", building) / "point_0_view_0_domain_normal.png", raw_normal)
    return frame, scene.camera.focal(hw[1])


def _mean_angle_deg(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    cos = np.clip(np.sum(a * b, axis=-1)[mask], -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def test_normal_signs_agree_with_depth_derived_normals_on_a_rendered_view(tmp_path: Path) -> None:
    from simo_merge.datasets._geometry import Intrinsics, normal_axis_agreement, normals_from_depth

    frame, f = _rendered_building(tmp_path, "allensville")
    h, w = frame["depth"].shape
    intr = Intrinsics(f, f, w / 2 - 0.5, h / 2 - 0.5)  # the renderer's pixel centres sit at index + 0.5
    s = TaskonomyDataset(tmp_path, buildings=["allensville"], tasks=["depth", "normal"])[0]
    depth = s["depth"][0].numpy()
    given = s["normal"].permute(1, 2, 0).numpy()
    derived, ok = normals_from_depth(depth, intr, s["depth_mask"].numpy())
    ok &= s["normal_mask"].numpy() & (frame["edge"] == 0)  # away from occlusions / creases
    assert ok.sum() > 0.5 * h * w
    assert _mean_angle_deg(given, derived, ok) < 3.0
    assert np.all(normal_axis_agreement(given, depth, intr, mask=ok) > 0.95)
    # the former convention (negate the stored z) disagrees with the geometry
    old = TaskonomyDataset(tmp_path, buildings=["allensville"], tasks=["normal"], normal_signs=(1, 1, -1))[0]
    old_n = old["normal"].permute(1, 2, 0).numpy()
    assert _mean_angle_deg(old_n, derived, ok) > 30.0
    assert normal_axis_agreement(old_n, depth, intr, mask=ok)[2] < -0.95


# --------------------------------------------------------------------------------------------------------
# SIMO protocol
# --------------------------------------------------------------------------------------------------------


def test_simo_protocol_buildings_order_limits_and_encodings(tmp_path: Path) -> None:
    from simo_merge.datasets.taskonomy import SIMO_PER_BUILDING, SIMO_SPLITS

    folder = _task_building(tmp_path)
    depth = np.array([[0, 1, 511, 65535, 512, 2]] * H, np.uint16)
    seg = np.array([[0, 1, 17, 5, 2, 3]] * H, np.uint8)
    kp = np.array([[0, 3129, 5000, 1, 1564, 3128]] * H, np.uint16)
    edge = np.array([[0, 11041, 65535, 5520, 1, 2]] * H, np.uint16)
    for building in SIMO_SPLITS["val"]:
        for point in (1, 2, 10):  # file-name order: point_10, point_1, point_2
            _write_view(folder, building, point, 0)
            for task, arr in (("depth_zbuffer", depth), ("keypoints2d", kp), ("edge_texture", edge)):
                _write(folder(task, building) / f"point_{point}_view_0_domain_{task}.png", arr)
            # the SIMO loader's segment_semantic files keep the legacy domain name
            (
                folder("segment_semantic", building) / f"point_{point}_view_0_domain_segment_semantic.png"
            ).unlink()
            _write(
                folder("segment_semantic", building) / f"point_{point}_view_0_domain_segmentsemantic.png", seg
            )
    assert SIMO_SPLITS["train"][0] == "allensville" and SIMO_PER_BUILDING == {
        "train": 2000,
        "val": 1000,
        "test": 1000,
    }

    ds = TaskonomyDataset(tmp_path, split="val", protocol="simo")
    assert ds.layout == "task_building" and ds.buildings == [
        "beechwood",
        "corozal",
        "klickitat",
        "shelbyville",
    ]
    assert ds.per_building == 1000 and len(ds) == 12 and ds.strict
    two = TaskonomyDataset(tmp_path, split="val", protocol="simo", per_building=2)
    assert two.samples[:4] == [
        ("beechwood", 10, 0),
        ("beechwood", 1, 0),
        ("corozal", 10, 0),
        ("corozal", 1, 0),
    ]
    assert ds.task_specs["semseg"].channels == 18 and ds.class_names[0] == "uncertain"

    assert ds[0]["depth"].shape == (1, 256, 256)  # every file resized to SIMO_SIZE before encoding
    # at its own size the resize keeps every value: the encodings alone
    s = TaskonomyDataset(tmp_path, split="val", protocol="simo", simo_size=(H, W))[0]
    log16 = math.log(2**16)
    # 65535, read as int16 (-1) as the SIMO loader's to_tensor reads 16-bit PNGs, gives -inf: missing
    expected_depth = [math.log1p(v) / log16 for v in (0, 1, 511, 0, 512, 2)]
    assert torch.allclose(s["depth"][0, 0], torch.tensor(expected_depth), atol=1e-6)
    assert s["depth_mask"][0].tolist() == [False, True, True, False, True, True]
    assert s["semseg"][0].tolist() == [255, 1, 17, 5, 2, 3] and not s["semseg_mask"][0, 0]
    assert torch.allclose(
        s["keypoints2d"][0, 0],
        torch.tensor([-1.0, 1.0, 1.0, 2 / 3129 - 1, 2 * 1564 / 3129 - 1, 2 * 3128 / 3129 - 1]),
    )
    assert torch.allclose(
        # 65535 (index 2) is read as int16 -1 by the SIMO loader, clipped to 0: -1
        s["edge"][0, 0],
        torch.tensor([-1.0, 1.0, -1.0, 2 * 5520 / 11041 - 1, 2 / 11041 - 1, 4 / 11041 - 1]),
    )
    assert s["keypoints2d_mask"].all() and s["edge_mask"].all()
    official = TaskonomyDataset(tmp_path, buildings=["beechwood"], tasks=["depth", "keypoints2d"])[0]
    assert official["depth"][0, 0, 4] == pytest.approx(1.0) and official["keypoints2d"][
        0, 0, 1
    ] == pytest.approx(3129 / 65535)

    (folder("edge_texture", "klickitat") / "point_2_view_0_domain_edge_texture.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"klickitat.*point_2_view_0_domain_edge_texture"):
        TaskonomyDataset(tmp_path, split="val", protocol="simo")
    with pytest.raises(ValueError, match="protocol"):
        TaskonomyDataset(tmp_path, split="val", protocol="paper")
