"""LiNeS, Consensus/TALL masks, Iso-C, Iso-CTS and TSV-M against independent re-implementations.

The references below are written from the papers' formulas in float64 and take different routes than
the package: flat concatenated vectors and the authors' substring rule for LiNeS, eigen-decompositions
(M·(MᵀM)^-1/2 for a polar factor, eigenvalues of MᵀM for singular values) instead of SVDs for
Iso-C/Iso-CTS/TSV-M. They agree with the package to 1e-5 on hand-sized state dicts.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS, TV_TRANSFORMS, merge
from simo_merge.merging.iso_cts import common_space_size
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.registry import Registry

NEW_METHODS = ["lines", "consensus", "iso_c", "iso_cts", "tsv_m"]

SHAPES = {
    "embed.weight": (6, 5),  # 2-D outside the blocks
    "cls": (1, 1, 5),  # 3-D
    "blocks.0.fc.weight": (12, 10),
    "blocks.0.fc.bias": (12,),
    "blocks.1.fc.weight": (6, 9),  # wide
    "blocks.1.norm.weight": (9,),
    "blocks.2.fc.weight": (9, 8),
    "norm.weight": (5,),
    "scale": (),
}


def make_pool(num_tasks: int = 3, seed: int = 0, shapes: dict | None = None, step: float = 0.1) -> ExpertPool:
    """θ0 ~ N(0, 1); experts θ0 + N(0, step²) (fine-tuning moves weights little; float32 SVDs are then
    accurate to ~1e-6 absolute, against the float64 references)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = shapes or SHAPES
    base = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    base["position_ids"] = torch.arange(4)
    experts = {}
    for t in range(num_tasks):
        state = {
            k: v + step * torch.randn(v.shape, generator=gen)
            for k, v in base.items()
            if v.is_floating_point()
        }
        state["position_ids"] = torch.arange(4)
        experts[f"task{t}"] = state
    return ExpertPool(base, experts)


def tvs64(pool: ExpertPool) -> dict[str, dict[str, Tensor]]:
    float_keys = [k for k, v in pool.base.items() if v.is_floating_point()]
    return {
        t: {k: pool.experts[t][k].double() - pool.base[k].double() for k in float_keys} for t in pool.tasks
    }


def assert_close(merged: dict[str, Tensor], expected: dict[str, Tensor], tol: float = 1e-5) -> None:
    for key, value in expected.items():
        err = (merged[key].double() - value.double()).abs().max().item()
        assert err <= tol, f"{key}: max error {err:.2e}"


def inv_sqrt(gram: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(gram)
    return vecs @ torch.diag(vals.rsqrt()) @ vecs.T


def polar_columns(x: Tensor) -> Tensor:
    """Polar factor of a full-column-rank matrix: X (XᵀX)^-1/2."""
    return x @ inv_sqrt(x.T @ x)


def top_eig(sym: Tensor, k: int) -> tuple[Tensor, Tensor]:
    vals, vecs = torch.linalg.eigh(sym)
    order = vals.argsort(descending=True)[:k]
    return vals[order].clamp(min=0), vecs[:, order]


def singular_values(m: Tensor) -> Tensor:
    small = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return torch.linalg.eigvalsh(small).clamp(min=0).sqrt().flip(0)


# ------------------------------------------------------------------------------------------ registry
def test_registry_facts_are_optional_and_copied():
    reg: Registry = Registry("thing")
    reg.register("plain")(len)
    reg.register("rich", facts={"label": "Rich", "scale": "lam"})(max)
    assert reg.facts("plain") == {}
    facts = reg.facts("rich")
    facts["label"] = "changed"
    assert reg.facts("rich")["label"] == "Rich"
    with pytest.raises(KeyError, match="unknown thing 'nope'"):
        reg.facts("nope")


@pytest.mark.parametrize("name", NEW_METHODS + ["tall_masks"])
def test_new_methods_register_consistent_facts(name):
    facts = MERGE_METHODS.facts(name)
    assert facts["label"] and facts["needs_data"] is False and "@" in facts["source"]
    params = inspect.signature(MERGE_METHODS.get(name)).parameters
    if facts["scale"] is not None:
        assert params[facts["scale"]].kind == inspect.Parameter.KEYWORD_ONLY
        assert all(v > 0 for v in facts["grid"])


# ------------------------------------------------------------------------------------------ LiNeS
def reference_lines(pool: ExpertPool, mtv: dict[str, Tensor], beta: float, num_blocks: int, alpha=None):
    """The authors' flat-vector route: α from L1 norms of flat vectors, block by ``.{i}.`` substring."""
    tvs = tvs64(pool)
    keys = list(mtv)
    flat_sum = torch.cat([sum(tv[k] for tv in tvs.values()).reshape(-1) for k in keys])
    flat_mtv = torch.cat([mtv[k].double().reshape(-1) for k in keys])
    if alpha is None:
        alpha = flat_sum.abs().sum() / flat_mtv.abs().sum() / len(tvs)
    out = {}
    for k in keys:
        scale = alpha
        for i in range(num_blocks):
            if f".{i}." in k:
                scale = alpha + beta * i / (num_blocks - 1)
                break
        out[k] = pool.base[k].double() + scale * mtv[k].double()
    return out


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_lines_on_task_arithmetic_matches_reference(beta):
    pool = make_pool(3)
    tvs = tvs64(pool)
    mtv = {k: sum(tv[k] for tv in tvs.values()) for k in tvs["task0"]}
    merged = merge(pool, "lines", beta=beta)
    assert_close(merged, reference_lines(pool, mtv, beta, num_blocks=3))
    # outside the blocks TA + LiNeS is the task-vector mean (α = 1/T for task arithmetic)
    mean = pool.base["norm.weight"] + sum(tvs[t]["norm.weight"] for t in tvs).float() / 3
    torch.testing.assert_close(merged["norm.weight"], mean)
    assert torch.equal(merged["position_ids"], pool.base["position_ids"])


def test_lines_wraps_ties_with_norm_matched_alpha():
    pool = make_pool(4, seed=1)
    ties_update = {
        k: v.double() - pool.base[k].double()
        for k, v in merge(pool, "ties", k=30, lam=1.0).items()
        if pool.base[k].is_floating_point()
    }
    merged = merge(pool, "lines", inner="ties", inner_params={"k": 30}, beta=0.6)
    assert_close(merged, reference_lines(pool, ties_update, 0.6, num_blocks=3))


def test_lines_alpha_override_and_explicit_depth():
    pool = make_pool(1)
    tv = tvs64(pool)["task0"]
    # single-task editing: α = γ, β = 1 − γ; a declared depth of 5 changes the slope
    merged = merge(pool, "lines", alpha=0.25, beta=0.75, num_blocks=5)
    assert_close(merged, reference_lines(pool, tv, 0.75, num_blocks=5, alpha=0.25))
    # last block of a 3-block model gets α + β: with α + β = 1 it is the expert there
    merged = merge(pool, "lines", alpha=0.25, beta=0.75)
    torch.testing.assert_close(merged["blocks.2.fc.weight"], pool.experts["task0"]["blocks.2.fc.weight"])
    torch.testing.assert_close(
        merged["blocks.1.norm.weight"],
        pool.base["blocks.1.norm.weight"] + 0.625 * tv["blocks.1.norm.weight"].float(),
    )
    with pytest.raises(ValueError, match="num_blocks=2 but key block index 2"):
        merge(pool, "lines", num_blocks=2)


def test_lines_composes_with_dare_and_rejects_bad_inner_methods():
    pool = make_pool(2)
    dared = merge(pool, "lines", beta=0.5, transforms={"dare": {"p": 0.5, "seed": 3}})
    tvs = TV_TRANSFORMS.get("dare")(dict(pool.task_vectors()), p=0.5, seed=3)
    mtv = {k: sum(tv[k].double() for tv in tvs.values()) for k in tvs["task0"]}
    flat_sum = sum(float(mtv[k].abs().sum()) for k in mtv)
    assert flat_sum > 0
    expected = reference_lines(pool, mtv, 0.5, num_blocks=3, alpha=0.5)  # α = 1/T for TA, any vectors
    assert_close(dared, expected)
    with pytest.raises(ValueError, match="nest LiNeS"):
        merge(pool, "lines", inner="lines")
    with pytest.raises(ValueError, match="inner merge method 'ties'.*unknown hyper-parameter"):
        merge(pool, "lines", inner="ties", inner_params={"top": 3})
    with pytest.raises(ValueError, match="needs data"):
        merge(pool, "lines", inner="adamerging")
    same = ExpertPool(pool.base, {"a": dict(pool.base), "b": dict(pool.base)})
    with pytest.raises(ValueError, match="merged update is zero"):
        merge(same, "lines")


# ------------------------------------------------------------------------------------ Consensus/TALL
def test_consensus_by_hand():
    base = {"w": torch.zeros(4)}
    # τ per task at 4 entries; mtv = [3, 0, 0.2, 3]
    experts = {
        "a": {"w": torch.tensor([1.0, 1.0, 0.1, 3.0])},
        "b": {"w": torch.tensor([1.0, -1.0, 0.1, 0.0])},
        "c": {"w": torch.tensor([1.0, 0.0, 0.0, 0.0])},
    }
    pool = ExpertPool(base, experts)
    # TALL masks at λ = 0.5: |τ| > 0.5·|mtv − τ|
    # entry 0: 1 > 1 false for all -> count 0; entry 1: a: 1 > 0.5 yes, b: 1 > 0.5 yes, c: 0 > 0 no -> 2
    # entry 2: a,b: 0.1 > 0.05 yes, c: 0 > 0.1 no -> 2; entry 3: a: 3 > 0 yes, b,c: 0 > 1.5 no -> 1
    merged = merge(pool, "consensus", k=2, tall_lambda=0.5, lam=1.0)
    torch.testing.assert_close(merged["w"], torch.tensor([0.0, 0.0, 0.2, 0.0]))
    merged = merge(pool, "consensus", k=1, tall_lambda=0.5, lam=0.5)
    torch.testing.assert_close(merged["w"], torch.tensor([0.0, 0.0, 0.1, 1.5]))
    rebuilt = merge(pool, "tall_masks", task="a", tall_lambda=0.5)
    torch.testing.assert_close(rebuilt["w"], torch.tensor([0.0, 0.0, 0.2, 3.0]))


def reference_consensus(pool: ExpertPool, k: int, lambdas: dict[str, float], lam: float):
    tvs = tvs64(pool)
    keys = list(tvs["task0"])
    flat = torch.stack([torch.cat([tvs[t][key].reshape(-1) for key in keys]) for t in pool.tasks])
    mtv = flat.sum(0)
    lam_col = torch.tensor([lambdas[t] for t in pool.tasks], dtype=torch.float64)[:, None]
    masks = flat.abs() > (mtv[None] - flat).abs() * lam_col
    kept = mtv * (masks.sum(0) >= k)
    out, offset = {}, 0
    for key in keys:
        n = pool.base[key].numel()
        out[key] = pool.base[key].double() + lam * kept[offset : offset + n].reshape(pool.base[key].shape)
        offset += n
    return out, masks, mtv


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_consensus_matches_reference(k):
    pool = make_pool(3, seed=k)
    lambdas = {"task0": 0.2, "task1": 0.4, "task2": 0.6}
    expected, _, _ = reference_consensus(pool, k, lambdas, lam=0.7)
    merged = merge(pool, "consensus", k=k, tall_lambda=lambdas, lam=0.7)
    assert_close(merged, expected)
    if k == 0:
        assert_close(merged, merge(pool, "task_arithmetic", lam=0.7))
    if k == 4:  # more tasks than exist: nothing survives, θ0
        assert_close(merged, {key: v for key, v in pool.base.items() if v.is_floating_point()})


def test_tall_masks_reconstruction_and_errors():
    pool = make_pool(3, seed=5)
    _, masks, mtv = reference_consensus(pool, 0, dict.fromkeys(pool.tasks, 0.4), 1.0)
    keys = list(tvs64(pool)["task0"])
    for i, task in enumerate(pool.tasks):
        rebuilt = merge(pool, "tall_masks", task=task, tall_lambda=0.4)
        flat = torch.cat(
            [rebuilt[key].double().reshape(-1) - pool.base[key].double().reshape(-1) for key in keys]
        )
        assert (flat - mtv * masks[i]).abs().max() <= 1e-5
    one = pool.subset(["task1"])  # one task: mtv = τ, mask = (τ != 0): the expert itself
    assert_close(merge(one, "tall_masks", task="task1"), pool.experts["task1"])
    with pytest.raises(KeyError, match="task 'nope' is not in the pool"):
        merge(pool, "tall_masks", task="nope")
    with pytest.raises(ValueError, match=r"no value for task\(s\) \['task2'\]"):
        merge(pool, "consensus", tall_lambda={"task0": 0.3, "task1": 0.3})
    with pytest.raises(ValueError, match="k .* must be >= 0"):
        merge(pool, "consensus", k=-1)


# ------------------------------------------------------------------------------------------ Iso-C
def ref_iso_c_matrix(mats: list[Tensor]) -> Tensor:
    m = sum(mats)
    level = singular_values(m).mean()
    if m.shape[0] >= m.shape[1]:
        return level * m @ inv_sqrt(m.T @ m)
    return level * inv_sqrt(m @ m.T) @ m


def reference_layerwise(pool: ExpertPool, lam: float, matrix_fn) -> dict[str, Tensor]:
    tvs = tvs64(pool)
    out = {}
    for key in tvs[pool.tasks[0]]:
        mats = [tvs[t][key] for t in pool.tasks]
        delta = matrix_fn(mats) if mats[0].dim() == 2 else sum(mats) / len(mats)
        out[key] = pool.base[key].double() + lam * delta
    return out


@pytest.mark.parametrize("num_tasks", [1, 3])
def test_iso_c_matches_reference(num_tasks):
    pool = make_pool(num_tasks, seed=2)
    merged = merge(pool, "iso_c", lam=1.3)
    assert_close(merged, reference_layerwise(pool, 1.3, ref_iso_c_matrix))


def test_iso_c_rank_deficient_and_zero_layers():
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(8, 6, generator=gen), "z": torch.randn(4, 4, generator=gen)}
    u, v = torch.randn(8, 1, generator=gen).double(), torch.randn(1, 6, generator=gen).double()
    experts = {
        t: {"w": base["w"] + (c * u @ v).float(), "z": base["z"].clone()} for t, c in (("a", 1.0), ("b", 2.0))
    }
    merged = merge(ExpertPool(base, experts), "iso_c", lam=1.0)
    delta = (merged["w"] - base["w"]).double()
    total = 3.0 * u @ v  # rank 1: S = (σ, 0, …, 0), so mean(S) = σ/6 for every direction
    sigma = singular_values(total)[0]
    torch.testing.assert_close(
        singular_values(delta), torch.full((6,), float(sigma) / 6, dtype=torch.float64), rtol=0, atol=1e-5
    )
    # on the row space of the sum Δ is mean(S)·u1 v1ᵀ, whatever basis the SVD picks for the null space
    v1 = v / v.norm()
    u1 = u / u.norm()
    torch.testing.assert_close(delta @ v1.T @ v1, sigma / 6 * u1 @ v1, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged["z"], base["z"])  # untouched layer: zero update


# ----------------------------------------------------------------------------------------- Iso-CTS
def ref_iso_cts_matrix(mats: list[Tensor], fraction: float) -> Tensor:
    """Eigen route: common space from eigenvectors of M Mᵀ, task spaces of the residuals likewise."""
    rows, cols = mats[0].shape
    r, n_tasks = min(rows, cols), len(mats)
    k_c = int(r * fraction)
    per_task = round((r - k_c) / n_tasks)
    k_c = r - per_task * n_tasks
    m = sum(mats)
    s_c, u_c = top_eig(m @ m.T, k_c)
    s_c = s_c.sqrt()
    v_c = (m.T @ u_c) / s_c
    us, vs, ss = [u_c], [v_c], [s_c]
    for w in mats:
        res = w - u_c @ (u_c.T @ w)
        s_t, u_t = top_eig(res @ res.T, per_task)
        s_t = s_t.sqrt()
        us.append(u_t)
        vs.append((res.T @ u_t) / s_t)
        ss.append(s_t)
    big_u, big_v = torch.cat(us, 1), torch.cat(vs, 1)
    level = torch.cat(ss).mean()
    return level * polar_columns(big_u) @ polar_columns(big_v).T


def test_common_space_size_follows_the_authors_rounding():
    assert common_space_size((12, 10), 3, 0.8) == (7, 1)  # ⌊8⌋ → 2 left → round(2/3)·3 = 3
    assert common_space_size((6, 9), 3, 0.8) == (3, 1)
    assert common_space_size((7, 5), 3, 0.8) == (5, 0)  # round(1/3) = 0: all common
    assert common_space_size((768, 768), 8, 0.8) == (
        616,
        19,
    )  # ViT-B: ⌊614.4⌋ → 154 left → round(19.25)·8 = 152
    with pytest.raises(ValueError, match=r"key 'blocks.0.w' of shape \(12, 10\).*rank bound 10"):
        common_space_size((12, 10), 12, 0.0, "blocks.0.w")


@pytest.mark.parametrize("fraction", [0.5, 0.8])
def test_iso_cts_matches_reference(fraction):
    pool = make_pool(3, seed=3)
    merged = merge(pool, "iso_cts", lam=0.9, common_space_fraction=fraction)
    expected = reference_layerwise(pool, 0.9, lambda mats: ref_iso_cts_matrix(mats, fraction))
    assert_close(merged, expected)
    iso_c = merge(pool, "iso_c", lam=0.9)
    assert (merged["blocks.0.fc.weight"] - iso_c["blocks.0.fc.weight"]).abs().max() > 1e-2  # not Iso-C


def test_iso_cts_one_task_is_iso_c_and_rejects_bad_fraction():
    pool = make_pool(1, seed=4)
    assert_close(merge(pool, "iso_cts"), merge(pool, "iso_c"))
    with pytest.raises(ValueError, match="common_space_fraction must be in"):
        merge(pool, "iso_cts", common_space_fraction=1.5)


# ------------------------------------------------------------------------------------------ TSV-M
def ref_tsv_matrix(mats: list[Tensor]) -> Tensor:
    """Concatenate each task's top-k triplets (no padding) and orthogonalise with (XᵀX)^-1/2."""
    rows, cols = mats[0].shape
    k = int(min(rows, cols) * (1 / len(mats)))
    if k == 0 or all(float(w.abs().max()) == 0.0 for w in mats):
        return torch.zeros(rows, cols, dtype=torch.float64)
    us, ss, vs = [], [], []
    for w in mats:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        us.append(u[:, :k])
        ss.append(s[:k])
        vs.append(vh[:k].T)
    big_u, big_v = torch.cat(us, 1), torch.cat(vs, 1)
    return polar_columns(big_u) @ torch.diag(torch.cat(ss)) @ polar_columns(big_v).T


@pytest.mark.parametrize("num_tasks", [2, 3, 4])
def test_tsv_m_matches_reference(num_tasks):
    pool = make_pool(num_tasks, seed=10 + num_tasks)
    merged = merge(pool, "tsv_m", lam=1.7)
    assert_close(merged, reference_layerwise(pool, 1.7, ref_tsv_matrix))
    mean = (
        sum(pool.experts[t]["blocks.0.fc.bias"] - pool.base["blocks.0.fc.bias"] for t in pool.tasks)
        / num_tasks
    )
    torch.testing.assert_close(merged["blocks.0.fc.bias"], pool.base["blocks.0.fc.bias"] + 1.7 * mean)


def test_tsv_m_edge_cases():
    pool = make_pool(1, seed=6)
    assert_close(merge(pool, "tsv_m"), pool.experts["task0"])  # one task keeps all its triplets
    gen = torch.Generator().manual_seed(1)
    base = {"w": torch.zeros(10, 8), "tiny": torch.zeros(2, 3), "zero": torch.zeros(5, 5)}
    experts = {}
    for t in range(3):
        low = torch.randn(10, 2, generator=gen) @ torch.randn(2, 8, generator=gen)  # rank 2 = k
        experts[f"t{t}"] = {"w": low, "tiny": torch.randn(2, 3, generator=gen), "zero": torch.zeros(5, 5)}
    pool = ExpertPool(base, experts)
    merged = merge(pool, "tsv_m")
    assert_close(merged, reference_layerwise(pool, 1.0, ref_tsv_matrix))
    assert torch.equal(merged["tiny"], torch.zeros(2, 3))  # 3 tasks > rank bound 2: k = 0, as the authors
    assert torch.equal(merged["zero"], torch.zeros(5, 5))


# ------------------------------------------------------------------------------------------ shared
@pytest.mark.parametrize("name", ["iso_c", "iso_cts", "tsv_m"])
def test_exclude_keys_fall_back_to_the_mean(name):
    pool = make_pool(3, seed=7)
    merged = merge(pool, name, exclude=["embed"], lam=1.0)
    mean = sum(pool.experts[t]["embed.weight"] for t in pool.tasks) / 3
    torch.testing.assert_close(merged["embed.weight"], mean)
    plain = merge(pool, name, lam=1.0)
    assert (plain["embed.weight"] - mean).abs().max() > 1e-3  # by default the 2-D embedding is decomposed


@pytest.mark.parametrize("name", NEW_METHODS)
def test_half_precision_in_and_out(name):
    pool = make_pool(2, seed=8)
    half = ExpertPool(
        {k: v.half() if v.is_floating_point() else v for k, v in pool.base.items()},
        {
            t: {k: v.half() if v.is_floating_point() else v for k, v in s.items()}
            for t, s in pool.experts.items()
        },
    )
    merged = merge(half, name)
    assert all(merged[k].dtype == v.dtype for k, v in half.base.items())
    assert all(torch.isfinite(merged[k].float()).all() for k in merged)


@pytest.mark.parametrize("name", NEW_METHODS)
def test_empty_task_set_is_a_clear_error(name):
    pool = make_pool(1)
    with pytest.raises(ValueError, match=f"{name}: needs at least one task vector"):
        MERGE_METHODS.get(name)({k: v for k, v in pool.base.items() if v.is_floating_point()}, {})
