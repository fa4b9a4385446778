"""The encoder's input normalisation (one place, ``normalise_input``) per protocol, against the SIMO code."""

from __future__ import annotations

import pytest
import torch

from simo_merge.config import ConfigError
from simo_merge.encoders import build_encoder
from simo_merge.encoders.input_range import normalise_input
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.pool.spec import apply_normalisation
from simo_merge.protocols import get_protocol

# a tiny DINOv2 (ImageNet mean/std; the augreg ViTs' 0.5/0.5 would make both protocols coincide)
NAME = "vit_small_patch14_dinov2"
ARCH = dict(img_size=28, patch_size=14, depth=2, embed_dim=16, num_heads=1)


def _encoder(normalisation: str):
    torch.manual_seed(0)
    return build_encoder("timm", NAME, normalisation, **ARCH).eval()


def _model_input(encoder, x: torch.Tensor) -> torch.Tensor:
    """What the wrapped library model receives when the encoder is called on ``x``."""
    seen = []
    handle = encoder.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        encoder(x)
    handle.remove()
    return seen[0]


def test_simo_protocol_feeds_two_x_minus_one_as_their_dataset_does():
    x = torch.rand(2, 3, 28, 28)
    # d23845jg/simo_merging training/create_dataset.py line 154 (and 212, 273, 336):
    im = 2.0 * x - 1.0  # Normalize to [-1, 1]
    simo = _encoder(get_protocol("simo").normalisation)
    torch.testing.assert_close(_model_input(simo, x), im, rtol=0, atol=0)
    torch.testing.assert_close(
        normalise_input(x, "two_x_minus_one", simo.pixel_mean, simo.pixel_std), im, rtol=0, atol=0
    )


def test_default_protocol_applies_the_encoders_mean_std():
    x = torch.rand(2, 3, 28, 28)
    enc = _encoder(get_protocol("default").normalisation)
    mean, std = enc.pixel_mean, enc.pixel_std  # the timm model's pretrained config: ImageNet's
    torch.testing.assert_close(mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(_model_input(enc, x), (x - mean) / std, rtol=0, atol=0)
    # the two protocols feed the same weights different inputs, hence different tokens
    with torch.no_grad():
        a, b = enc(x, taps=[1]).taps[1], _encoder("two_x_minus_one")(x, taps=[1]).taps[1]
    assert (a - b).abs().max() > 1e-3


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="input normalisation must be one of"):
        build_encoder("timm", NAME, "imagenet", **ARCH)


def _pool(encoder_config: dict) -> ExpertPool:
    enc = _encoder("encoder")
    state = enc.model_state()
    return ExpertPool(state, {"a": state}, encoder_config=encoder_config)


def test_pool_encoders_follow_the_data_protocol_and_a_trained_one_must_match():
    config = {"library": "timm", "arch": NAME, "kwargs": ARCH}
    pool = apply_normalisation(_pool(dict(config)), "simo")
    assert pool.encoder_config["normalisation"] == "two_x_minus_one"
    assert pool.encoder().normalisation == "two_x_minus_one"
    assert _pool(dict(config)).encoder().normalisation == "encoder"  # nothing recorded: the default
    trained = _pool({**config, "normalisation": "encoder"})  # θ0's sidecar records how it was trained
    with pytest.raises(ConfigError, match="data.protocol='simo'.*trained with 'encoder'"):
        apply_normalisation(trained, "simo")
    assert apply_normalisation(trained, "default").encoder().normalisation == "encoder"
