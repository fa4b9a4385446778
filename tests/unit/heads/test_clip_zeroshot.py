"""Zero-shot CLIP head (heads/zeroshot.py) and the benchmark's class-name/template tables."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from simo_merge.datasets import clip_templates as ct
from simo_merge.encoders.open_clip_vit import OpenClipViTEncoder, register_small_configs
from simo_merge.heads import HEADS, head_from_config
from simo_merge.heads.zeroshot import ZeroShotHead, zeroshot_head, zeroshot_head_from_weights
from simo_merge.model import MultiTaskModel


@pytest.fixture(scope="module")
def tiny_clip_model():
    register_small_configs()
    torch.manual_seed(0)
    return open_clip.create_model("ViT-Tiny-8", pretrained=None).eval()


def test_tables():
    assert ct.DATASETS[:8] == ("SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB", "MNIST", "DTD")
    assert len(ct.DATASETS) == 20  # + the twelve of the 14/20-task benchmarks (test_clip20_datasets)
    for name in ct.DATASETS:
        names = ct.classnames(name)
        assert len(names) == ct.NUM_CLASSES[name] and len(set(names)) == len(names), name
        assert all(t.count("{}") == 1 for t in ct.templates(name)), name
    assert [len(ct.templates(d)) for d in ct.DATASETS[:8]] == [2, 8, 18, 3, 1, 3, 1, 8]
    assert (
        ct.classnames("SUN397")[0] == "abbey" and ct.classnames("Cars")[-1] == "smart fortwo Convertible 2012"
    )
    assert ct.classnames("EuroSAT")[-1] == "lake or sea" and ct.classnames("GTSRB")[14] == "stop"
    assert ct.prompts("MNISTVal", "7") == ['a photo of the number: "7".']
    assert ct.templates("RESISC45")[6] == "satellite imagery of a {}."
    assert ct.templates("dtd")[4] == "a photo of the {} texture."
    with pytest.raises(KeyError, match="ImageNet"):
        ct.classnames("ImageNet")


def test_logits_equal_hand_computation(tiny_clip_model):
    model = tiny_clip_model
    tok = open_clip.get_tokenizer("ViT-Tiny-8")
    names, templates = ["cat", "dog", "car"], ["a photo of a {}.", "a drawing of the {}."]
    head = zeroshot_head(model, tok, names, templates, task_name="pets")
    assert isinstance(head, ZeroShotHead) and head.taps == ["final"]
    assert head.task.kind == "classification" and head.task.channels == 3
    assert not list(head.parameters())  # frozen: weight is a buffer

    with torch.no_grad():
        rows = []
        for n in names:
            e = model.encode_text(tok([templates[0].format(n), templates[1].format(n)]))
            e = e / e.norm(dim=-1, keepdim=True)
            m = e.mean(0)
            rows.append(m / m.norm())
        weight = torch.stack(rows) * model.logit_scale.exp()
        torch.manual_seed(1)
        images = torch.rand(2, 3, 32, 32)
        encoder = OpenClipViTEncoder(model.visual, name="ViT-Tiny-8")
        feats = encoder(images).features
        expected = (feats / feats.norm(dim=-1, keepdim=True)) @ weight.T
        assert torch.allclose(head.weight, weight, atol=1e-6)
        assert torch.allclose(head({"final": feats}), expected, atol=1e-5)
        # through the multi-task model, which feeds "final" to the head
        out = MultiTaskModel(encoder, {"pets": head})(images)["pets"]
    assert out.shape == (2, 3) and torch.allclose(out, expected, atol=1e-5)
    assert head.layout.grid_size == (4, 4) and head.layout.width == 64


def test_config_round_trip_and_errors(tiny_clip_model):
    tok = open_clip.get_tokenizer("ViT-Tiny-8")
    head = zeroshot_head(tiny_clip_model, tok, ["a", "b"], ["{}"], task_name="t", logit_scale=50.0)
    assert torch.allclose(head.weight.norm(dim=1), torch.full((2,), 50.0), atol=1e-4)
    assert HEADS.get("zeroshot") is ZeroShotHead
    clone = head_from_config(head.config())
    clone.load_state_dict(head.state_dict())
    x = torch.randn(4, 32)
    assert torch.equal(clone({"final": x}), head({"final": x}))
    assert clone.config() == head.config()
    with pytest.raises(KeyError, match="final"):
        head({0: x})
    with pytest.raises(ValueError, match=r"\[B, 32\]"):
        head({"final": torch.randn(4, 16)})
    with pytest.raises(ValueError, match="taps=\\['final'\\]"):
        ZeroShotHead(head.task, head.layout, [3], embed_dim=32)
    with pytest.raises(ValueError, match="placeholder"):
        zeroshot_head(tiny_clip_model, tok, ["a"], ["no slot"])


def test_from_weights_with_bias():
    w = F.normalize(torch.randn(5, 8), dim=1) * 100
    b = torch.arange(5.0)
    head = zeroshot_head_from_weights(w, b, task_name="x")
    x = torch.randn(3, 8)
    assert torch.allclose(head({"final": x}), F.normalize(x, dim=1) @ w.T + b, atol=1e-4)
    assert zeroshot_head_from_weights(w, torch.zeros(5)).bias is None  # all-zero bias dropped
    rebuilt = head_from_config(head.config())
    rebuilt.load_state_dict(head.state_dict())
    assert torch.equal(rebuilt({"final": x}), head({"final": x}))
