"""Realignment: the adapter, every realigner's plan and model, cache equivalence, and the effect on a
small trained pool (bias down, normalised performance up over plain task arithmetic)."""

from __future__ import annotations

import pytest
import torch

from simo_merge.encoders import build_encoder
from simo_merge.features.inputs import RealignInputs
from simo_merge.features.sampling import IndexSampler
from simo_merge.features.sites import head_sites
from simo_merge.heads import build_head
from simo_merge.model import MultiTaskModel
from simo_merge.realign import REALIGNERS, Adapter
from simo_merge.realign.io import load_realigned, save_realigned
from simo_merge.realign.model import RealignedModel
from simo_merge.realign.train import RealignConfig, Realignment, realign
from simo_merge.tasks import normals, regression, segmentation
from tests.helpers.toy_states import perturbed

ALL = ["surgery", "deep", "shared-deep", "taps", "heads"]
SPECS = {"semseg": segmentation("semseg", 4), "depth": regression("depth"), "normal": normals()}
ENC = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2)


def make_encoder(**overrides):
    torch.manual_seed(0)
    return build_encoder("timm", "vit_tiny_patch16_224", **{**ENC, **overrides})


def make_heads(encoder):
    torch.manual_seed(1)
    return {t: build_head("linear", s, encoder, (32, 32)).eval() for t, s in SPECS.items()}


def test_adapter_is_identity_at_init_and_sized_by_rank():
    a = Adapter(32, rank=4)
    z = torch.randn(2, 5, 32)
    assert torch.equal(a(z), z)
    assert sum(p.numel() for p in a.parameters()) == 2 * 4 * 32
    assert torch.count_nonzero(a.up.weight) == 0 and torch.count_nonzero(a.down.weight) > 0
    with pytest.raises(ValueError, match="rank"):
        Adapter(32, rank=0)


@pytest.mark.parametrize("name", ALL)
def test_fresh_realigned_model_is_bit_identical_and_leaves_no_hooks(name):
    encoder = make_encoder()
    heads = make_heads(encoder)
    x = torch.rand(2, 3, 32, 32)
    reference = MultiTaskModel(encoder, heads).eval()(x)
    plan = REALIGNERS.get(name)(encoder.depth, {t: head_sites(h) for t, h in heads.items()})
    model = RealignedModel(encoder, heads, plan, rank=4).eval()
    out = model(x)
    for task in SPECS:
        assert torch.equal(out[task], reference[task]), task
        model.features(task, images=x)
    assert encoder.num_hooks() == 0


def test_plans_place_adapters_as_documented():
    sites = {"a": [1, 2], "b": [2]}
    surgery = REALIGNERS.get("surgery")(3, sites)
    assert surgery.adapters == {"a": [2], "b": [2]} and not surgery.feed_forward
    deep = REALIGNERS.get("deep")(3, {"a": ["final"]})
    assert deep.adapters == {"a": [0, 1, 2, "final"]} and deep.feed_forward and deep.token_reduce == "mean"
    shared = REALIGNERS.get("shared-deep")(3, sites)
    assert shared.adapters == {"shared": [0, 1, 2]} and shared.loss_sites == sites
    taps = REALIGNERS.get("taps")(3, sites)
    assert taps.adapters == sites and not taps.feed_forward
    assert REALIGNERS.get("heads")(3, sites).trains_heads


def _setup(num_inputs=8, same=False):
    encoder = make_encoder()
    heads = make_heads(encoder)
    base = encoder.model_state()
    experts = {t: dict(base) if same else perturbed(base, i + 1) for i, t in enumerate(SPECS)}
    images = torch.rand(num_inputs, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    return base, experts, heads, RealignInputs({t: images for t in SPECS}, name="t")


@pytest.mark.parametrize("name", ALL)
def test_merged_equal_to_expert_gives_zero_loss(name):
    base, experts, heads, inputs = _setup(same=True)
    run = Realignment(
        make_encoder, base, experts, heads, inputs, RealignConfig(realigner=name, steps=1, progress=False)
    )
    loss, parts = run.step_loss()
    assert loss.item() == pytest.approx(0.0, abs=1e-6), parts


@pytest.mark.parametrize("name", ALL)
def test_cached_and_uncached_training_give_the_same_loss_curve(name):
    base, experts, heads, inputs = _setup()
    merged = {
        k: (v + sum(e[k] for e in experts.values())) / 4 if v.is_floating_point() else v
        for k, v in base.items()
    }
    curves = []
    for use_cache in (True, False):
        cfg = RealignConfig(
            realigner=name, steps=6, batch_size=4, seed=3, use_cache=use_cache, progress=False
        )
        _, curve = realign(make_encoder, merged, experts, heads, inputs, cfg)
        curves.append(curve)
    assert curves[0][0] > 0
    assert max(abs(a - b) for a, b in zip(*curves, strict=True)) < 1e-5
    assert curves[0][-1] < curves[0][0]


def test_online_and_fraction_sampling():
    online = list(IndexSampler(10, 16, seed=0, online=True))
    assert len(online) == 10 and sorted(int(i) for i in torch.cat(online)) == list(range(10))
    sampler = iter(IndexSampler(10, 4, seed=0, fraction=0.5))
    seen = {int(i) for _ in range(6) for i in next(sampler)}
    assert len(seen) == 5
    base, experts, heads, inputs = _setup(num_inputs=5)
    _, curve = realign(
        make_encoder,
        base,
        experts,
        heads,
        inputs,
        RealignConfig(realigner="surgery", online=True, progress=False),
    )
    assert len(curve) == 5


def test_supervised_objective_uses_labels():
    base, experts, heads, inputs = _setup()
    images = inputs.sources["semseg"].images(torch.arange(8))  # every input, read once
    labels = {
        "semseg": {"semseg": torch.randint(0, 4, (8, 32, 32))},
        "depth": {
            "depth": torch.rand(8, 1, 32, 32) + 1,
            "depth_mask": torch.ones(8, 32, 32, dtype=torch.bool),
        },
        "normal": {"normal": torch.nn.functional.normalize(torch.randn(8, 3, 32, 32), dim=1)},
    }
    sup = RealignInputs({t: images for t in SPECS}, labels, "t")
    _, curve = realign(
        make_encoder,
        base,
        experts,
        heads,
        sup,
        RealignConfig(
            realigner="taps", objective="supervised", steps=15, batch_size=8, lr=1e-2, progress=False
        ),
    )
    assert curve[-1] < curve[0]
    with pytest.raises(KeyError, match="needs labels"):
        realign(
            make_encoder, base, experts, heads, inputs, RealignConfig(objective="supervised", progress=False)
        )


@pytest.mark.parametrize("name", ["deep", "heads"])
def test_save_and_load_round_trip(tmp_path, name):
    base, experts, heads, inputs = _setup()
    model, _ = realign(
        make_encoder,
        base,
        experts,
        heads,
        inputs,
        RealignConfig(realigner=name, steps=3, batch_size=4, progress=False),
    )
    save_realigned(tmp_path / "a.safetensors", model, name)
    enc = make_encoder()
    enc.load_model_state(base)
    loaded = load_realigned(tmp_path / "a.safetensors", enc, make_heads(enc))
    x = torch.rand(2, 3, 32, 32)
    for task, value in model(x).items():
        torch.testing.assert_close(loaded(x)[task], value)


@pytest.mark.slow
def test_deep_on_a_24_block_1024_wide_vit():
    def wide():
        torch.manual_seed(0)
        return build_encoder(
            "timm",
            "vit_tiny_patch16_224",
            img_size=16,
            patch_size=8,
            depth=24,
            embed_dim=1024,
            num_heads=16,
            mlp_ratio=0.25,
        )

    encoder = wide()
    base = encoder.model_state()
    heads = {"depth": build_head("linear", regression("depth"), encoder, (16, 16)).eval()}
    experts = {"depth": perturbed(base, 1, 0.01)}
    images = torch.rand(2, 3, 16, 16)
    model, curve = realign(
        wide,
        base,
        experts,
        heads,
        RealignInputs({"depth": images}),
        RealignConfig(realigner="deep", steps=2, batch_size=2, progress=False),
    )
    assert len(model.adapters["depth"]) == 24 and model.encoder.width == 1024
    assert all(torch.isfinite(torch.tensor(curve))) and curve[0] > 0


def test_deep_feature_cache_stores_only_the_token_means_its_loss_reads():
    from simo_merge.features.cache import FeatureCache
    from simo_merge.features.sites import run_encoder
    from simo_merge.realign.train import feature_l1

    base, experts, heads, inputs = _setup()
    cache = FeatureCache()
    run = Realignment(
        make_encoder, base, experts, heads, inputs, RealignConfig(realigner="deep", progress=False), cache
    )
    idx = torch.tensor([1, 4, 6])
    x = inputs.sources["depth"].images(idx)
    adapted = run.model.features("depth", images=x)
    targets = run.expert_targets("depth", idx)
    full = run_encoder(run.expert_encoder("depth"), x, [0, 1, 2])
    for site in (0, 1, 2):
        assert targets[site].shape == (3, 32)  # [B, D], not [B, 1 + 16 tokens, D]
        torch.testing.assert_close(targets[site], full[site].mean(1))
        assert feature_l1(adapted[site], targets[site], "mean").item() == pytest.approx(
            feature_l1(adapted[site], full[site], "mean").item(), rel=1e-6
        )
    assert cache.memory_bytes == 8 * 3 * 32 * 4  # 8 inputs x 3 blocks x width, fp32: 17x less than tokens
    # shared-deep compares every token: its cache keeps the token maps it reads
    shared = Realignment(
        make_encoder, base, experts, heads, inputs, RealignConfig(realigner="shared-deep", progress=False)
    )
    assert shared.expert_targets("depth", idx)[3 - 1].shape == (3, 17, 32)
