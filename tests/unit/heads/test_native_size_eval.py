"""protocol=simo evaluation at the stored (native) size: centre-padded to the patch grid, outputs resized
back, against the SIMO model's lines transcribed here (d23845jg/simo_merging @ 2fcaa49a)."""

from __future__ import annotations

import itertools
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from simo_merge.data import DataConfig, build_split
from simo_merge.encoders import build_encoder
from simo_merge.heads import build_head
from simo_merge.heads.base import activate
from simo_merge.model import MultiTaskModel
from simo_merge.tasks import normals, regression, segmentation

NAME = "vit_small_patch14_dinov2"
ARCH = dict(img_size=28, patch_size=14, depth=2, embed_dim=16, num_heads=1)


class CenterPadding(torch.nn.Module):
    """``models/dinov2/utils.py`` lines 24-42."""

    def __init__(self, multiple):
        super().__init__()
        self.multiple = multiple

    def _get_pad(self, size):
        new_size = math.ceil(size / self.multiple) * self.multiple
        pad_size = new_size - size
        pad_size_left = pad_size // 2
        pad_size_right = pad_size - pad_size_left
        return pad_size_left, pad_size_right

    @torch.inference_mode()
    def forward(self, x):
        pads = list(itertools.chain.from_iterable(self._get_pad(m) for m in x.shape[:1:-1]))
        output = F.pad(x, pads)
        return output


def _model() -> MultiTaskModel:
    torch.manual_seed(0)
    enc = build_encoder("timm", NAME, "two_x_minus_one", **ARCH).eval()
    heads = {
        "semseg": build_head("linear", segmentation("semseg", 5), enc, (28, 28), [0, 1]),
        "depth": build_head(
            "dpt", regression("depth", 1), enc, (28, 28), [0, 1], features=8, intermediate=[4, 8]
        ),
        "normal": build_head("linear", normals("normal"), enc, (28, 28), [1]),
    }
    return MultiTaskModel(enc, heads).eval()


def _their_outputs(model: MultiTaskModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Their path: ``2x - 1`` (create_dataset.py l. 154), the backbone's ``CenterPadding`` pre-hook
    (multitasker.py l. 92-94) on a backbone that takes any size, the head on the padded grid, then
    ``resize(..., size=img_gt.shape[2:], mode="bilinear", align_corners=False)`` of the whole output
    (depth/decode_heads.py l. 193-199; seg l. 134-140; normal l. 107-113)."""
    ref = timm.create_model(NAME, pretrained=False, num_classes=0, dynamic_img_size=True, **ARCH).eval()
    ref.load_state_dict(model.encoder.model.state_dict())
    ref.register_forward_pre_hook(lambda _, inp: CenterPadding(14)(inp[0]))
    taps: dict[int, torch.Tensor] = {}
    for i, block in enumerate(ref.blocks):
        block.register_forward_hook(lambda _m, _i, out, i=i: taps.__setitem__(i, out))
    with torch.no_grad():
        ref(2.0 * x - 1.0)
        h, w = (math.ceil(s / 14) for s in x.shape[-2:])
        out = {}
        for task, head in model.heads.items():
            maps = [taps[i][:, 1:].transpose(1, 2).reshape(x.shape[0], -1, h, w) for i in head.taps]
            prefixes = [taps[i][:, :1] for i in head.taps]
            raw = head.decode(maps, prefixes)
            raw = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out[task] = activate(head.task, raw)
    return out


@pytest.mark.parametrize("hw", [(30, 40), (28, 35), (17, 56)])
def test_native_size_outputs_equal_their_centre_pad_and_resize(hw):
    model = _model()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        ours = model(x)
    theirs = _their_outputs(model, x)
    for task in model.heads:
        assert ours[task].shape[-2:] == hw
        torch.testing.assert_close(ours[task], theirs[task], atol=1e-6, rtol=0)


def test_the_heads_own_size_runs_unchanged():
    model = _model()
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        out = model(x)
        feats = model.encoder(x, taps=[0, 1]).taps
        for task, head in model.heads.items():
            torch.testing.assert_close(out[task], head(feats), atol=0, rtol=0)
    assert model.encoder.model.dynamic_img_size is False  # the native-size forward restored the model


def test_open_clip_towers_refuse_other_sizes_by_name():
    enc = build_encoder("open_clip", "ViT-Tiny-8")
    with pytest.raises(ValueError, match="'ViT-Tiny-8' takes 32x32 images, got 40x40"):
        enc(torch.rand(1, 3, 40, 40))


@pytest.mark.parametrize(("protocol", "test_size"), [("default", (8, 8)), ("simo", None)])
def test_unaugmented_splits_keep_their_stored_size_under_simo(protocol, test_size):
    cfg = DataConfig(size=[8, 8], num_samples={"train": 2, "val": 2, "test": 2}, protocol=protocol)
    test = build_split(cfg, "test", seed=0)
    assert test.transform.size == test_size and not test.transform.train
    assert build_split(cfg, "train", seed=0).transform.size == (8, 8)  # training crops to data.size
