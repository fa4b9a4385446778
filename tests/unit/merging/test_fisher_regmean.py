"""Fisher merging and RegMean: the merge rules against hand-computed values, and the statistics (diagonal
Fisher, per-layer Gram matrices) collected from tiny timm / open_clip experts through a MergeData."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simo_merge.encoders import build_encoder
from simo_merge.features.cache import FeatureCache
from simo_merge.heads import build_head
from simo_merge.merging import MERGE_METHODS, merge
from simo_merge.merging.data import MergeData
from simo_merge.merging.data.fisher import diagonal_fisher, fisher_of_model, sampled_log_likelihood
from simo_merge.merging.data.gram import GramRecorder, attention_context, collect_grams, gram_matrices
from simo_merge.merging.regmean import regmean_linear, regularised_gram
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.tasks import normals, regression, segmentation
from tests.helpers.toy_states import perturbed

SPECS = {"semseg": segmentation("semseg", 4), "depth": regression("depth"), "normal": normals()}
ENC = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)


def make_encoder():
    torch.manual_seed(0)
    return build_encoder("timm", "vit_tiny_patch16_224", **ENC)


def make_probe(cache=None, same=False, num_inputs=8):
    encoder = make_encoder()
    torch.manual_seed(1)
    heads = {t: build_head("linear", s, encoder, (32, 32)).eval() for t, s in SPECS.items()}
    base = encoder.model_state()
    experts = {t: dict(base) if same else perturbed(base, i + 1) for i, t in enumerate(SPECS)}
    images = torch.rand(num_inputs, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    merge_data = MergeData(
        make_encoder,
        heads,
        experts,
        {t: images for t in SPECS},
        name="t",
        batch_size=2,
        cache=cache,
        progress=False,
    )
    return merge_data, ExpertPool(base, experts)


def toy_pool(num_tasks=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = {"lin.weight": (3, 4), "lin.bias": (3,), "norm.weight": (4,)}
    base = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    base["ids"] = torch.arange(3)
    experts = {}
    for t in range(num_tasks):
        state = {k: v + torch.randn(v.shape, generator=gen) for k, v in base.items() if k != "ids"}
        experts[f"t{t}"] = {**state, "ids": torch.arange(3)}
    return ExpertPool(base, experts)


# ------------------------------------------------------------------------------------- Fisher merging
def test_fisher_with_equal_fishers_is_weight_averaging_and_weights_by_fisher():
    pool = toy_pool()
    gen = torch.Generator().manual_seed(3)
    shared = {k: torch.rand(v.shape, generator=gen) + 0.1 for k, v in pool.base.items() if k != "ids"}
    merged = merge(pool, "fisher", fishers={t: shared for t in pool.tasks})
    average = merge(pool, "weight_average")
    for key in pool.base:
        torch.testing.assert_close(merged[key], average[key], rtol=0, atol=1e-6)
    assert torch.equal(merged["ids"], pool.base["ids"])
    # F = 1 for t0, 3 for t1: θ = (θ0 + 3 θ1) / 4 entrywise (t2 left out)
    fishers = {
        "t0": {k: torch.ones_like(v) for k, v in shared.items()},
        "t1": {k: 3 * torch.ones_like(v) for k, v in shared.items()},
    }
    two = merge(pool, "fisher", tasks=["t0", "t1"], fishers=fishers, normalize=False)
    expected = (pool.experts["t0"]["lin.weight"] + 3 * pool.experts["t1"]["lin.weight"]) / 4
    torch.testing.assert_close(two["lin.weight"], expected, rtol=0, atol=1e-6)


def test_fisher_dominated_by_one_task_returns_that_expert():
    pool = toy_pool()
    fishers = {
        t: {k: torch.full(v.shape, 1e6 if t == "t1" else 1e-3) for k, v in pool.base.items() if k != "ids"}
        for t in pool.tasks
    }
    merged = merge(pool, "fisher", fishers=fishers, normalize=False)
    for key, value in pool.experts["t1"].items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-5)
    # all-zero Fishers: by default (FusionBench) the floor gives the plain average, not 0/0 ...
    zeros = {t: {k: torch.zeros_like(v) for k, v in f.items()} for t, f in fishers.items()}
    torch.testing.assert_close(
        merge(pool, "fisher", fishers=zeros)["lin.weight"], merge(pool, "weight_average")["lin.weight"]
    )
    # ... and all_zero="theta0" keeps θ0
    kept = merge(pool, "fisher", fishers=zeros, all_zero="theta0")["lin.weight"]
    torch.testing.assert_close(kept, pool.base["lin.weight"])


def test_fisher_bad_input_is_named():
    pool = toy_pool()
    with pytest.raises(ValueError, match="merge_data=MergeData"):
        merge(pool, "fisher")
    full = {k: torch.ones_like(v) for k, v in pool.base.items() if k != "ids"}
    with pytest.raises(KeyError, match="t2"):
        merge(pool, "fisher", fishers={"t0": full, "t1": full})
    partial = {k: v for k, v in full.items() if k != "lin.bias"}
    with pytest.raises(KeyError, match="lin.bias"):
        merge(pool, "fisher", fishers={"t0": full, "t1": full, "t2": partial})
    with pytest.raises(ValueError, match="floor"):
        merge(pool, "fisher", fishers={t: full for t in pool.tasks}, floor=0.0)
    with pytest.raises(ValueError, match="floor_mode"):
        merge(pool, "fisher", fishers={t: full for t in pool.tasks}, floor_mode="max")
    with pytest.raises(ValueError, match="all_zero"):
        merge(pool, "fisher", fishers={t: full for t in pool.tasks}, all_zero="nan")
    assert "fisher" in MERGE_METHODS and "regmean" in MERGE_METHODS


def test_fisher_normalised_matches_the_reference_formula():
    """FusionBench ``merging_with_fisher_weights`` (normalize_fisher_weight=True, minimal 1e-6), written
    out here in float64 over θ_t (not τ_t): Fishers whose scales differ by 10^4 get comparable say."""
    pool = toy_pool()
    gen = torch.Generator().manual_seed(11)
    keys = [k for k in pool.base if k != "ids"]
    scale = {"t0": 1e4, "t1": 1.0, "t2": 1e-2}
    fishers = {
        t: {k: scale[t] * torch.rand(pool.base[k].shape, generator=gen) for k in keys} for t in pool.tasks
    }
    fishers["t2"]["lin.bias"][1] = 0.0  # one zero entry: the floor keeps it in the sum
    eps = 1e-6
    norms = {t: sum((fishers[t][k].double() ** 2).sum() for k in keys).sqrt() for t in pool.tasks}
    inv = {t: 1.0 / (norms[t] + eps) for t in pool.tasks}
    coeff = {t: inv[t] / sum(inv.values()) for t in pool.tasks}
    merged = merge(pool, "fisher", fishers=fishers)
    unnormalised = merge(pool, "fisher", fishers=fishers, normalize=False, floor_mode="add")
    for key in keys:
        num = sum(
            coeff[t] * (fishers[t][key].double() + eps) * pool.experts[t][key].double() for t in pool.tasks
        )
        den = sum(coeff[t] * (fishers[t][key].double() + eps) for t in pool.tasks)
        torch.testing.assert_close(merged[key].double(), num / den, rtol=1e-5, atol=1e-5)
        plain = sum((fishers[t][key].double() + eps) * pool.experts[t][key].double() for t in pool.tasks)
        plain = plain / sum(fishers[t][key].double() + eps for t in pool.tasks)
        torch.testing.assert_close(unnormalised[key].double(), plain, rtol=1e-5, atol=1e-5)
    # without normalisation the 10^4-scaled task dominates: the two merges differ by far more than rounding
    assert (merged["lin.weight"] - unnormalised["lin.weight"]).abs().max() > 0.1
    # clamp floor (the previous default): max(F, 1e-6) instead of F + 1e-6
    clamped = merge(pool, "fisher", fishers=fishers, normalize=False, floor_mode="clamp")
    num = sum(fishers[t]["lin.bias"].clamp_min(eps) * pool.experts[t]["lin.bias"] for t in pool.tasks)
    den = sum(fishers[t]["lin.bias"].clamp_min(eps) for t in pool.tasks)
    torch.testing.assert_close(clamped["lin.bias"], num / den, rtol=1e-5, atol=1e-5)


def fusionbench_fisher(params, fishers, minimal=1e-6):
    """FusionBench ``fusion_bench/method/fisher_merging/fisher_merging.py`` @1a28175, transcribed (float64):
    l.313 ``fisher_scaling_coefficients = torch.ones(len(models_to_merge)) / len(models_to_merge)``;
    l.97/106 ``models_fisher_norm``: per task the L2 norm over every merged entry; l.146-155
    ``F + minimal_fisher_weight``; l.164-173 ``_models_fisher_norm = 1.0 / (models_fisher_norm +
    minimal_fisher_weight)``, divided by its sum, times the scaling coefficients; l.176-187
    ``numerator = (coef * F * param).sum(0)``, ``denominator = (coef * F).sum(0)``, their ratio."""
    tasks = list(params)
    keys = list(params[tasks[0]])
    scaling = torch.ones(len(tasks), dtype=torch.float64) / len(tasks)
    norms = torch.stack([torch.stack([fishers[t][k].double().norm() for k in keys]).norm() for t in tasks])
    inverse = 1.0 / (norms + minimal)
    coef = scaling * inverse / inverse.sum()
    merged = {}
    for key in keys:
        values = torch.stack([params[t][key].double() for t in tasks])
        weights = torch.stack([fishers[t][key].double() for t in tasks]) + minimal
        c = coef.reshape(-1, *[1] * (values.dim() - 1))
        merged[key] = (c * weights * values).sum(0) / (c * weights).sum(0)
    return merged


def test_fisher_entries_no_task_sees_follow_fusionbench_or_keep_theta0():
    pool = toy_pool()
    keys = [k for k in pool.base if k != "ids"]
    gen = torch.Generator().manual_seed(4)
    scale = {"t0": 1e3, "t1": 1.0, "t2": 1e-2}  # unequal norms: the floored average is weighted, not plain
    fishers = {
        t: {k: scale[t] * torch.rand(pool.base[k].shape, generator=gen) for k in keys} for t in pool.tasks
    }
    for t in pool.tasks:
        fishers[t]["lin.weight"][0, 0] = 0.0
        fishers[t]["lin.bias"].zero_()  # a whole tensor no task sees
    want = fusionbench_fisher({t: {k: pool.experts[t][k] for k in keys} for t in pool.tasks}, fishers)
    merged = merge(pool, "fisher", fishers=fishers)
    for key in keys:
        torch.testing.assert_close(merged[key].double(), want[key], rtol=1e-6, atol=1e-6)
    # the floored weighted average there: Σ c_t θ_t / Σ c_t, far from the plain average and from θ0
    average = merge(pool, "weight_average")
    assert (merged["lin.bias"] - average["lin.bias"]).abs().max() > 0.1
    assert (merged["lin.bias"] - pool.base["lin.bias"]).abs().max() > 0.1
    kept = merge(pool, "fisher", fishers=fishers, all_zero="theta0")
    assert kept["lin.weight"][0, 0] == pool.base["lin.weight"][0, 0]
    assert torch.equal(kept["lin.bias"], pool.base["lin.bias"].float())
    informed = torch.ones(3, 4, dtype=torch.bool)
    informed[0, 0] = False
    torch.testing.assert_close(kept["lin.weight"][informed], merged["lin.weight"][informed], rtol=0, atol=0)


def test_sampled_log_likelihood_by_hand():
    logits = torch.full((1, 4, 2, 3), -50.0)
    logits[:, 2] = 50.0  # every pixel is surely class 2: the sampled label is 2 and log p ≈ 0
    ll = sampled_log_likelihood(segmentation("s", 4), logits, torch.Generator().manual_seed(0))
    assert ll.shape == (1,) and abs(ll.item()) < 1e-6
    # labels follow the softmax: the mean sampled log p is −entropy (a p = 0 class is never drawn)
    probs = torch.tensor([1 / 6, 2 / 6, 3 / 6, 0.0])
    logits = probs.clamp_min(1e-30).log().view(1, 4, 1, 1).expand(1, 4, 100, 100)
    ll = sampled_log_likelihood(segmentation("s", 4), logits, torch.Generator().manual_seed(1))
    entropy = -(probs[:3] * probs[:3].log()).sum()
    assert abs(ll.item() + entropy.item()) < 0.02
    pred = torch.randn(2, 3, 2, 2)
    ll = sampled_log_likelihood(normals(), pred, torch.Generator().manual_seed(7))
    eps = torch.randn(pred.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ll, -0.5 * eps.pow(2).sum(1).reshape(2, -1).mean(1))


def test_fisher_is_per_image_and_restores_requires_grad():
    merge_data, _ = make_probe()
    encoder, head = merge_data.expert_encoder("depth"), merge_data.heads["depth"]
    x = merge_data.read("depth", torch.arange(2))
    joint = fisher_of_model(encoder, head, [x], torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)
    first = fisher_of_model(encoder, head, [x[:1]], gen)
    second = fisher_of_model(encoder, head, [x[1:]], gen)
    for key in joint:
        torch.testing.assert_close(joint[key], (first[key] + second[key]) / 2, rtol=1e-5, atol=1e-12)
    assert not any(p.requires_grad for p in encoder.parameters())
    assert encoder.num_hooks() == 0


def test_diagonal_fisher_is_non_negative_finite_and_cached(tmp_path):
    cache = FeatureCache(tmp_path)
    merge_data, pool = make_probe(cache)
    float_keys = {k for k, v in pool.base.items() if v.is_floating_point()}
    for task in SPECS:
        fisher = diagonal_fisher(merge_data, task, num_batches=2)
        assert set(fisher) == float_keys
        for key, value in fisher.items():
            assert value.shape == pool.base[key].shape
            assert torch.isfinite(value).all() and (value >= 0).all(), (task, key)
        assert fisher["blocks.0.attn.qkv.weight"].sum() > 0 and fisher["pos_embed"].sum() > 0
        misses = cache.misses
        again = diagonal_fisher(merge_data, task, num_batches=2)
        assert cache.misses == misses and all(torch.equal(again[k], fisher[k]) for k in fisher)
    assert cache.misses == 3
    # a new process (fresh cache object, same folder) reads them back from disk, keys intact
    fresh = FeatureCache(tmp_path)
    reloaded, _ = make_probe(fresh)
    disk = diagonal_fisher(reloaded, "semseg", num_batches=2)
    assert fresh.misses == 0 and fresh.hits == 1
    assert all(torch.equal(disk[k], diagonal_fisher(merge_data, "semseg", num_batches=2)[k]) for k in disk)
    # a different batch count is a different statistic
    diagonal_fisher(merge_data, "semseg", num_batches=1)
    assert cache.misses == 4


def test_fisher_merge_through_a_probe():
    merge_data, pool = make_probe(same=True)
    merged = merge(pool, "fisher", merge_data=merge_data, num_batches=1)
    for key, value in pool.experts["depth"].items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-6)
    merge_data, pool = make_probe()
    fishers = {t: diagonal_fisher(merge_data, t, num_batches=1) for t in SPECS}
    via_probe = merge(pool, "fisher", merge_data=merge_data, num_batches=1)
    direct = merge(pool, "fisher", fishers=fishers)
    assert all(torch.equal(via_probe[k], direct[k]) for k in direct)


# ------------------------------------------------------------------------------------------- RegMean
def test_regmean_single_linear_matches_closed_form_least_squares():
    pool = toy_pool()
    gen = torch.Generator().manual_seed(11)
    xs = {
        t: torch.randn(n, 4, generator=gen, dtype=torch.float64)
        for t, n in zip(pool.tasks, (5, 9, 7), strict=True)
    }
    grams = {t: {"lin.weight": x.T @ x} for t, x in xs.items()}
    merged = merge(pool, "regmean", grams=grams, alpha=1.0)
    lhs = sum(x.T @ x for x in xs.values())
    rhs = sum(x.T @ x @ pool.experts[t]["lin.weight"].double().T for t, x in xs.items())
    expected = torch.linalg.solve(lhs, rhs).T
    torch.testing.assert_close(merged["lin.weight"].double(), expected, rtol=0, atol=1e-6)

    # it is the minimiser: the least-squares residual is lower than the plain average's
    def residual(w):
        return sum(
            ((x @ w.double().T - x @ pool.experts[t]["lin.weight"].double().T) ** 2).sum()
            for t, x in xs.items()
        )

    assert residual(merged["lin.weight"]) < residual(merge(pool, "weight_average")["lin.weight"])
    # other parameters: averaged, or task arithmetic with lam
    average = merge(pool, "weight_average")
    torch.testing.assert_close(merged["lin.bias"], average["lin.bias"])
    ta = merge(pool, "regmean", grams=grams, others="task_arithmetic", lam=0.3)
    torch.testing.assert_close(ta["norm.weight"], merge(pool, "task_arithmetic", lam=0.3)["norm.weight"])
    assert torch.equal(merged["ids"], pool.base["ids"])


def test_regmean_identical_experts_returns_the_expert():
    pool = toy_pool(num_tasks=1)
    same = ExpertPool(pool.base, {t: pool.experts["t0"] for t in ("a", "b", "c")})
    gen = torch.Generator().manual_seed(2)
    grams = {}
    for t in same.tasks:
        x = torch.randn(6, 4, generator=gen)
        grams[t] = {"lin.weight": x.T @ x}
    merged = merge(same, "regmean", grams=grams, alpha=0.9)
    for key, value in pool.experts["t0"].items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-6)


def test_regmean_alpha_scales_off_diagonals():
    g = torch.tensor([[4.0, 2.0], [2.0, 9.0]])
    assert torch.equal(regularised_gram(g, 0.5), torch.tensor([[4.0, 1.0], [1.0, 9.0]]))
    assert torch.equal(regularised_gram(g, 1.0), g)
    # α = 0: a per-input-feature average weighted by each task's diagonal Gram entry
    w1, w2 = torch.randn(3, 2), torch.randn(3, 2)
    g1, g2 = torch.tensor([[1.0, 0.5], [0.5, 2.0]]), torch.tensor([[3.0, -1.0], [-1.0, 2.0]])
    merged = regmean_linear([w1, w2], [g1, g2], alpha=0.0)
    expected = torch.stack([(w1[:, 0] + 3 * w2[:, 0]) / 4, (2 * w1[:, 1] + 2 * w2[:, 1]) / 4], 1)
    torch.testing.assert_close(merged.float(), expected)
    assert not torch.allclose(regmean_linear([w1, w2], [g1, g2], alpha=1.0).float(), expected)


def test_regmean_unused_input_feature_keeps_the_average():
    w1, w2 = torch.randn(3, 2), torch.randn(3, 2)
    merged = regmean_linear(
        [w1, w2], [torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([3.0, 0.0]))]
    )
    assert torch.isfinite(merged).all()
    torch.testing.assert_close(merged[:, 0].float(), (w1[:, 0] + 3 * w2[:, 0]) / 4)
    torch.testing.assert_close(merged[:, 1].float(), (w1[:, 1] + w2[:, 1]) / 2)


def test_regmean_bad_input_is_named():
    pool = toy_pool()
    eye = torch.eye(4)
    with pytest.raises(ValueError, match="merge_data=MergeData"):
        merge(pool, "regmean")
    with pytest.raises(KeyError, match="lin.weight"):
        merge(pool, "regmean", grams={"t0": {"lin.weight": eye}, "t1": {}, "t2": {}})
    with pytest.raises(ValueError, match="expected"):
        merge(pool, "regmean", grams={t: {"lin.weight": torch.eye(3)} for t in pool.tasks})
    with pytest.raises(KeyError, match="nope.weight"):
        merge(pool, "regmean", grams={t: {"nope.weight": eye} for t in pool.tasks})
    with pytest.raises(ValueError, match="alpha"):
        merge(pool, "regmean", grams={t: {"lin.weight": eye} for t in pool.tasks}, alpha=1.5)
    with pytest.raises(ValueError, match="others"):
        merge(pool, "regmean", grams={t: {"lin.weight": eye} for t in pool.tasks}, others="ties")


# ------------------------------------------------------------------------------------ Gram collection
def _all_pre_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) for m in model.modules())


def test_grams_on_a_tiny_timm_vit_match_hand_computation(tiny_timm):
    model = tiny_timm.model
    linears = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert len(linears) == 4 * 4  # qkv, proj, fc1, fc2 per block
    seen = []
    handle = model.blocks[1].mlp.fc2.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    batches = [torch.rand(3, 3, 32, 32), torch.rand(2, 3, 32, 32)]
    sums, counts = collect_grams(tiny_timm, batches)
    handle.remove()
    assert set(sums) == set(linears)
    for key, module in linears.items():
        assert (
            sums[key].shape == (module.in_features, module.in_features) and sums[key].dtype == torch.float64
        )
        assert counts[key] == 5 * 17  # every token of every image: 16 patches + CLS
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).double()
    torch.testing.assert_close(
        sums["blocks.1.mlp.fc2.weight"] / counts["blocks.1.mlp.fc2.weight"], x.T @ x / 85
    )
    assert _all_pre_hooks(model) == 0


def test_grams_on_a_tiny_open_clip_vit_include_in_proj_and_out_proj(tiny_clip):
    model = tiny_clip.model
    attn = model.transformer.resblocks[0].attn
    assert isinstance(attn, nn.MultiheadAttention) and isinstance(attn.out_proj, nn.Linear)
    recorder = GramRecorder(model)
    expected_keys = []
    for i in range(2):
        prefix = f"transformer.resblocks.{i}."
        expected_keys += [prefix + k for k in ("attn.in_proj_weight", "attn.out_proj.weight")]
        expected_keys += [prefix + k for k in ("mlp.c_fc.weight", "mlp.c_proj.weight")]
    assert recorder.keys == sorted(expected_keys)
    seen = {}
    ln = model.transformer.resblocks[0].ln_1
    h1 = ln.register_forward_hook(lambda m, a, out: seen.__setitem__("ln", out.detach()))
    h2 = attn.register_forward_pre_hook(
        lambda m, a, kw: seen.__setitem__("ctx", attention_context(m, *a, **kw)), with_kwargs=True
    )
    h3 = attn.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out[0].detach()))
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad(), recorder:
        tiny_clip(x)
    for h in (h1, h2, h3):
        h.remove()
    grams = recorder.grams()
    assert sorted(grams) == sorted(expected_keys)
    assert grams["transformer.resblocks.0.mlp.c_proj.weight"].shape == (256, 256)
    assert recorder.counts["transformer.resblocks.1.attn.in_proj_weight"] == 3 * 17
    tokens = seen["ln"].reshape(-1, 64).double()
    torch.testing.assert_close(grams["transformer.resblocks.0.attn.in_proj_weight"], tokens.T @ tokens / 51)
    # the recorded out_proj input is what out_proj really multiplies inside the attention module
    ctx = seen["ctx"]
    torch.testing.assert_close(
        ctx @ attn.out_proj.weight.T + attn.out_proj.bias, seen["out"], atol=1e-5, rtol=0
    )
    flat = ctx.reshape(-1, 64).double()
    torch.testing.assert_close(grams["transformer.resblocks.0.attn.out_proj.weight"], flat.T @ flat / 51)
    assert _all_pre_hooks(model) == 0


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_context_with_masks(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    q = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    mask = torch.rand(5, 5, generator=torch.Generator().manual_seed(1)) > 0.6
    mask.fill_diagonal_(False)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 4] = True
    out = mha(q, q, q, attn_mask=mask, key_padding_mask=padding, need_weights=False)[0]
    ctx = attention_context(mha, q, q, q, attn_mask=mask, key_padding_mask=padding, need_weights=False)
    rebuilt = ctx @ mha.out_proj.weight.T + mha.out_proj.bias
    torch.testing.assert_close(rebuilt if batch_first else rebuilt.transpose(0, 1), out, atol=1e-5, rtol=0)


def test_hooks_are_removed_even_when_the_forward_fails(tiny_timm):
    with pytest.raises(RuntimeError, match="must match the size"), GramRecorder(tiny_timm.model):
        assert _all_pre_hooks(tiny_timm.model) == 16
        tiny_timm(torch.rand(1, 4, 32, 32))  # four channels: normalisation fails inside the forward
    assert _all_pre_hooks(tiny_timm.model) == 0


def test_gram_matrices_through_a_probe_are_cached_and_normalised(tmp_path):
    merge_data, pool = make_probe(FeatureCache(tmp_path))
    grams = gram_matrices(merge_data, "depth", num_batches=2)
    misses = merge_data.cache.misses
    again = gram_matrices(merge_data, "depth", num_batches=2)
    assert merge_data.cache.misses == misses and all(torch.equal(again[k], grams[k]) for k in grams)
    reloaded, _ = make_probe(FeatureCache(tmp_path))
    disk = gram_matrices(reloaded, "depth", num_batches=2)
    assert reloaded.cache.misses == 0 and all(torch.equal(disk[k], grams[k]) for k in grams)
    assert all(g.dtype == torch.float64 for g in grams.values())
    import itertools

    batches = [merge_data.read("depth", i) for i in itertools.islice(merge_data.batches("depth"), 2)]
    sums, counts = collect_grams(merge_data.expert_encoder("depth"), batches)
    assert sorted(grams) == sorted(sums) and counts["blocks.0.attn.qkv.weight"] == 2 * 2 * 17
    for key in sums:
        torch.testing.assert_close(grams[key], sums[key] / counts[key])
    # RegMean end to end: identical experts come back unchanged
    merge_data, pool = make_probe(same=True)
    merged = merge(pool, "regmean", merge_data=merge_data, num_batches=1)
    for key, value in pool.experts["normal"].items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-5)
