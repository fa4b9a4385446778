"""Heads: shapes, activations, tap handling and rebuild from config, for timm and open_clip encoders."""

from __future__ import annotations

import pytest
import torch

from simo_merge.heads import HEADS, build_head, head_from_config
from simo_merge.heads.linear import LinearHead
from simo_merge.tasks import normals, regression, segmentation

SPECS = [segmentation("semseg", 5), regression("depth"), normals(), regression("edge")]


@pytest.mark.parametrize("kind", ["linear", "dpt"])
@pytest.mark.parametrize("which", ["timm", "open_clip"])
def test_head_outputs_and_activation(kind, which, tiny_timm, tiny_clip):
    encoder = tiny_timm if which == "timm" else tiny_clip
    for spec in SPECS:
        torch.manual_seed(0)
        head = build_head(kind, spec, encoder, (32, 32)).eval()
        out = head(encoder(torch.rand(2, 3, 32, 32), taps=head.taps).taps)
        assert out.shape == (2, spec.channels, 32, 32)
        if spec.name == "depth":
            assert out.min() > 0
        if spec.kind == "normals":
            torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 32, 32), atol=1e-4, rtol=0)
        rebuilt = head_from_config(head.config())
        rebuilt.load_state_dict(head.state_dict())
        taps = encoder(torch.rand(1, 3, 32, 32), taps=head.taps).taps
        torch.testing.assert_close(rebuilt.eval()(taps), head(taps))


def test_heads_read_their_taps_and_the_cls_token(tiny_timm):
    head = build_head("linear", regression("depth"), tiny_timm, (32, 32), taps=[1, 3]).eval()
    assert head.taps == [1, 3]
    taps = tiny_timm(torch.rand(1, 3, 32, 32), taps=[1, 3]).taps
    base = head(taps)
    changed = dict(taps)
    changed[1] = taps[1].clone()
    changed[1][:, 0] += 5.0  # only the CLS token of tap 1
    assert not torch.allclose(head(changed), base)
    with pytest.raises(KeyError, match="missing"):
        head({3: taps[3]})


def test_dpt_on_a_patch14_encoder():
    from simo_merge.encoders import build_encoder

    enc = build_encoder(
        "timm",
        "vit_small_patch14_reg4_dinov2",
        img_size=56,
        patch_size=14,
        depth=2,
        embed_dim=32,
        num_heads=2,
    )
    head = build_head("dpt", normals(), enc, (56, 56), taps=[0, 1], features=16)
    assert head(enc(torch.rand(2, 3, 56, 56), taps=[0, 1]).taps).shape == (2, 3, 56, 56)


def test_registry_and_bad_config():
    assert {"linear", "dpt"} <= set(HEADS.names())
    with pytest.raises(KeyError, match="lacks key 'taps'"):
        head_from_config(
            {
                "kind": "linear",
                "task": {"name": "d", "kind": "regression", "channels": 1},
                "layout": {
                    "width": 4,
                    "num_prefix_tokens": 1,
                    "grid_size": [2, 2],
                    "patch_size": 4,
                    "image_size": [8, 8],
                },
            }
        )


def test_dense_heads_refuse_a_classification_task_at_construction(tiny_timm):
    """dpt only decodes maps; ``linear`` builds its pooled classifier for a classification task instead."""
    from simo_merge.tasks import classification

    with pytest.raises(ValueError, match=r"'dpt' head serves task kinds .*'MNIST' is 'classification'"):
        build_head("dpt", classification("MNIST", 10), tiny_timm, (32, 32))
    with pytest.raises(ValueError, match=r"'linear' head serves task kinds .*'MNIST' is 'classification'"):
        LinearHead(classification("MNIST", 10), tiny_timm, [1])
    head = build_head("linear", classification("MNIST", 10), tiny_timm, (32, 32))
    assert head.task_kinds == ("classification",)


def test_zeroshot_head_refuses_a_dense_task():
    from simo_merge.heads.zeroshot import placeholder_layout

    with pytest.raises(ValueError, match="classification task"):
        HEADS.get("zeroshot")(segmentation("semseg", 5), placeholder_layout(8), embed_dim=8)
