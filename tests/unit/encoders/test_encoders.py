"""The Encoder seam over timm and open_clip: layout facts, taps, hooks that adapt and record."""

from __future__ import annotations

import copy

import pytest
import torch

from simo_merge.encoders import build_encoder


@pytest.fixture(params=["timm", "open_clip"])
def encoder(request, tiny_timm, tiny_clip):
    return tiny_timm if request.param == "timm" else tiny_clip


def test_layout_facts():
    torch.manual_seed(0)
    timm_enc = build_encoder(
        "timm", "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=5, embed_dim=48, num_heads=2
    )
    assert (timm_enc.depth, timm_enc.width, timm_enc.num_prefix_tokens, timm_enc.grid_size) == (
        5,
        48,
        1,
        (4, 4),
    )
    assert timm_enc.default_taps() == [1, 2, 3, 4]
    deep = build_encoder(
        "timm", "vit_tiny_patch16_224", img_size=16, patch_size=8, depth=12, embed_dim=16, num_heads=1
    )
    assert deep.default_taps() == [2, 5, 8, 11]
    clip = build_encoder("open_clip", "ViT-Tiny-8")
    assert (clip.depth, clip.width, clip.num_prefix_tokens, clip.grid_size, clip.feature_dim) == (
        2,
        64,
        1,
        (4, 4),
        32,
    )
    assert clip.block_of_key("transformer.resblocks.1.mlp.c_fc.weight") == 1
    assert clip.block_of_key("proj") is None


def test_dinov2_style_register_tokens():
    torch.manual_seed(0)
    enc = build_encoder(
        "timm",
        "vit_small_patch14_reg4_dinov2",
        img_size=28,
        patch_size=14,
        depth=2,
        embed_dim=32,
        num_heads=2,
    )
    assert enc.num_prefix_tokens == 5
    out = enc(torch.rand(2, 3, 28, 28), taps=[1])
    assert out.taps[1].shape == (2, 5 + 4, 32)
    patches, cls = enc.tokens_to_map(out.taps[1])
    assert patches.shape == (2, 32, 2, 2) and cls.shape == (2, 32)
    torch.testing.assert_close(patches[:, :, 0, 1], out.taps[1][:, 5 + 1])


def test_forward_matches_library_model(encoder):
    x = torch.rand(2, 3, 32, 32)
    out = encoder(x, taps=[0, encoder.depth - 1])
    ref = encoder.model(encoder.normalize(x))
    ref = ref[0] if isinstance(ref, tuple) else ref
    torch.testing.assert_close(out.features, ref, rtol=0, atol=0)
    assert sorted(out.taps) == [0, encoder.depth - 1]
    assert out.taps[0].shape == (2, 1 + 16, encoder.width)
    assert encoder.num_hooks() == 0  # the temporary tap recorders are gone


def test_zero_adapter_is_bit_identical_and_hooks_remove_cleanly(encoder):
    x = torch.rand(2, 3, 32, 32)
    before = encoder(x, taps=list(range(encoder.depth)))
    handle = encoder.add_block_hook(range(encoder.depth), lambda i, t: t - torch.zeros_like(t), kind="adapt")
    feat = encoder.add_feature_hook(lambda f: f - 0.0, kind="adapt")
    same = encoder(x, taps=list(range(encoder.depth)))
    assert torch.equal(same.features, before.features)
    for i in before.taps:
        assert torch.equal(same.taps[i], before.taps[i])
    handle.remove()
    feat.remove()
    assert encoder.num_hooks() == 0


def test_adapt_hook_feeds_forward_and_recorders_see_adapted(encoder):
    x = torch.rand(2, 3, 32, 32)
    clean = encoder(x, taps=[0, 1])
    seen = {}
    with encoder.add_block_hook(0, lambda i, t: t + 1.0, kind="adapt"):
        with encoder.add_block_hook(0, lambda i, t: seen.__setitem__(i, t.clone())):
            out = encoder(x, taps=[0, 1])
    torch.testing.assert_close(out.taps[0], clean.taps[0] + 1.0)
    torch.testing.assert_close(seen[0], clean.taps[0] + 1.0)
    assert not torch.allclose(out.taps[1], clean.taps[1])  # the change reached the next block
    again = encoder(x, taps=[0, 1])
    assert torch.equal(again.taps[1], clean.taps[1])


def test_feature_hook_replaces_final_features(encoder):
    x = torch.rand(1, 3, 32, 32)
    clean = encoder(x).features
    with encoder.add_feature_hook(lambda f: 2 * f, kind="adapt"):
        torch.testing.assert_close(encoder(x).features, 2 * clean)
    torch.testing.assert_close(encoder(x).features, clean)


def test_hook_errors(encoder):
    with pytest.raises(IndexError, match="block 99"):
        encoder.add_block_hook(99, lambda i, t: None)
    with pytest.raises(ValueError, match="hook kind"):
        encoder.add_block_hook(0, lambda i, t: None, kind="patch")


def test_deepcopy_gets_its_own_hooks(tiny_timm):
    x = torch.rand(1, 3, 32, 32)
    original = tiny_timm(x).features
    clone = copy.deepcopy(tiny_timm)
    torch.testing.assert_close(clone(x).features, original)
    clone.add_block_hook(0, lambda i, t: t * 0, kind="adapt")
    assert tiny_timm.num_hooks() == 0
    torch.testing.assert_close(tiny_timm(x).features, original)
    assert not torch.allclose(clone(x).features, original)


def test_model_state_round_trip(tiny_timm):
    state = tiny_timm.model_state()
    assert "blocks.0.attn.qkv.weight" in state
    assert tiny_timm.block_of_key("blocks.3.mlp.fc1.weight") == 3
    zeroed = {k: torch.zeros_like(v) for k, v in state.items()}
    tiny_timm.load_model_state(zeroed)
    assert all(torch.count_nonzero(v) == 0 for v in tiny_timm.model_state().values())


def test_inputs_outside_0_1_warn_once_or_raise(tiny_timm):
    import warnings

    from simo_merge.encoders import InputRangeWarning

    raw = torch.rand(2, 3, 32, 32)
    normalised = (raw - 0.45) / 0.225  # normalised by the caller: about [-2, 2.4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_timm(raw)  # [0, 1]: silent
        tiny_timm(raw * 1.2 - 0.1)  # a little resampling overshoot: silent
    with pytest.warns(InputRangeWarning, match=r"outside \[0, 1\].*normalised twice"):
        tiny_timm(normalised)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_timm(normalised)  # once per encoder, not once per batch
    tiny_timm.input_check = "error"
    with pytest.raises(ValueError, match=r"input images span \[-2\.\d\d, 2\.\d\d\]"):
        tiny_timm(normalised)
    tiny_timm.input_check = "off"
    tiny_timm(normalised)
