"""CLIP checkpoint formats: open_clip states, task_vectors pickles (no source tree), HF CLIP vision."""

from __future__ import annotations

import sys
import types

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from simo_merge.encoders.convert_clip import hf_clip_vision_to_open_clip, open_clip_visual_to_hf
from simo_merge.encoders.open_clip_vit import register_small_configs
from simo_merge.io.checkpoint import CheckpointError
from simo_merge.pool.clip_layout import (
    StandIn,
    load_open_clip_visual_state,
    load_task_vectors_encoder,
    load_task_vectors_head,
    load_task_vectors_zeroshot_head,
    task_vectors_paths,
)


@pytest.fixture(scope="module")
def tiny():
    register_small_configs()
    torch.manual_seed(0)
    return open_clip.create_model("ViT-Tiny-8", pretrained=None).eval()


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_open_clip_state_files(tmp_path, tiny):
    visual = tiny.visual.state_dict()
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    torch.save(tiny.state_dict(), tmp_path / "clip.bin")
    torch.save({"state_dict": {f"module.visual.{k}": v for k, v in visual.items()}}, tmp_path / "ddp.pt")
    torch.save(visual, tmp_path / "visual.pt")
    for name in ("clip.safetensors", "clip.bin", "ddp.pt", "visual.pt"):
        assert _same(load_open_clip_visual_state(tmp_path / name), visual), name
    torch.save({"text.weight": torch.zeros(2)}, tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="text.pt.*no open_clip visual tower"):
        load_open_clip_visual_state(tmp_path / "text.pt")


def _fake_task_vectors_tree(root, tiny, dataset="MNIST"):
    """Write zeroshot/finetuned/head pickles whose classes live in a throwaway ``src.modeling`` module."""
    src = types.ModuleType("src")
    modeling = types.ModuleType("src.modeling")

    class ImageEncoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.train_preprocess = "a transform"
            self.cache_dir = None

    class ClassificationHead(torch.nn.Linear):
        def __init__(self, normalize, weights, biases=None):
            super().__init__(weights.shape[1], weights.shape[0])
            self.normalize = normalize
            self.weight = torch.nn.Parameter(weights.clone())
            self.bias = torch.nn.Parameter(
                torch.zeros(weights.shape[0]) if biases is None else biases.clone()
            )

    for cls in (ImageEncoder, ClassificationHead):
        cls.__module__ = "src.modeling"
        cls.__qualname__ = cls.__name__
        setattr(modeling, cls.__name__, cls)
    src.modeling = modeling
    sys.modules["src"], sys.modules["src.modeling"] = src, modeling
    try:
        base = root / "ViT-Tiny-8"
        (base / dataset).mkdir(parents=True)
        clip = open_clip.create_model("ViT-Tiny-8", pretrained=None)
        clip.load_state_dict(tiny.state_dict())
        del clip.transformer  # task_vectors drops the text transformer (keep_lang=False)
        torch.save(ImageEncoder(clip), base / "zeroshot.pt")
        with torch.no_grad():
            clip.visual.conv1.weight.add_(1.0)
        torch.save(ImageEncoder(clip), base / dataset / "finetuned.pt")
        weight = torch.randn(10, 32)
        torch.save(ClassificationHead(True, weight), base / f"head_{dataset}.pt")
        torch.save(ClassificationHead(True, weight, torch.arange(10.0)), base / "head_biased.pt")
        torch.save(ClassificationHead(False, weight), base / "head_plain.pt")
    finally:
        del sys.modules["src.modeling"], sys.modules["src"]
    return base, weight


def test_task_vectors_pickles_without_source_tree(tmp_path, tiny):
    base, weight = _fake_task_vectors_tree(tmp_path, tiny)
    assert "src.modeling" not in sys.modules
    paths = task_vectors_paths(tmp_path, "ViT-Tiny-8", "MNIST")
    assert paths == {
        "zeroshot": base / "zeroshot.pt",
        "finetuned": base / "MNIST" / "finetuned.pt",
        "head": base / "head_MNIST.pt",
    }
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_task_vectors_encoder(paths["zeroshot"])

    visual = tiny.visual.state_dict()
    zs = load_task_vectors_encoder(paths["zeroshot"], allow_pickle=True)
    assert _same(zs, visual)
    ft = load_task_vectors_encoder(paths["finetuned"], allow_pickle=True)
    assert torch.equal(ft["conv1.weight"], visual["conv1.weight"] + 1.0)
    fresh = open_clip.create_model("ViT-Tiny-8", pretrained=None).visual
    fresh.load_state_dict(ft)  # strict: exactly the visual tower's keys

    w, b = load_task_vectors_head(paths["head"], allow_pickle=True)
    assert torch.equal(w, weight) and torch.equal(b, torch.zeros(10))
    head = load_task_vectors_zeroshot_head(base / "head_biased.pt", "MNIST", allow_pickle=True)
    x = torch.randn(3, 32)
    expected = torch.nn.functional.normalize(x, dim=1) @ weight.T + torch.arange(10.0)
    assert torch.allclose(head({"final": x}), expected, atol=1e-5)
    assert head.task.channels == 10 and head.taps == ["final"]
    with pytest.raises(CheckpointError, match="normalize=False"):
        load_task_vectors_head(base / "head_plain.pt", allow_pickle=True)
    with pytest.raises(FileNotFoundError, match="SVHNVal/finetuned.pt"):
        task_vectors_paths(tmp_path, "ViT-Tiny-8", "SVHN")


def test_restricted_unpickler_stands_in_for_foreign_classes(tmp_path):
    mod = types.ModuleType("evil_mod")

    class Boom:
        def __reduce__(self):
            return (Boom, ("arg",))

        def __init__(self, arg):
            raise AssertionError("foreign constructor must not run")

    Boom.__module__, Boom.__qualname__ = "evil_mod", "Boom"
    mod.Boom = Boom
    sys.modules["evil_mod"] = mod
    try:
        obj = object.__new__(Boom)
        torch.save({"x": obj, "w": torch.ones(2)}, tmp_path / "evil.pt")
    finally:
        del sys.modules["evil_mod"]
    from simo_merge.pool.clip_layout import load_pickled_object

    loaded = load_pickled_object(tmp_path / "evil.pt", allow_pickle=True)
    assert isinstance(loaded["x"], StandIn) and loaded["x"].pickled_class == "evil_mod.Boom"
    assert loaded["x"].pickled_args == ("arg",) and torch.equal(loaded["w"], torch.ones(2))


def test_hf_round_trip_without_transformers(tiny):
    visual = tiny.visual.state_dict()
    hf = open_clip_visual_to_hf(visual)
    assert hf["vision_model.encoder.layers.1.self_attn.k_proj.weight"].shape == (64, 64)
    assert hf["visual_projection.weight"].shape == (32, 64)
    assert "vision_model.pre_layrnorm.weight" in hf and "vision_model.embeddings.class_embedding" in hf
    assert _same(hf_clip_vision_to_open_clip(hf), visual)
    # a CLIPModel-style state: text tower keys ignored, position_ids dropped, projection given separately
    proj = hf.pop("visual_projection.weight")
    hf = {f"clip.{k}": v for k, v in hf.items()} | {"clip.text_model.x.weight": torch.zeros(1)}
    hf["clip.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    back = hf_clip_vision_to_open_clip(hf, projection=proj)
    assert _same(back, visual)
    assert "proj" not in hf_clip_vision_to_open_clip(hf)
    hf["clip.vision_model.encoder.layers.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="layers.0.extra.weight"):
        hf_clip_vision_to_open_clip(hf)


def test_hf_model_features_match(tiny):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
        hidden_act="gelu",
    )
    torch.manual_seed(3)
    hf_model = transformers.CLIPVisionModelWithProjection(cfg).eval()
    visual = open_clip.create_model("ViT-Tiny-8", pretrained=None).visual.eval()
    visual.load_state_dict(hf_clip_vision_to_open_clip(hf_model.state_dict()))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = visual(pixels)
        theirs = hf_model(pixel_values=pixels).image_embeds
    assert torch.allclose(ours, theirs, atol=1e-5)
