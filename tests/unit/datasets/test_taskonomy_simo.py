"""Taskonomy targets under protocol=simo against the SIMO loader, and ``mask_valid`` under both protocols.

The SIMO loader's ``Taskonomy.process_image`` / ``rescale_image`` / ``__getitem__`` (d23845jg/simo_merging
@ 2fcaa49a, ``training/create_dataset.py`` lines 397-517) are transcribed below (``augment=False``: the
flip branches, lines 438-445 / 478-481 / 499-502, left out) and run on fixture files in their
``{root}/{task}/{building}/`` layout; our ``protocol="simo"`` samples must equal theirs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as transforms
import torchvision.transforms.functional as transforms_f
from PIL import Image

from simo_merge.datasets.taskonomy import SIMO_SPLITS, TaskonomyDataset
from tests.helpers.taskonomy_files import H, W
from tests.helpers.taskonomy_files import task_building as _task_building
from tests.helpers.taskonomy_files import write as _write
from tests.helpers.taskonomy_files import write_view as _write_view

LABEL_SET = ["depth_zbuffer", "normal", "segment_semantic", "keypoints2d", "edge_texture"]


def _process_image(im, output_size):
    """``Taskonomy.process_image`` (lines 397-410)."""
    bands = im.getbands()
    if bands[0] == "L":
        im = np.array(im)
        im.setflags(write=1)
        im = torch.from_numpy(im).unsqueeze(0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = transforms.ToTensor()(im)
    if output_size and output_size != im.size:
        im = transforms_f.resize(im, output_size, Image.BILINEAR)
    return im


def _rescale_image(im, new_scale=(-1.0, 1.0), current_scale=None, no_clip=False):
    """``Taskonomy.rescale_image`` (lines 412-425)."""
    im = np.asarray(im, dtype=np.float32)
    if current_scale is not None:
        min_val, max_val = current_scale
        if not no_clip:
            im = np.clip(im, min_val, max_val)
        im = im - min_val
        im /= max_val - min_val
    min_val, max_val = new_scale
    im *= max_val - min_val
    im += min_val
    return im


def their_getitem(file_name: str, output_size, label_set):
    """``Taskonomy.__getitem__`` (lines 435-517) with ``augment=False``."""
    label_set = list(label_set)
    with torch.no_grad():
        im = _process_image(Image.open(file_name), output_size)
        im = _rescale_image(im, new_scale=[-1.0, 1.0], current_scale=[0.0, 1.0])
        ys = {}
        mask = None
        if os.path.isfile(file_name.replace("rgb", "mask_valid", 1).replace("rgb", "depth_zbuffer", 1)):
            label_set.append("mask")
        for i in label_set:
            if i == "mask" and mask is not None:
                continue
            if i == "mask":
                yfilename = file_name.replace("rgb", "mask_valid", 1).replace("rgb", "depth_zbuffer", 1)
            elif i == "segment_semantic":
                yfilename = file_name.replace("rgb", "segment_semantic", 1).replace(
                    "rgb", "segmentsemantic", 1
                )
            else:
                yfilename = file_name.replace("rgb", i)
            yim = _process_image(Image.open(yfilename), output_size)
            if "depth" in i:
                yim = torch.log1p(yim) / torch.log(torch.tensor(2.0) ** 16)
            elif i == "keypoints2d":
                yim = _rescale_image(yim.float(), new_scale=[-1.0, 1.0], current_scale=[0.0, 3129.0])
            elif i == "edge_texture":
                yim = _rescale_image(yim.float(), new_scale=[-1.0, 1.0], current_scale=[0.0, 11041.0])
            elif i == "normal":
                yim = _rescale_image(yim.float(), new_scale=[-1.0, 1.0], current_scale=[0.0, 1.0])
            elif i == "segment_semantic":
                yim = yim.squeeze(0).long()
            elif i == "mask":
                mask = yim.bool()
                yim = mask
            ys[i] = yim
        ys["rgb"] = im
        return im, ys


def _simo_root(root: Path, with_mask: bool) -> Path:
    """One test-split view in the SIMO layout; the segment_semantic file keeps the legacy domain name."""
    folder = _task_building(root)
    building = SIMO_SPLITS["test"][0]
    _write_view(folder, building, 0, 0, domain={"semseg": "segmentsemantic"})
    rng = np.random.default_rng(0)
    depth = rng.integers(1, 4000, (H, W)).astype(np.uint16)
    depth[0, 2] = 65535  # missing geometry
    depth[1, 4] = 0
    _write(folder("depth_zbuffer", building) / "point_0_view_0_domain_depth_zbuffer.png", depth)
    if with_mask:
        valid = (depth != 65535).astype(np.uint8) * 255
        valid[3, :2] = 0
        _write(folder("mask_valid", building) / "point_0_view_0_domain_depth_zbuffer.png", valid)
    return root / "rgb" / building / "point_0_view_0_domain_rgb.png"


@pytest.mark.parametrize("size", [(8, 12), (3, 5)])  # upsampling and (antialiased) downsampling
@pytest.mark.parametrize("with_mask", [True, False])
def test_simo_targets_equal_their_loader(tmp_path: Path, size, with_mask) -> None:
    root = tmp_path / "data"  # no "rgb" in the path: their loader replaces every "rgb" of it
    file_name = _simo_root(root, with_mask)
    ds = TaskonomyDataset(root, buildings=[SIMO_SPLITS["test"][0]], protocol="simo", simo_size=size)
    ours = ds[0]
    im, ys = their_getitem(str(file_name), size, LABEL_SET)

    np.testing.assert_allclose(2.0 * ours["image"].numpy() - 1.0, im, atol=1e-6, rtol=0)
    # autoencoding: the [-1, 1] input, as their ys["rgb"]
    np.testing.assert_allclose(ours["autoencoding"].numpy(), ys["rgb"], atol=1e-6, rtol=0)

    depth = ys["depth_zbuffer"][0].numpy()
    # their 65535 is read as int16 -1 and blends into its neighbours when resized (log1p(-1) = -inf
    # where it survives): ours equals theirs wherever theirs is finite, and masks the rest
    expected_mask = (
        ys["mask"][0].numpy() & np.isfinite(depth) if with_mask else np.isfinite(depth) & (depth != 0)
    )
    np.testing.assert_array_equal(ours["depth_mask"].numpy(), expected_mask)
    m = ours["depth_mask"].numpy()
    np.testing.assert_allclose(ours["depth"][0].numpy()[m], depth[m], atol=1e-6, rtol=0)

    for task, theirs in (("keypoints2d", ys["keypoints2d"]), ("edge", ys["edge_texture"])):
        want = ys["mask"][0].numpy() if with_mask else np.ones(size, bool)
        np.testing.assert_array_equal(ours[f"{task}_mask"].numpy(), want)
        np.testing.assert_allclose(ours[task][0].numpy()[want], theirs[0][want], atol=1e-6, rtol=0)

    seg = ys["segment_semantic"].numpy()  # labels bilinearly resized and rounded, as theirs
    np.testing.assert_array_equal(ours["semseg"].numpy(), np.where(seg == 0, 255, seg))

    # normals: the same directions (ours renormalised, grey 128 masked)
    theirs_n = ys["normal"]
    norm = np.linalg.norm(theirs_n, axis=0)
    nm = ours["normal_mask"].numpy()
    assert nm.any() and (norm[nm] > 0.5).all()
    np.testing.assert_allclose(ours["normal"].numpy()[:, nm], (theirs_n / norm)[:, nm], atol=1e-6)


def test_default_protocol_reads_mask_valid_and_keeps_unit_autoencoding(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _simo_root(root, with_mask=True)
    building = SIMO_SPLITS["test"][0]
    s = TaskonomyDataset(root, buildings=[building])[0]
    assert s["image"].shape == (3, H, W)  # no resize under the default protocol
    mask = s["depth_mask"].numpy()
    assert not mask[0, 2] and not mask[1, 4]  # 65535 and 0: missing depth
    assert not mask[3, :2].any()  # mask_valid narrows it
    assert mask.sum() == H * W - 4
    torch.testing.assert_close(s["autoencoding"], s["image"])  # [0, 1] target under "default"
    assert s["keypoints2d_mask"].all()  # mask_valid narrows depth only under "default"
