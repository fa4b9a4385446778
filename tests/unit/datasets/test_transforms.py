"""JointTransform / to_sample: flips, alignment, interpolation rules, dtypes, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simo_merge.datasets._geometry import Intrinsics, normals_from_depth
from simo_merge.datasets.transforms import JointTransform, to_sample


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    v = rng.normal(size=shape + (3,)).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _coord_sample(h: int, w: int) -> dict[str, np.ndarray]:
    """Image / labels / depth that all encode the source pixel position, so alignment is checkable."""
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = np.stack([r / (h - 1), c / (w - 1), np.full((h, w), 0.5)], axis=-1).astype(np.float32)
    return {
        "image": image,
        # every pixel its own class (offset past the ignore index 255): nearest -> source position
        "semseg": (1000 + r * w + c).astype(np.int64),
        "depth": (1.0 + c).astype(np.float32),  # linear in column: bilinear -> continuous column
        "depth_mask": np.ones((h, w), dtype=bool),
        "normal": np.broadcast_to(np.array([0.6, 0.0, -0.8], np.float32), (h, w, 3)).copy(),
    }


def test_forced_flip_mirrors_pixels_and_negates_normal_x() -> None:
    rng = np.random.default_rng(0)
    h, w = 4, 5
    normal = _unit(rng, (h, w))
    normal_mask = rng.random((h, w)) > 0.2
    normal[~normal_mask] = 0.0
    arrays = {
        "image": rng.random((h, w, 3)).astype(np.float32),
        "semseg": rng.integers(0, 7, (h, w)),
        "depth": rng.uniform(1, 5, (h, w)).astype(np.float32),
        "normal": normal,
        "normal_mask": normal_mask,
    }
    out = JointTransform(train=True, hflip=True, flip_prob=1.0)(arrays)
    for r in range(h):
        for c in range(w):
            src = w - 1 - c
            np.testing.assert_array_equal(out["image"][r, c], arrays["image"][r, src])
            assert out["semseg"][r, c] == arrays["semseg"][r, src]
            assert out["depth"][r, c] == pytest.approx(arrays["depth"][r, src])
            assert out["normal_mask"][r, c] == normal_mask[r, src]
            nx, ny, nz = normal[r, src]
            expected = [-nx, ny, nz] if normal_mask[r, src] else [0.0, 0.0, 0.0]
            np.testing.assert_allclose(out["normal"][r, c], expected, atol=1e-6)


def test_no_flip_when_probability_zero_or_eval() -> None:
    arrays = _coord_sample(4, 6)
    for t in (JointTransform(train=True, flip_prob=0.0), JointTransform(train=False)):
        out = t(arrays)
        np.testing.assert_array_equal(out["semseg"], arrays["semseg"])
        np.testing.assert_allclose(out["normal"], arrays["normal"], atol=1e-6)


def test_scale_crop_flip_keeps_image_labels_depth_aligned() -> None:
    h, w = 16, 20
    arrays = _coord_sample(h, w)
    t = JointTransform(size=(h, w), train=True, scale=(0.6, 1.7), crop=True, seed=3, scale_depth=False)
    flipped = padded = 0
    for _ in range(12):
        out = t(arrays)
        lab = out["semseg"]
        valid = lab != 255
        assert valid.any()
        assert (out["depth_mask"] == valid).all()  # padding is invalid for every target
        src_r, src_c = (lab[valid] - 1000) // w, (lab[valid] - 1000) % w
        # bilinear image / depth sit within half a source pixel of the nearest label's source position
        np.testing.assert_allclose(out["image"][..., 0][valid] * (h - 1), src_r, atol=0.5 + 1e-4)
        np.testing.assert_allclose(out["image"][..., 1][valid] * (w - 1), src_c, atol=0.5 + 1e-4)
        np.testing.assert_allclose(out["depth"][valid] - 1.0, src_c, atol=0.5 + 1e-4)
        # the image's column ramp runs left->right unless flipped; the normals' x sign follows the flip
        is_flipped = bool(out["normal"][valid][:, 0].mean() < 0)
        flipped += int(is_flipped)
        padded += int((~valid).any())
        r0 = int(np.argmax(valid.any(axis=1)))
        ramp = np.diff(out["image"][r0, :, 1][valid[r0]])
        assert (ramp <= 1e-6).all() if is_flipped else (ramp >= -1e-6).all()
        np.testing.assert_allclose(np.abs(out["normal"][valid][:, 0]), 0.6, atol=1e-6)
        assert (out["image"][~valid] == 0).all() and (out["depth"][~valid] == 0).all()
    assert 0 < flipped < 12 and padded > 0


def test_masks_and_labels_use_nearest_interpolation() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((8, 8)) > 0.5
    arrays = {"image": rng.random((8, 8, 3)).astype(np.float32), "semseg": rng.integers(0, 9, (8, 8))}
    arrays["semseg_mask"] = mask
    up = JointTransform(size=(16, 16))(arrays)
    assert up["semseg_mask"].dtype == bool
    r, c = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    np.testing.assert_array_equal(up["semseg_mask"], mask[r // 2, c // 2])
    expected = np.where(mask, arrays["semseg"], 255)[r // 2, c // 2]
    np.testing.assert_array_equal(up["semseg"], expected)
    down = JointTransform(size=(4, 4))(arrays)  # centre-aligned nearest: source pixel 2 * i + 1
    r4, c4 = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    np.testing.assert_array_equal(down["semseg_mask"], mask[2 * r4 + 1, 2 * c4 + 1])


def test_normals_nearest_and_unit_after_resize() -> None:
    rng = np.random.default_rng(2)
    normal = _unit(rng, (5, 7)) * 3.0  # not unit on input: renormalised on output
    out = JointTransform(size=(10, 14))({"image": np.zeros((5, 7, 3), np.float32), "normal": normal})
    r, c = np.meshgrid(np.arange(10), np.arange(14), indexing="ij")
    np.testing.assert_allclose(out["normal"], normal[r // 2, c // 2] / 3.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["normal"], axis=-1), 1.0, atol=1e-6)


def test_depth_with_mask_never_blends_invalid_pixels() -> None:
    depth = np.array([[2.0, 0.0], [4.0, 6.0]], np.float32)
    arrays = {"image": np.zeros((2, 2, 3), np.float32), "depth": depth, "depth_mask": depth > 0}
    out = JointTransform(size=(4, 4))(arrays)
    # output (1, 1) samples source (0.25, 0.25): weights 9/16, 3/16 (invalid), 3/16, 1/16
    assert out["depth"][1, 1] == pytest.approx((2 * 9 + 4 * 3 + 6 * 1) / (9 + 3 + 1), rel=1e-5)
    assert out["depth"][0, 0] == pytest.approx(2.0)
    # output (1, 2) samples (0.25, 0.75): its nearest source pixel (0, 1) is invalid
    assert not out["depth_mask"][1, 2] and out["depth"][1, 2] == 0.0
    assert out["depth_mask"][3, 3] and out["depth"][3, 3] == pytest.approx(6.0)
    assert out["depth"][out["depth_mask"]].min() >= 2.0


def test_scale_depth_divides_depth_and_multiplies_disparity() -> None:
    h, w = 6, 8
    arrays = {
        "image": np.zeros((h, w, 3), np.float32),
        "depth": np.full((h, w), 3.0, np.float32),
        "disparity": np.full((h, w), 3.0, np.float32),
    }
    out = JointTransform(train=True, scale=(2.0, 2.0), crop=True, hflip=False)(arrays)
    assert out["depth"].shape == (h, w)
    np.testing.assert_allclose(out["depth"], 1.5)
    np.testing.assert_allclose(out["disparity"], 6.0)
    kept = JointTransform(train=True, scale=(2.0, 2.0), crop=True, hflip=False, scale_depth=False)(arrays)
    np.testing.assert_allclose(kept["depth"], 3.0)


def test_to_sample_dtypes_shapes_and_default_masks() -> None:
    h, w = 3, 4
    depth = np.arange(h * w, dtype=np.float32).reshape(h, w)  # 0 at (0, 0): invalid
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = -1.0
    normal[2, 3] = 0.0
    semseg = np.full((h, w), 4)
    semseg[1, 1] = 255
    arrays = {
        "image": np.full((h, w, 3), 0.25, np.float32),
        "semseg": semseg,
        "semseg_mask": np.ones((h, w), bool),
        "depth": depth[..., None],  # HxWx1 is accepted
        "normal": normal,
        "edge": np.ones((h, w), np.float32),
    }
    arrays["semseg_mask"][0, 2] = False
    s = to_sample(arrays, ["semseg", "depth", "normal", "edge", "autoencoding"])
    assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.float32
    assert s["semseg"].shape == (h, w) and s["semseg"].dtype == torch.int64
    assert s["semseg"][0, 2] == 255 and s["semseg"][1, 1] == 255 and s["semseg"][0, 0] == 4
    assert s["semseg_mask"].dtype == torch.bool and s["semseg_mask"].sum() == h * w - 2
    assert s["depth"].shape == (1, h, w) and s["depth"].dtype == torch.float32
    assert not s["depth_mask"][0, 0] and s["depth_mask"].sum() == h * w - 1
    assert s["depth"][0, 2, 3] == 11.0
    assert s["normal"].shape == (3, h, w) and not s["normal_mask"][2, 3] and s["normal"][2, 1, 1] == -1.0
    assert s["edge"].shape == (1, h, w) and s["edge_mask"].all()
    assert torch.equal(s["autoencoding"], s["image"]) and s["autoencoding_mask"].all()
    assert set(s) == {"image"} | {
        k for t in ("semseg", "depth", "normal", "edge", "autoencoding") for k in (t, t + "_mask")
    }
    with pytest.raises(KeyError, match="disparity"):
        to_sample(arrays, ["disparity"])


def test_seed_makes_augmentation_deterministic() -> None:
    arrays = _coord_sample(10, 12)

    def run(seed: int) -> list[np.ndarray]:
        t = JointTransform(size=(8, 8), train=True, scale=(0.5, 2.0), crop=True, seed=seed)
        return [t(arrays)["semseg"] for _ in range(5)]

    a, b, c = run(7), run(7), run(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


class _Repeat(torch.utils.data.Dataset):
    def __init__(self, transform: JointTransform) -> None:
        self.transform = transform
        self.arrays = _coord_sample(10, 12)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.transform(self.arrays)["semseg"])


def test_dataloader_workers_get_distinct_reproducible_streams() -> None:
    def run() -> list[torch.Tensor]:
        t = JointTransform(size=(8, 8), train=True, scale=(0.5, 2.0), crop=True, seed=0)
        torch.manual_seed(123)
        return list(torch.utils.data.DataLoader(_Repeat(t), batch_size=None, num_workers=2))

    first, second = run(), run()
    assert not torch.equal(first[0], first[1])  # items 0 and 1: first call in worker 0 and in worker 1
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_invalid_inputs_raise_clear_errors() -> None:
    img = np.zeros((4, 5, 3), np.float32)
    with pytest.raises(ValueError, match="'depth'"):
        JointTransform()({"image": img, "depth": np.zeros((5, 4), np.float32)})
    with pytest.raises(ValueError, match="'segmentation'"):
        JointTransform()({"image": img, "segmentation": np.zeros((4, 5))})
    with pytest.raises(ValueError, match="crop=True"):
        JointTransform(train=True, scale=(0.5, 2.0))
    with pytest.raises(ValueError, match="size"):
        JointTransform(size=(0, 4))
    with pytest.raises(ValueError, match="autoencoding"):
        to_sample({"image": img, "autoencoding": img}, ["autoencoding"])


def test_transform_keeps_derived_plane_normals_consistent() -> None:
    """Depth-derived normals survive an eval 2x upscale unchanged (nearest + renormalise)."""
    intr = Intrinsics(10.0, 10.0, 3.5, 2.5)
    v, u = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    depth = (2.0 + 0.1 * u + 0.05 * v).astype(np.float32)
    n, m = normals_from_depth(depth, intr)
    out = JointTransform(size=(12, 16))(
        {"image": np.zeros((6, 8, 3), np.float32), "normal": n, "normal_mask": m}
    )
    np.testing.assert_allclose(out["normal"][::2, ::2], n, atol=1e-6)
