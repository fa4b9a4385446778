"""Offline task-affinity analysis: data-free cosines/sign conflicts, transfer, interference, agreement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from simo_merge.affinity import (
    agreement,
    block_parts,
    cluster_tasks,
    cosine_matrices,
    default_block_of,
    pairwise_interference,
    param_group,
    recombine_cosine,
    run_affinity,
    scaled_state,
    sign_conflict,
    transfer_curves,
    write_affinity_report,
)
from simo_merge.pool.expert_pool import ExpertPool
from tests.helpers import AFFINITY_FILES

SHAPES = {
    "cls_token": (1, 1, 4),
    "blocks.0.attn.qkv.weight": (6, 4),
    "blocks.0.mlp.fc1.weight": (8, 4),
    "blocks.0.norm1.weight": (4,),
    "blocks.1.attn.proj.weight": (4, 4),
    "blocks.1.mlp.fc2.bias": (4,),
    "norm.weight": (4,),
}


def pool_of(
    vectors: dict[str, dict[str, torch.Tensor]], base: dict[str, torch.Tensor] | None = None
) -> ExpertPool:
    """A pool whose task vectors are exactly ``vectors`` (θ0 = 0 unless ``base`` is given)."""
    first = next(iter(vectors.values()))
    base = base or {k: torch.zeros_like(v) for k, v in first.items()}
    base = {**base, "pos_ids": torch.arange(3)}
    experts = {
        t: {**{k: base[k] + v for k, v in vec.items()}, "pos_ids": torch.arange(3)}
        for t, vec in vectors.items()
    }
    return ExpertPool(base, experts)


def random_vectors(tasks: list[str], seed: int) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shared = {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
    out = {}
    for t in tasks:
        # per-key scales differ across tasks so the block norms (the weights of the relation) differ
        out[t] = {
            k: float(torch.rand((), generator=gen) * 3) * (0.5 * shared[k] + torch.randn(s, generator=gen))
            for k, s in SHAPES.items()
        }
    return out


def flat(vec: dict[str, torch.Tensor], keys=None) -> torch.Tensor:
    return torch.cat([vec[k].double().reshape(-1) for k in (keys or vec)])


def reference_cosine(vectors, keys=None) -> np.ndarray:
    names = list(vectors)
    x = torch.stack([flat(vectors[t], keys) for t in names])
    g = x @ x.T
    n = g.diag().sqrt()
    return (g / torch.outer(n, n)).numpy()


# ------------------------------------------------------------------------------------- key grouping
def test_param_group_and_block_on_timm_and_open_clip_names(tiny_timm, tiny_clip):
    cases = {
        "blocks.3.attn.qkv.weight": "attention",
        "blocks.3.attn.proj.bias": "attention",
        "blocks.3.mlp.fc1.weight": "mlp",
        "blocks.3.mlp.fc2.bias": "mlp",
        "blocks.3.norm1.weight": "other",
        "blocks.3.ls1.gamma": "other",
        "patch_embed.proj.weight": "other",
        "transformer.resblocks.3.attn.in_proj_weight": "attention",
        "transformer.resblocks.3.attn.out_proj.weight": "attention",
        "transformer.resblocks.3.mlp.c_fc.weight": "mlp",
        "transformer.resblocks.3.mlp.c_proj.bias": "mlp",
        "transformer.resblocks.3.ln_2.weight": "other",
        "proj": "other",
        "class_embedding": "other",
    }
    assert {k: param_group(k) for k in cases} == cases
    for encoder in (tiny_timm, tiny_clip):
        keys = list(encoder.model_state())
        assert [default_block_of(k) for k in keys] == [encoder.block_of_key(k) for k in keys]
    assert default_block_of("transformer.resblocks.11.mlp.c_fc.weight") == 11
    assert default_block_of("pos_embed") is None


# ------------------------------------------------------------------------------------------ cosine
def test_cosine_self_negation_orthogonal_and_zero_blocks():
    vecs = random_vectors(["a"], seed=1)
    a = vecs["a"]
    x = flat(a)
    y = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = y - (y @ x) / (x @ x) * x  # Gram-Schmidt: orthogonal to a over the whole vector
    sizes = [a[k].numel() for k in a]
    ortho = {k: c.reshape(a[k].shape).float() for k, c in zip(a, torch.split(y, sizes), strict=True)}
    only_block0 = {k: (v if k.startswith("blocks.0.") else torch.zeros_like(v)) for k, v in a.items()}
    pool = pool_of({"a": a, "neg": {k: -v for k, v in a.items()}, "ortho": ortho, "b0": only_block0})
    res = cosine_matrices(pool)
    cos = res["global"]["cosine"]
    assert cos[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert cos[0, 1] == pytest.approx(-1.0, abs=1e-12)
    assert abs(cos[0, 2]) < 1e-6
    np.testing.assert_allclose(cos, cos.T, atol=0)
    # "b0" is zero outside block 0: undefined (NaN) cosine there, and the relation still holds
    assert math.isnan(res["blocks"][1]["cosine"][0, 3]) and res["blocks"][1]["norm"][3] == 0
    np.testing.assert_allclose(recombine_cosine(block_parts(res)), cos, atol=1e-12)
    assert res["global"]["norm"][0] == pytest.approx(float(x.norm()), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_and_group_cosines_recombine_to_the_global_cosine(seed):
    vecs = random_vectors(["a", "b", "c", "d"], seed=seed)
    base = {k: torch.randn(s, generator=torch.Generator().manual_seed(seed + 10)) for k, s in SHAPES.items()}
    pool = pool_of(vecs, base)
    res = cosine_matrices(pool)
    # task vectors as the pool computes them (float32 subtraction), flattened the memory-hungry way
    tv = {t: {k: pool.task_vector(t)[k] for k in SHAPES} for t in pool.tasks}
    np.testing.assert_allclose(res["global"]["cosine"], reference_cosine(tv), atol=1e-6)
    block0 = [k for k in SHAPES if k.startswith("blocks.0.")]
    np.testing.assert_allclose(res["blocks"][0]["cosine"], reference_cosine(tv, block0), atol=1e-6)
    np.testing.assert_allclose(
        res["groups"]["mlp"]["cosine"],
        reference_cosine(tv, ["blocks.0.mlp.fc1.weight", "blocks.1.mlp.fc2.bias"]),
        atol=1e-6,
    )
    assert sorted(res["blocks"]) == [0, 1]
    assert res["non_block"]["keys"] == 2  # cls_token, norm.weight
    # cos_global(s,t) = Σ_b ‖τs_b‖‖τt_b‖ cos_b(s,t) / (‖τs‖‖τt‖), written out here for one pair
    s, t = 0, 2
    parts = block_parts(res)
    num = sum(p["norm"][s] * p["norm"][t] * p["cosine"][s, t] for p in parts)
    assert num / (res["global"]["norm"][s] * res["global"]["norm"][t]) == pytest.approx(
        res["global"]["cosine"][s, t], abs=1e-6
    )
    np.testing.assert_allclose(recombine_cosine(parts), res["global"]["cosine"], atol=1e-6)
    np.testing.assert_allclose(
        recombine_cosine(list(res["groups"].values())), res["global"]["cosine"], atol=1e-6
    )
    assert (
        sum(p["numel"] for p in parts) == res["global"]["numel"] == sum(math.prod(s) for s in SHAPES.values())
    )


def test_cosine_on_a_tiny_timm_pool(tiny_timm):
    base = tiny_timm.model_state()
    gen = torch.Generator().manual_seed(3)
    shared = {k: torch.randn(v.shape, generator=gen) for k, v in base.items()}
    experts = {}
    for t, mix in (("semseg", 0.8), ("depth", 0.5), ("normal", 0.0)):
        experts[t] = {
            k: v + 0.01 * (mix * shared[k] + (1 - mix) * torch.randn(v.shape, generator=gen))
            for k, v in base.items()
        }
    pool = ExpertPool(base, experts)
    res = cosine_matrices(pool, block_of=tiny_timm.block_of_key)
    assert sorted(res["blocks"]) == [0, 1, 2, 3]
    attn = 4 * (192 * 64 + 192 + 64 * 64 + 64)
    mlp = 4 * (256 * 64 + 256 + 64 * 256 + 64)
    total = sum(v.numel() for v in base.values())
    assert res["groups"]["attention"]["numel"] == attn
    assert res["groups"]["mlp"]["numel"] == mlp
    assert res["groups"]["other"]["numel"] == total - attn - mlp
    tv = {t: dict(pool.task_vector(t)) for t in pool.tasks}
    np.testing.assert_allclose(res["global"]["cosine"], reference_cosine(tv), atol=1e-6)
    np.testing.assert_allclose(recombine_cosine(block_parts(res)), res["global"]["cosine"], atol=1e-6)
    cos = res["global"]["cosine"]
    # mixes 0.8/0.5/0 of a shared direction: expected cosines 0.8·0.5/(|0.8,0.2|·|0.5,0.5|) etc.
    assert cos[0, 1] == pytest.approx(0.8 * 0.5 / (math.hypot(0.8, 0.2) * math.hypot(0.5, 0.5)), abs=0.02)
    assert abs(cos[0, 2]) < 0.02 and abs(cos[1, 2]) < 0.02


# ------------------------------------------------------------------------------------ sign conflict
def test_sign_conflict_matches_hand_counts():
    a = torch.tensor([5.0, -4, 3, 0.1, -0.2, -0.3, 0, 1, 2, -1])
    b = torch.tensor([-1.0, -6, 0.5, 0, 7, 0.1, 8, -0.2, 0.3, 1])
    split = lambda v: {"x": v[:6].reshape(2, 3).clone(), "y": v[6:].clone()}  # noqa: E731
    pool = pool_of({"a": split(a), "b": split(b), "c": split(-a)})
    res = sign_conflict(pool, k=30)  # n_keep = 3 of 10 per task
    # top3(a) = {0,1,2} (|5|,|4|,|3|), top3(b) = {6,4,1}; union {0,1,2,4,6}.
    # a vs b: idx0 5/−1 conflict, idx1 −4/−6 agree, idx2 3/0.5 agree, idx4 −0.2/7 conflict,
    #         idx6 0/8 (a zero: no conflict) → 2/5
    # a vs c=−a: union {0,1,2}, all opposite → 3/3
    # c vs b: idx1 4/−6, idx2 −3/0.5 conflict; idx0 −5/−1, idx4 0.2/7 agree; idx6 zero → 2/5
    assert res["thresholds"] == {"a": 3.0, "b": 6.0, "c": 3.0}
    np.testing.assert_array_equal(res["union"], [[3, 5, 3], [5, 3, 5], [3, 5, 3]])
    np.testing.assert_array_equal(res["conflicts"], [[0, 2, 3], [2, 0, 2], [3, 2, 0]])
    np.testing.assert_allclose(res["rate"], [[0, 40.0, 100.0], [40.0, 0, 40.0], [100.0, 40.0, 0]])  # in %
    with pytest.raises(ValueError, match="k must be in"):
        sign_conflict(pool, k=0)


def test_sign_conflict_streaming_matches_a_flat_reference():
    vecs = random_vectors(["a", "b", "c"], seed=7)
    pool = pool_of(vecs)
    res = sign_conflict(pool, k=25)
    x = {t: flat(v).float() for t, v in vecs.items()}
    n_keep = int(x["a"].numel() * 25 / 100)
    top = {t: v.abs() >= v.abs().sort(descending=True).values[n_keep - 1] for t, v in x.items()}
    for i, s in enumerate(vecs):
        for j, t in enumerate(vecs):
            u = top[s] | top[t]
            c = u & (x[s] != 0) & (x[t] != 0) & (torch.sign(x[s]) != torch.sign(x[t]))
            assert (res["union"][i, j], res["conflicts"][i, j]) == (int(u.sum()), int(c.sum()))
            assert res["rate"][i, j] == pytest.approx(100 * int(c.sum()) / int(u.sum()), abs=1e-10)


# ---------------------------------------------------------------------------------------- clusters
def test_cluster_tasks_threshold_and_largest_gap():
    names = ["a", "b", "c", "d"]
    sim = np.array([[1, 0.8, -0.1, -0.1], [0.8, 1, -0.1, -0.1], [-0.1, -0.1, 1, 0.7], [-0.1, -0.1, 0.7, 1]])
    res = cluster_tasks(sim, names)
    assert res["groups"]["threshold"] == [["a", "b"], ["c", "d"]]  # cross distance 1.1 > 1
    assert res["groups"]["largest_gap"] == [["a", "b"], ["c", "d"]]  # merges at 0.2, 0.3, 1.1
    assert res["cut"]["largest_gap"] == pytest.approx(0.7)
    sim2 = np.where(sim < 0, 0.2, sim)  # cross cosine 0.2 (distance 0.8): one group at the cosine-0 cut
    res2 = cluster_tasks(sim2, names)
    assert res2["groups"]["threshold"] == [["a", "b", "c", "d"]]
    assert res2["groups"]["largest_gap"] == [["a", "b"], ["c", "d"]]
    assert sorted(res2["order"]) == [0, 1, 2, 3] and len(res2["linkage"]) == 3
    two = cluster_tasks([[1, 0.5], [0.5, 1]], ["x", "y"])
    assert two["groups"]["threshold"] == [["x", "y"]] and two["groups"]["largest_gap"] is None
    with pytest.raises(ValueError, match="'a', 'b'"):
        cluster_tasks([[1, np.nan], [np.nan, 1]], ["a", "b"])


# ------------------------------------------------------------------ transfer and interference (fake eval)
def fake_eval(state, tasks=None):
    """Analytic metrics of w = state['w'] (θ0 = 0; experts a = (1,0), b = (0,1), c = (−1,0))."""
    w0, w1 = state["w"].double().tolist()
    out = {
        "a": {"miou": 0.5 + w0 - 0.5 * w0**2},  # expert: 1.0, θ0: 0.5
        "b": {"abs_err": 1 + (w1 - 1) ** 2 + 0.5 * (w0 - 0.5) ** 2 - 0.125},  # expert: 1, θ0: 2
        "c": {"l1": 1 + (w0 + 1) ** 2},  # expert: 1, θ0: 2
    }
    fake_eval.calls.append(tasks)
    return out if tasks is None else {t: out[t] for t in tasks}


def fake_pool() -> ExpertPool:
    base = {"w": torch.zeros(2), "half": torch.ones(3, dtype=torch.float16), "ids": torch.arange(4)}
    experts = {}
    for t, w in (("a", [1.0, 0.0]), ("b", [0.0, 1.0]), ("c", [-1.0, 0.0])):
        experts[t] = {
            "w": torch.tensor(w),
            "half": torch.full((3,), 2.0, dtype=torch.float16),
            "ids": torch.arange(4),
        }
    return ExpertPool(base, experts)


def baselines_of(pool, evaluate):
    return {t: evaluate(pool.experts[t])[t] for t in pool.tasks}


def test_scaled_state_keeps_dtypes_and_buffers():
    pool = fake_pool()
    state = scaled_state(pool, "b", 0.5)
    assert state["half"].dtype == torch.float16 and torch.equal(
        state["half"], torch.full((3,), 1.5, dtype=torch.float16)
    )
    assert torch.equal(state["ids"], torch.arange(4)) and torch.equal(state["w"], torch.tensor([0.0, 0.5]))


def test_transfer_curves_on_an_analytic_evaluator():
    pool = fake_pool()
    fake_eval.calls = []
    base = baselines_of(pool, fake_eval)
    fake_eval.calls = []
    grid = np.linspace(0, 1.5, 16)
    res = transfer_curves(
        pool,
        lambda s: fake_eval(s),
        base,
        lambdas=grid,
        sources=["a", "b"],
        targets=["a", "b"],
        progress=False,
    )
    assert len(fake_eval.calls) == 1 + 2 * 15  # θ0 once, reused for λ = 0
    pa = lambda w0: 100 * (0.5 + w0 - 0.5 * w0**2)  # noqa: E731
    pb = lambda w0, w1: 100 / (1 + (w1 - 1) ** 2 + 0.5 * (w0 - 0.5) ** 2 - 0.125)  # noqa: E731
    np.testing.assert_allclose(res["norm"][0, :, 0], [pa(x) for x in grid], rtol=1e-5)
    np.testing.assert_allclose(res["norm"][0, :, 1], [pb(x, 0) for x in grid], rtol=1e-5)
    np.testing.assert_allclose(res["norm"][1, :, 0], 50.0, rtol=1e-6)
    np.testing.assert_allclose(res["norm"][1, :, 1], [pb(0, x) for x in grid], rtol=1e-5)
    assert res["reference"]["norm"] == pytest.approx({"a": 50.0, "b": 50.0})
    # gain: a→a 100−50; a→b best at λ=0.5: 100/1.875 − 50; b→a nothing; b→b 100 − 50
    np.testing.assert_allclose(res["gain"], [[50, 100 / 1.875 - 50], [0, 50]], atol=1e-4)
    np.testing.assert_allclose(res["best_lambda"], [[1.0, 0.5], [0.0, 1.0]], atol=1e-9)
    assert res["slope_lambda"] == pytest.approx(0.1)
    np.testing.assert_allclose(
        res["slope0"], [[95, (100 / 1.955 - 50) / 0.1], [0, (100 / 1.81 - 50) / 0.1]], rtol=1e-4
    )
    np.testing.assert_allclose(res["spread"][0, 1], 100 / 1.875 - 100 / 2.375, rtol=1e-5)
    with pytest.raises(KeyError, match="'c'"):
        transfer_curves(pool, fake_eval, {"a": base["a"], "b": base["b"]}, progress=False)


def test_pairwise_interference_selects_lambda_and_measures_loss():
    pool = fake_pool()
    base = baselines_of(pool, fake_eval)
    fake_eval.calls = []
    res = pairwise_interference(pool, fake_eval, base, lambdas=[0.5, 1.0], progress=False)
    # a+b: w=(λ,λ), λ=1 gives P_a = P_b = 100 → no loss. a+c: w = 0 for every λ → both at θ0 (50%), first λ.
    # b+c: w=(−λ,λ); λ=1: P_b = 100/2 = 50, P_c = 100 (mean 75) beats λ=0.5 (61.5, 80) → b loses 50, c none.
    np.testing.assert_allclose(res["matrix"], [[0, 0, 50], [0, 0, 0], [50, 50, 0]], atol=1e-4)
    np.testing.assert_allclose(res["selected_lambda"][[0, 0, 1], [1, 2, 2]], [1.0, 0.5, 1.0])
    assert res["selection"].startswith("test")
    assert fake_eval.calls == [["a", "b"]] * 2 + [["a", "c"]] * 2 + [["b", "c"]] * 2  # test results reused

    def val_eval(state, tasks=None):  # a's validation metric peaks at w0 = 0.5, so a+b selects λ = 0.5
        out = fake_eval(state, tasks)
        w0 = float(state["w"][0])
        if "a" in out:
            out["a"] = {"miou": 0.5 + w0 - w0**2}
        return out

    val_base = baselines_of(pool, val_eval)
    assert val_base["a"]["miou"] == pytest.approx(0.5)
    fake_eval.calls = []
    res = pairwise_interference(
        pool,
        fake_eval,
        base,
        lambdas=[0.5, 1.0],
        evaluate_val=val_eval,
        val_baselines=val_base,
        progress=False,
    )
    assert res["selected_lambda"][0, 1] == 0.5
    # test at λ=0.5: P_a = 87.5, P_b = 100/1.125 → I[b,a] = 12.5, I[a,b] = 100 − 88.89
    assert res["matrix"][1, 0] == pytest.approx(12.5, abs=1e-4)
    assert res["matrix"][0, 1] == pytest.approx(100 - 100 / 1.125, abs=1e-4)
    assert len(fake_eval.calls) == 6 + 3  # 6 val calls (through val_eval) + 3 test calls
    with pytest.raises(KeyError, match=r"no metrics for task\(s\) \['b'\]"):
        pairwise_interference(pool, lambda state: {"a": {"miou": 1.0}}, base, lambdas=[1.0], progress=False)


# ---------------------------------------------------------------------------------------- agreement
def test_agreement_sign_conventions_and_small_samples():
    names = ["a", "b", "c", "d"]
    cos = np.array([[1, 0.9, 0.1, -0.2], [0.9, 1, 0.4, 0.3], [0.1, 0.4, 1, 0.6], [-0.2, 0.3, 0.6, 1]])
    skew = np.triu(np.arange(16.0).reshape(4, 4), 1)
    interference = 10 * (1 - cos) + skew - skew.T  # antisymmetric part vanishes when symmetrised
    res = agreement(cos, interference, "low", names)
    assert res["spearman_rho"] == pytest.approx(1.0) and res["n_pairs"] == 6
    assert res["p_value"] == pytest.approx(2 / 720) and res["p_method"] == "exact permutation"
    assert agreement(cos, interference, "high", names)["spearman_rho"] == pytest.approx(-1.0)
    conflict = 1 - cos  # more conflict, more interference
    assert agreement(conflict, interference, "high", names)["spearman_rho"] == pytest.approx(1.0)
    tiny = agreement(cos[:2, :2], interference[:2, :2], "low", names[:2])
    assert math.isnan(tiny["spearman_rho"]) and tiny["n_pairs"] == 1 and "at least 3" in tiny["note"]
    flat_i = np.ones((4, 4))
    assert "constant" in agreement(cos, flat_i)["note"]
    with_nan = interference.copy()
    with_nan[0, 1] = np.nan
    res_nan = agreement(cos, with_nan, "low", names)
    assert res_nan["n_pairs"] == 5 and "dropped" in res_nan["note"]
    with pytest.raises(ValueError, match="orientation"):
        agreement(cos, interference, "up")


# ------------------------------------------------------------------------------------------- report
def test_run_affinity_and_report_writes_every_file(tmp_path):
    pool = fake_pool()
    base = baselines_of(pool, fake_eval)
    fake_eval.calls = []
    results = run_affinity(
        pool,
        evaluate_state=fake_eval,
        baselines=base,
        transfer_lambdas=[0.0, 0.5, 1.0],
        select_lambdas=[0.5, 1.0],
        progress=False,
    )
    assert set(results["agreement"]) == {"cosine", "sign_conflict", "transfer_gain"}
    assert results["agreement"]["cosine"]["n_pairs"] == 3
    written = write_affinity_report(tmp_path / "aff", results)
    assert {p.name for p in written.values()} == AFFINITY_FILES
    assert {p.name for p in (tmp_path / "aff").iterdir()} == AFFINITY_FILES  # no temporary files left behind
    for name in AFFINITY_FILES - {"affinity.json", "affinity.md"}:
        assert (tmp_path / "aff" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def no_nan(token):
        raise AssertionError(f"non-strict JSON constant {token}")

    data = json.loads((tmp_path / "aff" / "affinity.json").read_text(), parse_constant=no_nan)
    assert data["tasks"] == ["a", "b", "c"]
    assert data["interference"]["matrix"][2][1] == pytest.approx(50.0, abs=1e-4)
    assert data["units"]["sign_conflict.rate"] == "%"
    assert all(0 <= v <= 100 for row in data["sign_conflict"]["rate"] for v in row)
    # τa = (1, 0 | 1, 1, 1), τc = (−1, 0 | 1, 1, 1) over ("w", "half"): cos = (−1 + 3) / 4
    assert data["cosine"]["global"]["cosine"][0][2] == pytest.approx(0.5)
    md = (tmp_path / "aff" / "affinity.md").read_text()
    for needle in (
        "## Task-vector cosine",
        "## Sign conflict",
        "## Measured pairwise interference",
        "Spearman",
        "| a |",
        "transfer_curves.png",
    ):
        assert needle in md
    data_free = run_affinity(pool, progress=False)
    assert "interference" not in data_free
    names = {p.name for p in write_affinity_report(tmp_path / "free", data_free).values()}
    assert names == AFFINITY_FILES - {"interference.png", "transfer_curves.png"}


def test_default_sweep_is_the_simo_grid():
    """SIMO (d23845jg/simomm evaluate_task_vector): np.linspace(0.0, 1.0, num_scaling_coef_samples=5)."""
    import inspect

    from simo_merge.affinity import DEFAULT_LAMBDAS, DEFAULT_SELECT_LAMBDAS, pairwise_interference
    from simo_merge.jobs.affinity import AffinityJobConfig

    simo = [float(x) for x in np.linspace(0.0, 1.0, 5)]
    assert list(DEFAULT_LAMBDAS) == simo and list(DEFAULT_SELECT_LAMBDAS) == simo
    assert list(inspect.signature(transfer_curves).parameters["lambdas"].default) == simo
    assert list(inspect.signature(pairwise_interference).parameters["lambdas"].default) == simo
    cfg = AffinityJobConfig()
    assert cfg.transfer_lambdas == simo and cfg.select_lambdas == simo
