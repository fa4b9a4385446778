"""protocol=simo training augmentation (``augmentation="scale_crop_flip"``) against the SIMO code.

The authors' ``DataTransform.__call__`` (d23845jg/simo_merging @ 2fcaa49a, ``training/create_dataset.py``
lines 22-103) is transcribed below with its three random draws (scale, crop box, flip) made arguments:
given the draws our pipeline made, its output must equal theirs. The draws themselves are checked to come
from the right sets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as transforms_f
from PIL import Image

from simo_merge.data import DataConfig, build_split
from simo_merge.datasets.transforms import SIMO_SCALES, JointTransform


def their_data_transform(data_dict: dict, crop_size: list[int], sc: float, crop: tuple, flip_prop: float):
    """``DataTransform.__call__`` (create_dataset.py lines 22-103) with ``sc`` (line 29), the crop box
    ``(i, j, h, w)`` (lines 82-85, ``RandomCrop.get_params``) and ``flip_prop`` (line 34) given."""
    raw_h, raw_w = data_dict["im"].shape[-2:]
    resized_size = [int(raw_h * sc), int(raw_w * sc)]
    i, j, h, w = crop
    for task in data_dict:
        if len(data_dict[task].shape) == 2:
            data_dict[task] = data_dict[task].unsqueeze(0)
        if task in ["im", "noise"]:
            data_dict[task] = transforms_f.resize(data_dict[task], resized_size, Image.BILINEAR)
        elif task in ["normal", "depth", "seg", "part_seg", "disp"]:
            data_dict[task] = transforms_f.resize(data_dict[task], resized_size, Image.NEAREST)
        if crop_size[0] > resized_size[0] or crop_size[1] > resized_size[1]:
            right_pad, bottom_pad = (
                max(crop_size[1] - resized_size[1], 0),
                max(crop_size[0] - resized_size[0], 0),
            )
            if task in ["im"]:
                data_dict[task] = transforms_f.pad(
                    data_dict[task], padding=(0, 0, right_pad, bottom_pad), padding_mode="reflect"
                )
            elif task in ["seg", "part_seg", "disp"]:
                data_dict[task] = transforms_f.pad(
                    data_dict[task], padding=(0, 0, right_pad, bottom_pad), fill=-1, padding_mode="constant"
                )
            elif task in ["normal", "depth", "noise"]:
                data_dict[task] = transforms_f.pad(
                    data_dict[task], padding=(0, 0, right_pad, bottom_pad), fill=0, padding_mode="constant"
                )
        data_dict[task] = transforms_f.crop(data_dict[task], i, j, h, w)
        if flip_prop > 0.5:
            data_dict[task] = torch.flip(data_dict[task], dims=[2])
            if task == "normal":
                data_dict[task][0, :, :] = -data_dict[task][0, :, :]
        if task == "depth":
            data_dict[task] = data_dict[task] / sc
        if task == "disp":
            data_dict[task] = data_dict[task] * sc
        if task in ["seg", "part_seg"]:
            data_dict[task] = data_dict[task].squeeze(0)
    return data_dict


def _nyu_fixture(h: int = 12, w: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """An NYUv2-like sample: image in [0, 1], labels, depth with holes (0 = invalid), unit normals."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 5.0, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.15] = 0.0
    normal = rng.normal(size=(h, w, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return {
        "image": rng.random((h, w, 3)).astype(np.float32),
        "semseg": rng.integers(0, 13, (h, w)),
        "depth": depth,
        "depth_mask": depth > 0,
        "normal": normal,
    }


def _city_fixture(h: int = 8, w: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    disp = rng.uniform(0.0, 0.3, (h, w)).astype(np.float32)
    return {
        "image": rng.random((h, w, 3)).astype(np.float32),
        "semseg": rng.integers(0, 19, (h, w)),
        "part_seg": rng.integers(0, 10, (h, w)),
        "disparity": disp,
        "disparity_mask": np.ones((h, w), dtype=bool),
    }


def _draws(applied: dict) -> tuple[float, tuple[int, int, int, int], float]:
    """(scale, torchvision crop box (i, j, h, w), flip_prop) of one call, from our applied params."""
    x0, y0, x1, y1 = applied["RandomCrop"]["crop_coords"]
    return (
        float(applied["SimoScale"]["scale"]),
        (y0, x0, y1 - y0, x1 - x0),
        (1.0 if "HorizontalFlip" in applied else 0.0),
    )


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0)))


@pytest.mark.parametrize("size", [(12, 16), (15, 21)])  # (15, 21) > the input at scale 1: padding
def test_nyu_pipeline_equals_their_data_transform_given_the_draws(size):
    arrays = _nyu_fixture()
    t = JointTransform(size=size, train=True, seed=3, augmentation="scale_crop_flip")
    seen = set()
    for _ in range(12):
        ours, applied = t.apply(arrays)
        sc, crop, flip = _draws(applied)
        seen.add((sc, flip > 0.5))
        theirs = their_data_transform(
            {
                "im": _chw(arrays["image"]).float(),
                "seg": torch.from_numpy(arrays["semseg"]).long(),
                "depth": torch.from_numpy(arrays["depth"])[None].float(),
                "normal": _chw(arrays["normal"]).float(),
            },
            list(size),
            sc,
            crop,
            flip,
        )
        np.testing.assert_allclose(ours["image"], theirs["im"].numpy().transpose(1, 2, 0), atol=1e-6, rtol=0)
        # labels exact; their padding -1 is our ignore index 255
        their_seg = theirs["seg"].numpy()
        np.testing.assert_array_equal(ours["semseg"], np.where(their_seg < 0, 255, their_seg))
        # depth: nearest, divided by the scale; their 0 (hole or padding) is our invalid pixel
        their_depth = theirs["depth"][0].numpy()
        np.testing.assert_array_equal(ours["depth_mask"], their_depth != 0)
        np.testing.assert_allclose(ours["depth"], their_depth, atol=1e-6, rtol=0)
        # normals: nearest, x negated on a flip (renormalising unit vectors changes them by < 1e-6)
        np.testing.assert_allclose(
            ours["normal"], theirs["normal"].numpy().transpose(1, 2, 0), atol=1e-6, rtol=0
        )
    assert {s for s, _ in seen} == set(SIMO_SCALES) and {f for _, f in seen} == {True, False}


def test_cityscapes_pipeline_equals_their_data_transform_with_padding():
    arrays = _city_fixture()
    size = (10, 19)  # larger than the input: scale 1 (and 1.2 in width) pads right / bottom
    t = JointTransform(size=size, train=True, seed=5, augmentation="scale_crop_flip")
    padded = 0
    for _ in range(12):
        ours, applied = t.apply(arrays)
        sc, crop, flip = _draws(applied)
        theirs = their_data_transform(
            {
                "im": _chw(arrays["image"]).float(),
                "seg": torch.from_numpy(arrays["semseg"]).long(),
                "part_seg": torch.from_numpy(arrays["part_seg"]).long(),
                "disp": torch.from_numpy(arrays["disparity"])[None].float(),
            },
            list(size),
            sc,
            crop,
            flip,
        )
        np.testing.assert_allclose(ours["image"], theirs["im"].numpy().transpose(1, 2, 0), atol=1e-6, rtol=0)
        for ours_key, their_key in (("semseg", "seg"), ("part_seg", "part_seg")):
            lab = theirs[their_key].numpy()
            np.testing.assert_array_equal(ours[ours_key], np.where(lab < 0, 255, lab))
        # disparity: their padding is -1 (times the scale), ours an invalid pixel; values times the scale
        pad = theirs["seg"].numpy() < 0
        padded += int(pad.sum())
        their_disp = theirs["disp"][0].numpy()
        np.testing.assert_array_equal(ours["disparity_mask"], ~pad)
        np.testing.assert_allclose(ours["disparity"][~pad], their_disp[~pad], atol=1e-6, rtol=0)
    assert padded > 0  # the padding path ran


def test_draws_come_from_their_sets():
    arrays = _nyu_fixture()
    t = JointTransform(size=(12, 16), train=True, seed=0, augmentation="scale_crop_flip")
    scales, flips, corners = [], [], set()
    for _ in range(60):
        _, applied = t.apply(arrays)
        sc, (i, j, h, w), flip = _draws(applied)
        scales.append(sc)
        flips.append(flip)
        rh, rw = int(12 * sc), int(16 * sc)
        assert (h, w) == (12, 16) and 0 <= i <= rh - 12 and 0 <= j <= rw - 16
        corners.add((i, j))
    assert set(scales) == set(SIMO_SCALES)  # random.sample(self.scales, 1): one of {1.0, 1.2, 1.5}
    assert 0.2 < np.mean(flips) < 0.8 and len(corners) > 3


def test_default_protocol_resizes_and_flips_only():
    """The default pipeline never scales or crops: a train sample is the input resized to ``size``."""
    arrays = _nyu_fixture()
    t = JointTransform(size=(6, 8), train=True, seed=0, flip_prob=0.0)
    out, applied = t.apply(arrays)
    assert "Resize" in applied and "SimoScale" not in applied and "RandomCrop" not in applied
    np.testing.assert_allclose(out["image"], JointTransform(size=(6, 8))(arrays)["image"], atol=0)
    with pytest.raises(ValueError, match="augmentation must be one of"):
        JointTransform(size=(6, 8), augmentation="crop")


@pytest.mark.parametrize(
    ("protocol", "val_augmented", "augmentation"),
    [("default", False, "resize_flip"), ("simo", True, "scale_crop_flip")],
)
def test_build_split_passes_the_protocols_choice(protocol, val_augmented, augmentation):
    cfg = DataConfig(size=[8, 8], num_samples={"train": 2, "val": 2, "test": 2}, protocol=protocol)
    train, val, test = (build_split(cfg, role, seed=0) for role in ("train", "val", "test"))
    assert train.transform.train and train.transform.augmentation == augmentation
    assert val.transform.train is val_augmented and val.transform.augmentation == augmentation
    assert not test.transform.train
