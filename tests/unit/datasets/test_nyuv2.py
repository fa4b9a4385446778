"""NYUv2 loaders on tiny fixtures written in the real formats (MATLAB v7.3 HDF5, v5 .mat, MTAN npy)."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from simo_merge.datasets import DATASETS, build_dataset
from simo_merge.datasets._geometry import (
    NYUV2_RGB_INTRINSICS,
    Intrinsics,
    normal_axis_agreement,
    normals_from_depth,
)
from simo_merge.datasets.nyuv2 import NYUv2, NYUv2Mat, simo_split
from simo_merge.datasets.nyuv2_matlab import build_label_lut
from simo_merge.datasets.transforms import JointTransform
from tests.helpers.nyuv2_files import make_npy_root

H, W = 12, 16  # frames are non-square so a transposition mistake changes the shape

# --------------------------------------------------------------------------------------------------------
# fixture writers
# --------------------------------------------------------------------------------------------------------


def write_labeled_mat(
    path: Path,
    images: np.ndarray,
    depths: np.ndarray,
    labels: np.ndarray,
    raw_depths: np.ndarray | None = None,
) -> None:
    """Write arrays (N, H, W[, 3]) the way MATLAB v7.3 stores them, as h5py sees them: axes reversed."""
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images.transpose(0, 3, 2, 1).astype(np.uint8))  # (N, 3, W, H)
        f.create_dataset("depths", data=depths.transpose(0, 2, 1).astype(np.float32))  # (N, W, H)
        f.create_dataset("labels", data=labels.transpose(0, 2, 1).astype(np.uint16))
        if raw_depths is not None:
            f.create_dataset("rawDepths", data=raw_depths.transpose(0, 2, 1).astype(np.float32))


def write_splits(path: Path, train_1based: np.ndarray, test_1based: np.ndarray) -> None:
    """splits.mat: column vectors of 1-based frame numbers (v5 .mat)."""
    scipy.io.savemat(
        path,
        {
            "trainNdxs": np.asarray(train_1based, float).reshape(-1, 1),
            "testNdxs": np.asarray(test_1based, float).reshape(-1, 1),
        },
    )


def map40_fixture() -> np.ndarray:
    """894 -> 40 used by the fixtures: raw id r -> ((r - 1) % 40) + 1."""
    return (np.arange(894) % 40) + 1


def map13_fixture() -> np.ndarray:
    """40 -> 13 used by the fixtures: 40-class c -> ((c - 1) % 13) + 1."""
    return (np.arange(40) % 13) + 1


def write_mappings(root: Path) -> None:
    names40 = np.empty((1, 40), dtype=object)
    names40[0, :] = [f"class{i}" for i in range(40)]
    scipy.io.savemat(
        root / "classMapping40.mat", {"mapClass": map40_fixture().reshape(1, 894), "className": names40}
    )
    names13 = np.empty((1, 13), dtype=object)
    names13[0, :] = [f"cls{i}" for i in range(13)]
    # a 1x1 struct whose first field is the 1x40 map and second the names, like class13Mapping.mat
    scipy.io.savemat(
        root / "class13Mapping.mat",
        {"classMapping13": {"labelMap": map13_fixture().reshape(1, 40), "labelName": names13}},
    )


def make_frames(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.zeros((n, H, W, 3), np.uint8)
    depths = np.zeros((n, H, W), np.float32)
    labels = np.zeros((n, H, W), np.uint16)
    for k in range(n):
        images[k] = 10 * k  # frame identity
        depths[k] = 1.0 + k
        labels[k] = 1 + k
    return images, depths, labels


@pytest.fixture()
def mat_root(tmp_path: Path) -> Path:
    images, depths, labels = make_frames(6)
    images[2, 3, 11] = (200, 10, 50)  # planted pixel: frame 2 (0-based), row 3, col 11
    depths[2, 5, 2] = 7.5
    labels[2, 9, 14] = 894
    labels[2, 0, 0] = 0
    labels[2, 0, 1] = 42
    raw = depths.copy()
    raw[2, 1, 1] = 0.0
    write_labeled_mat(tmp_path / "nyu_depth_v2_labeled.mat", images, depths, labels, raw_depths=raw)
    write_splits(tmp_path / "splits.mat", [1, 3, 5], [2, 4, 6])
    write_mappings(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------------------------------------
# official .mat
# --------------------------------------------------------------------------------------------------------


def test_mat_axes_and_planted_pixels(mat_root: Path) -> None:
    ds = NYUv2Mat(mat_root, split="test", num_classes=40)  # test frames 1, 3, 5 (0-based)
    assert len(ds) == 3 and ds.frame_hw == (H, W)
    s = ds[1]  # test frames are [1, 3, 5]: item 1 is frame 3
    assert s["image"].shape == (3, H, W)
    assert s["image"][0, 0, 0] == pytest.approx(30 / 255)
    arrays = NYUv2Mat(mat_root, split="train", num_classes=40).load_arrays(1)  # train = [0, 2, 4]
    np.testing.assert_allclose(arrays["image"][3, 11], np.array([200, 10, 50]) / 255, rtol=1e-6)
    np.testing.assert_allclose(arrays["image"][0, 0], [20 / 255] * 3, rtol=1e-6)
    assert arrays["depth"][5, 2] == 7.5 and arrays["depth"][0, 0] == 3.0
    assert arrays["depth"].shape == (H, W) and arrays["depth_mask"].all()


def test_mat_label_mapping_40_and_13(mat_root: Path) -> None:
    lab40 = NYUv2Mat(mat_root, split="train", num_classes=40).load_arrays(1)["semseg"]
    lab13 = NYUv2Mat(mat_root, split="train", num_classes=13).load_arrays(1)["semseg"]
    # raw 894 -> 40-class (893 % 40) + 1 = 14 -> 0-based 13; 13-class (13 % 13) + 1 = 1 -> 0-based 0
    assert lab40[9, 14] == 13 and lab13[9, 14] == 0
    # raw 42 -> 40-class 2 -> 0-based 1; 13-class 2 -> 0-based 1
    assert lab40[0, 1] == 1 and lab13[0, 1] == 1
    # raw 0 = unlabelled -> ignore
    assert lab40[0, 0] == 255 and lab13[0, 0] == 255
    # the rest of frame 2 is raw 3 -> 40-class 3 -> 13-class 3 -> 0-based 2
    assert lab40[5, 5] == 2 and lab13[5, 5] == 2
    s = NYUv2Mat(mat_root, split="train")[1]
    assert s["semseg"].dtype == torch.int64 and s["semseg"][0, 0] == 255 and not s["semseg_mask"][0, 0]
    assert s["semseg_mask"].sum() == H * W - 1
    assert NYUv2Mat(mat_root, split="train").task_specs["semseg"].channels == 13


def test_build_label_lut_hand_values() -> None:
    lut = build_label_lut(13, map40_fixture(), map13_fixture())
    assert lut.shape == (895,) and lut[0] == 255
    assert lut[1] == 0 and lut[14] == 0 and lut[40] == 0 and lut[41] == 0  # 40-class 14 -> 13-class 1
    assert lut[13] == 12  # 40-class 13 -> 13-class 13
    direct = build_label_lut(13, map40_fixture(), np.full(894, 5))  # an 894 -> 13 map is used directly
    assert direct[0] == 255 and (direct[1:] == 4).all()


def test_mat_normals_from_a_plane_match_the_analytic_normal(tmp_path: Path) -> None:
    intr = NYUV2_RGB_INTRINSICS.resized((480, 640), (H, W))  # what the loader uses for 12x16 frames
    n0 = np.array([0.3, -0.4, -1.0])
    n0 /= np.linalg.norm(n0)
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones((H, W))], axis=-1)
    depth = (n0 @ np.array([0.0, 0.0, 3.0])) / (rays @ n0)  # plane through (0, 0, 3) with normal n0
    images, depths, labels = make_frames(2)
    depths[1] = depth
    write_labeled_mat(tmp_path / "nyu_depth_v2_labeled.mat", images, depths, labels)
    write_splits(tmp_path / "splits.mat", [1], [2])
    s = NYUv2Mat(tmp_path, split="test", tasks=["normal"])[0]
    assert set(s) == {"image", "normal", "normal_mask"}
    assert s["normal_mask"].all()
    np.testing.assert_allclose(
        s["normal"].permute(1, 2, 0).numpy(), np.broadcast_to(n0, (H, W, 3)), atol=1e-5
    )


def test_geometry_fronto_parallel_plane_and_invalid_pixels() -> None:
    intr = Intrinsics(50.0, 50.0, 3.5, 2.5)
    depth = np.full((6, 8), 2.0)
    depth[2, 3] = 0.0  # hole: invalid itself, neighbours fall back to one-sided differences
    n, m = normals_from_depth(depth, intr)
    assert not m[2, 3] and m.sum() == 47
    np.testing.assert_array_equal(n[2, 3], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(n[m], np.tile([0.0, 0.0, -1.0], (47, 1)), atol=1e-12)  # faces the camera
    # intrinsics follow a resize: focal scales, principal point stays pixel-centre aligned
    r = intr.resized((6, 8), (12, 16))
    assert (r.fx, r.fy, r.cx, r.cy) == (100.0, 100.0, 7.5, 5.5)
    c = NYUV2_RGB_INTRINSICS.cropped(44, 40)
    assert c.cx == pytest.approx(325.58244941119034 - 40) and c.cy == pytest.approx(253.73616633400465 - 44)


def test_normal_axis_agreement_detects_flips() -> None:
    intr = Intrinsics(20.0, 20.0, 7.5, 5.5)
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    depth = 2.0 + 0.2 * u + 0.1 * v
    n, _ = normals_from_depth(depth, intr)
    assert normal_axis_agreement(n, depth, intr)[2] == 1.0
    flipped = n * np.array([1.0, -1.0, -1.0], np.float32)
    agreement = normal_axis_agreement(flipped, depth, intr)
    assert agreement[2] == -1.0 and (np.isnan(agreement[1]) or agreement[1] == -1.0)


def test_mat_raw_depth_marks_holes_invalid(mat_root: Path) -> None:
    s = NYUv2Mat(mat_root, split="train", tasks=["depth"], raw_depth=True)[1]
    assert not s["depth_mask"][1, 1] and s["depth"][0, 1, 1] == 0.0 and s["depth_mask"].sum() == H * W - 1
    s = NYUv2Mat(mat_root, split="train", tasks=["depth"])[1]
    assert s["depth_mask"].all()


def test_mat_lazy_handle_pickles_and_transform(mat_root: Path) -> None:
    ds = NYUv2Mat(mat_root, split="train", transform=JointTransform(size=(6, 8)))
    assert ds._h5 is None  # nothing opened until the first item
    a = ds[0]
    assert ds._h5 is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    b = clone[0]
    assert a["image"].shape == (3, 6, 8) and a["normal"].shape == (3, 6, 8)
    for key in a:
        assert torch.equal(a[key], b[key])
    built = build_dataset("nyuv2_mat", root=mat_root, split="test", tasks=["depth"])
    assert isinstance(built, NYUv2Mat) and built.tasks == ["depth"]
    assert {"nyuv2", "nyuv2_mat"} <= set(DATASETS.names())


def test_mat_simo_protocol_sizes_and_determinism(tmp_path: Path) -> None:
    n = 1449
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as f:
        f.create_dataset("images", data=np.zeros((n, 3, 3, 2), np.uint8))
        f.create_dataset("depths", data=np.ones((n, 3, 2), np.float32))
        f.create_dataset("labels", data=np.ones((n, 3, 2), np.uint16))
    rng = np.random.default_rng(5)
    frames = rng.permutation(n) + 1
    train, test = np.sort(frames[:795]), np.sort(frames[795:])
    write_splits(tmp_path / "splits.mat", train, test)
    write_mappings(tmp_path)

    def idx(split: str, protocol: str) -> np.ndarray:
        return NYUv2Mat(tmp_path, split=split, protocol=protocol, tasks=["depth"]).indices

    assert len(idx("train", "default")) == 795 and len(idx("test", "default")) == 654
    val, tst = idx("val", "simo"), idx("test", "simo")
    assert len(idx("train", "simo")) == 795 and len(val) == 400 and len(tst) == 254
    assert np.intersect1d(val, tst).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([val, tst])), test - 1)
    # the SIMO code's torch random_split positions into the official test order, in permutation order
    np.testing.assert_array_equal(val[:10], (test - 1)[SIMO_VAL_FIRST10])
    np.testing.assert_array_equal(tst[:5], (test - 1)[SIMO_TEST_FIRST5])
    np.testing.assert_array_equal(val, idx("val", "simo"))  # deterministic
    with pytest.raises(ValueError, match="simo"):
        NYUv2Mat(tmp_path, split="val", tasks=["depth"])


#: torch.randperm(654, generator=torch.Generator().manual_seed(42)): first val / test positions as the SIMO
#: code's ``random_split(val_set, [400, 254], torch.Generator().manual_seed(42))`` hands them out.
SIMO_VAL_FIRST10 = [282, 298, 610, 358, 580, 147, 634, 405, 450, 467]
SIMO_TEST_FIRST5 = [271, 33, 448, 247, 427]


def test_simo_split_is_torch_random_split_index_for_index() -> None:
    val, test = simo_split(np.arange(654))
    assert val[:10].tolist() == SIMO_VAL_FIRST10 and test[:5].tolist() == SIMO_TEST_FIRST5
    ref_val, ref_test = torch.utils.data.random_split(
        range(654), [400, 254], generator=torch.Generator().manual_seed(42)
    )
    assert val.tolist() == list(ref_val.indices) and test.tolist() == list(ref_test.indices)
    assert set(val) | set(test) == set(range(654)) and not set(val) & set(test)
    # the former NumPy split (default_rng(42)) is a different draw: most positions differ
    old = np.random.default_rng(42).permutation(654)[:400]
    assert len(set(old) & set(val)) < 300


def test_simo_split_rejects_bad_sizes() -> None:
    v, t = simo_split(np.arange(10) * 3, num_val=4)
    assert len(v) == 4 and len(t) == 6 and set(v) | set(t) == set(range(0, 30, 3))
    with pytest.raises(ValueError):
        simo_split(np.arange(10), num_val=10)


def test_mat_errors_name_the_file(mat_root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        NYUv2Mat(mat_root, mat_file=mat_root / "missing.mat")
    with pytest.raises(FileNotFoundError, match="nosplits.mat"):
        NYUv2Mat(mat_root, splits_file=mat_root / "nosplits.mat")
    bad = tmp_path_factory.mktemp("bad")
    scipy.io.savemat(bad / "classMapping40.mat", {"mapClass": np.ones((1, 40))})
    with pytest.raises(ValueError, match="classMapping40.mat"):
        NYUv2Mat(mat_root, mapping40_file=bad / "classMapping40.mat")
    write_splits(bad / "splits.mat", [1, 7], [2])
    with pytest.raises(ValueError, match="splits.mat.*7"):
        NYUv2Mat(mat_root, splits_file=bad / "splits.mat")
    with h5py.File(bad / "shape.mat", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 4, W, H), np.uint8))
        f.create_dataset("depths", data=np.zeros((2, W, H), np.float32))
        f.create_dataset("labels", data=np.zeros((2, W, H), np.uint16))
    with pytest.raises(ValueError, match="shape.mat"):
        NYUv2Mat(mat_root, mat_file=bad / "shape.mat")
    images, depths, labels = make_frames(2)
    labels[1, 4, 6] = 900
    write_labeled_mat(bad / "badlabel.mat", images, depths, labels)
    write_splits(bad / "s2.mat", [1], [2])
    ds = NYUv2Mat(mat_root, split="test", mat_file=bad / "badlabel.mat", splits_file=bad / "s2.mat")
    with pytest.raises(ValueError, match=r"badlabel\.mat: labels\[1\].*900.*row 4, col 6"):
        ds[0]
    with pytest.raises(ValueError, match="crop_border"):
        NYUv2Mat(mat_root, crop_border=True)


# --------------------------------------------------------------------------------------------------------
# MTAN npy layout
# --------------------------------------------------------------------------------------------------------


def test_npy_layout_conventions(tmp_path: Path) -> None:
    root = make_npy_root(tmp_path, n_train=3, n_val=2)
    ds = NYUv2(root, split="train")
    assert len(ds) == 3 and ds.tasks == ["semseg", "depth", "normal"]
    s = ds[2]
    assert s["image"].shape == (3, 4, 6) and torch.allclose(s["image"], torch.full((3, 4, 6), 0.02))
    assert s["semseg"][0, 0] == 255 and not s["semseg_mask"][0, 0] and s["semseg"][1, 1] == 2
    assert s["depth"].shape == (1, 4, 6) and s["depth"][0, 0, 0] == 3.0
    assert not s["depth_mask"][1, 2] and s["depth_mask"].sum() == 23
    assert not s["normal_mask"][2, 1] and s["normal_mask"].sum() == 23
    assert torch.allclose(s["normal"][:, 0, 0], torch.tensor([0.6, 0.0, -0.8]))
    assert len(NYUv2(root, split="test")) == 2
    flipped = NYUv2(root, split="train", tasks=["normal"], normal_signs=(-1, 1, -1))[0]
    assert torch.allclose(flipped["normal"][:, 0, 0], torch.tensor([-0.6, 0.0, 0.8]))


def test_npy_simo_split_selects_val_files(tmp_path: Path) -> None:
    root = make_npy_root(tmp_path, n_train=2, n_val=654, tasks=("label",), hw=(2, 3))
    val = NYUv2(root, split="val", protocol="simo", tasks=["semseg"])
    test = NYUv2(root, split="test", protocol="simo", tasks=["semseg"])
    assert len(val) == 400 and len(test) == 254
    perm = torch.randperm(654, generator=torch.Generator().manual_seed(42)).numpy()
    np.testing.assert_array_equal(val.indices, perm[:400])  # file stems, in SIMO's item order
    np.testing.assert_array_equal(test.indices, perm[400:])
    assert val.indices[:10].tolist() == SIMO_VAL_FIRST10
    k = int(val.indices[5])
    assert k == 147
    assert val[5]["image"][0, 0, 0] == pytest.approx((k % 100) / 100)
    assert len(NYUv2(root, split="test", tasks=["semseg"])) == 654


def test_npy_errors_name_the_file(tmp_path: Path) -> None:
    root = make_npy_root(tmp_path, n_train=3, n_val=2)
    lab = np.zeros((4, 6), np.float32)
    lab[3, 4] = 13.0
    np.save(root / "train" / "label" / "1.npy", lab)
    ds = NYUv2(root, split="train")
    with pytest.raises(ValueError, match=r"label[/\\]1\.npy.*13.*row 3, col 4"):
        ds[1]
    np.save(root / "train" / "depth" / "2.npy", np.ones((4, 5, 1), np.float32))
    with pytest.raises(ValueError, match=r"depth[/\\]2\.npy"):
        ds[2]
    (root / "train" / "normal" / "0.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"normal[/\\]0\.npy"):
        NYUv2(root, split="train")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        NYUv2(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="protocol 'simo'"):
        NYUv2(root, split="val", protocol="simo", tasks=["semseg"])  # val folder holds 2, not 654
    with pytest.raises(ValueError, match="unsupported"):
        NYUv2(root, tasks=["disparity"])


def test_derived_normals_match_a_per_pixel_reference_with_holes() -> None:
    """Vectorised normals equal a slow per-pixel reference: central differences, one-sided next to holes."""
    rng = np.random.default_rng(0)
    h, w = 7, 9
    depth = rng.uniform(1, 3, (h, w))
    depth[rng.random((h, w)) < 0.25] = 0.0
    intr = Intrinsics(8.0, 9.0, 4.2, 3.1)
    n, m = normals_from_depth(depth, intr)
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pts = np.stack([(u - 4.2) * depth / 8.0, (v - 3.1) * depth / 9.0, depth], axis=-1)

    def ok(r: int, c: int) -> bool:
        return 0 <= r < h and 0 <= c < w and depth[r, c] > 0

    def diff(r: int, c: int, dr: int, dc: int) -> np.ndarray | None:
        fwd, bwd = ok(r + dr, c + dc), ok(r - dr, c - dc)
        if fwd and bwd:
            return (pts[r + dr, c + dc] - pts[r - dr, c - dc]) / 2
        if fwd:
            return pts[r + dr, c + dc] - pts[r, c]
        if bwd:
            return pts[r, c] - pts[r - dr, c - dc]
        return None

    checked = 0
    for r in range(h):
        for c in range(w):
            du, dv = diff(r, c, 0, 1), diff(r, c, 1, 0)
            if not ok(r, c) or du is None or dv is None:
                assert not m[r, c]
                continue
            ref = np.cross(du, dv)
            ref = -ref if ref @ pts[r, c] > 0 else ref
            assert m[r, c]
            np.testing.assert_allclose(n[r, c], ref / np.linalg.norm(ref), atol=1e-6)
            checked += 1
    assert checked > 30


def test_splits_in_matlab_v73_hdf5_are_read_too(mat_root: Path) -> None:
    path = mat_root / "splits_v73.mat"
    with h5py.File(path, "w") as f:  # a 3x1 MATLAB column is a (1, 3) HDF5 dataset
        f.create_dataset("trainNdxs", data=np.array([[2.0, 4.0, 6.0]]))
        f.create_dataset("testNdxs", data=np.array([[1.0, 3.0, 5.0]]))
    ds = NYUv2Mat(mat_root, split="train", splits_file=path, tasks=["depth"])
    np.testing.assert_array_equal(ds.indices, [1, 3, 5])
    assert ds[0]["depth"][0, 0, 0] == 2.0  # frame 1 has depth 1 + 1


# --------------------------------------------------------------------------------------------------------
# precomputed normals file, SIMO border crop
# --------------------------------------------------------------------------------------------------------
def _normals_fixture(n: int) -> np.ndarray:
    """(N, H, W, 3) normals: frame k points along axis k % 3 (sign (-1)^k); pixel (0, 0) is invalid."""
    normals = np.zeros((n, H, W, 3), np.float32)
    for k in range(n):
        normals[k, ..., k % 3] = (-1.0) ** k * 2.0  # not unit length: the loader renormalises
    normals[:, 0, 0] = 0.0
    normals[:, 1, 1] = np.nan
    return normals


@pytest.mark.parametrize("fmt", ["mat", "npy"])
def test_mat_reads_a_precomputed_normals_file(mat_root: Path, fmt: str) -> None:
    normals = _normals_fixture(6)
    if fmt == "mat":  # MATLAB v7.3 (H, W, 3, N) as h5py sees it: (N, 3, W, H)
        path = mat_root / "normals_gt.mat"
        with h5py.File(path, "w") as f:
            f.create_dataset("normals", data=normals.transpose(0, 3, 2, 1))
    else:
        path = mat_root / "normals.npy"
        np.save(path, normals)
    ds = NYUv2Mat(mat_root, split="test", tasks=["normal"], normals_file=path)  # test frames 1, 3, 5
    s = ds[0]  # frame 1: axis 1, sign -1
    assert s["normal"].shape == (3, H, W)
    assert torch.equal(s["normal"][:, 5, 7], torch.tensor([0.0, -1.0, 0.0]))
    assert not s["normal_mask"][0, 0] and not s["normal_mask"][1, 1] and s["normal_mask"].sum() == H * W - 2
    assert torch.equal(s["normal"][:, 1, 1], torch.zeros(3))
    flipped = NYUv2Mat(mat_root, split="test", tasks=["normal"], normals_file=path, normal_signs=(1, -1, 1))
    assert torch.equal(flipped[0]["normal"][:, 5, 7], torch.tensor([0.0, 1.0, 0.0]))
    derived = NYUv2Mat(mat_root, split="test", tasks=["normal"])[0]["normal"]
    assert not torch.allclose(derived, s["normal"])  # the file replaces the depth-derived normals
    with pytest.raises(ValueError, match=r"normals.*N=6"):
        bad = mat_root / "short.npy"
        np.save(bad, normals[:4])
        NYUv2Mat(mat_root, split="test", tasks=["normal"], normals_file=bad)


def test_mat_simo_protocol_crops_the_border_by_default(tmp_path: Path) -> None:
    n, (fh, fw) = 1449, (480, 640)
    frames = np.arange(1, n + 1)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as f:  # chunked: unwritten frames cost nothing
        f.create_dataset("images", shape=(n, 3, fw, fh), dtype=np.uint8, chunks=(1, 3, fw, fh))
        depths = f.create_dataset("depths", shape=(n, fw, fh), dtype=np.float32, chunks=(1, fw, fh))
        f.create_dataset("labels", shape=(n, fw, fh), dtype=np.uint16, chunks=(1, fw, fh))
        frame = np.full((fh, fw), 2.0, np.float32)
        frame[44, 40] = 9.0  # first pixel inside the valid region (row 45, column 41, 1-based)
        depths[frames[795 + 282] - 1] = frame.T  # SIMO val item 0 is test position 282
    write_splits(tmp_path / "splits.mat", frames[:795], frames[795:])
    write_mappings(tmp_path)
    simo = NYUv2Mat(tmp_path, split="val", protocol="simo", tasks=["depth"])
    assert simo.crop_border and simo.indices[0] == 795 + 282
    d = simo[0]["depth"]
    assert d.shape == (1, 427, 561) and d[0, 0, 0] == 9.0 and d[0, 1, 1] == 2.0
    std = NYUv2Mat(tmp_path, split="test", tasks=["depth"])
    assert not std.crop_border and std.load_arrays(282)["depth"].shape == (480, 640)
    off = NYUv2Mat(tmp_path, split="val", protocol="simo", tasks=["depth"], crop_border=False)
    assert off.load_arrays(0)["depth"].shape == (480, 640)
