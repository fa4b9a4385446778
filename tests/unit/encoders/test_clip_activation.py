"""QuickGELU vs GELU: what a CLIP checkpoint says about its activation, and what building on it does.

OpenAI's CLIP (and every fine-tune of it: task_vectors, FusionBench) runs QuickGELU; open_clip's plain
``ViT-B-32`` config runs GELU. Loading such weights into a GELU tower changes every feature silently, so a
checkpoint that says which it is (OpenAI's own state entries, a Hugging Face ``config.json``) decides or
is refused with the architecture to build; on tiny random-init towers here.
"""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from simo_merge.encoders import build_encoder
from simo_merge.encoders.convert_clip import OPENAI_STATE_MARKERS, clip_activation
from simo_merge.encoders.open_clip_vit import register_small_configs
from simo_merge.io.checkpoint import CheckpointError
from simo_merge.pool.clip_layout import load_clip_checkpoints

ARCH = "ViT-Tiny-8"


@pytest.fixture(scope="module")
def quick():
    """A tiny QuickGELU CLIP (what OpenAI's weights are) and its state as openai/CLIP saves it."""
    register_small_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None, force_quick_gelu=True).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    markers = {
        "input_resolution": torch.tensor(32),
        "context_length": torch.tensor(77),
        "vocab_size": torch.tensor(49408),
    }
    return model, state, markers


def _features(encoder, x):
    return encoder(x).features


def test_openai_state_is_detected_and_refused_on_a_gelu_arch(quick, tmp_path):
    model, state, markers = quick
    assert set(markers) == set(OPENAI_STATE_MARKERS)
    save_file({**state, **markers}, str(tmp_path / "openai.safetensors"))
    save_file(state, str(tmp_path / "plain.safetensors"))
    assert clip_activation({**state, **markers}) == "quick_gelu"
    assert clip_activation({f"module.{k}": v for k, v in markers.items()}) == "quick_gelu"
    assert clip_activation(state, tmp_path / "plain.safetensors") is None  # says nothing: the arch decides
    with pytest.raises(
        ValueError, match=r"openai.safetensors: OpenAI-derived .* build the 'ViT-Tiny-8-quickgelu'"
    ):
        build_encoder("open_clip", ARCH, checkpoint=str(tmp_path / "openai.safetensors"))
    forced = build_encoder(
        "open_clip", ARCH, checkpoint=str(tmp_path / "openai.safetensors"), force_quick_gelu=True
    )
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model.visual((x - mean) / std)  # the encoder normalises its [0, 1] input
        torch.testing.assert_close(_features(forced, x), want)
        # what the GELU tower silently computed before: other features from the same weights
        gelu = build_encoder("open_clip", ARCH, checkpoint=str(tmp_path / "plain.safetensors"))
        assert (_features(gelu, x) - want).abs().max() > 1e-3


def test_hugging_face_config_names_the_activation(quick, tmp_path):
    _, state, _ = quick
    visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    cases = {
        "openai": ({"model_type": "clip_vision_model"}, "quick_gelu"),  # transformers' default, left out
        "laion": ({"model_type": "clip_vision_model", "hidden_act": "gelu"}, "gelu"),
        "whole": ({"model_type": "clip", "vision_config": {"hidden_act": "quick_gelu"}}, "quick_gelu"),
        "other": ({"model_type": "vit"}, None),
    }
    for name, (config, want) in cases.items():
        (tmp_path / name).mkdir()
        save_file(visual, str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        assert clip_activation(visual, tmp_path / name / "model.safetensors") == want, name
    with pytest.raises(
        ValueError, match=r"use GELU; build 'ViT-Tiny-8', not QuickGELU 'ViT-Tiny-8-quickgelu'"
    ):
        build_encoder(
            "open_clip", f"{ARCH}-quickgelu", checkpoint=str(tmp_path / "laion" / "model.safetensors")
        )
    (tmp_path / "other" / "config.json").write_text(json.dumps({"hidden_act": "relu"}))
    with pytest.raises(CheckpointError, match=r"config.json: hidden_act='relu'"):
        clip_activation(visual, tmp_path / "other" / "model.safetensors")


def test_clip8_open_clip_layout_reads_the_activation(quick, tmp_path):
    from simo_merge.jobs.clip import ClipConfig, resolve_architecture

    _, state, markers = quick
    base = tmp_path / "ckpt" / ARCH
    base.mkdir(parents=True)
    save_file({**state, **markers}, str(base / "zeroshot.safetensors"))
    save_file(state, str(base / "MNIST.safetensors"))
    ckpt = load_clip_checkpoints(tmp_path / "ckpt", ARCH, ["mnist"])
    assert ckpt.layout == "open_clip" and ckpt.activation == "quick_gelu"
    cfg = ClipConfig(checkpoints=str(tmp_path / "ckpt"), data="d", model=ARCH, tasks=["mnist"])
    assert resolve_architecture(cfg, ckpt) == (ARCH, True)  # was (ARCH, False): GELU on QuickGELU weights
    save_file(state, str(base / "zeroshot.safetensors"))
    assert load_clip_checkpoints(tmp_path / "ckpt", ARCH, ["mnist"]).activation is None
