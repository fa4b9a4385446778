"""Data-free merge methods against the papers' definitions, written independently here."""

from __future__ import annotations

import pytest
import torch

from simo_merge.merging import MERGE_METHODS, TV_TRANSFORMS, merge
from simo_merge.pool.expert_pool import ExpertPool


def random_pool(num_tasks: int = 3, seed: int = 0, dtype=torch.float32) -> ExpertPool:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (7, 5), "a.bias": (7,), "b.weight": (3, 4, 2), "scale": ()}
    base = {k: torch.randn(s, generator=gen).to(dtype) for k, s in shapes.items()}
    base["position_ids"] = torch.arange(6)
    experts = {}
    for t in range(num_tasks):
        state = {
            k: (v.float() + torch.randn(v.shape, generator=gen)).to(dtype)
            for k, v in base.items()
            if v.is_floating_point()
        }
        state["position_ids"] = torch.arange(6)
        experts[f"task{t}"] = state
    return ExpertPool(base, experts)


def reference_ties(
    pool: ExpertPool, k: float, lam: float, merge_func: str = "mean"
) -> dict[str, torch.Tensor]:
    """TIES from the paper's three steps on concatenated flat vectors (the simple, memory-hungry way),
    with the reference code's trim count: n = int(N·k/100), keep |τ| >= the (N−n)-th smallest."""
    keys = [key for key, v in pool.base.items() if v.is_floating_point()]
    flat = torch.stack(
        [
            torch.cat([(pool.experts[t][key].float() - pool.base[key].float()).reshape(-1) for key in keys])
            for t in pool.tasks
        ]
    )
    n = flat.shape[1]
    n_small = n - int(n * (k / 100))  # 1-based rank, in ascending order, of the threshold
    trimmed = torch.zeros_like(flat)
    for row in range(flat.shape[0]):
        threshold = flat[row].abs().sort().values[n_small - 1] if n_small >= 1 else 0.0
        keep = flat[row].abs() >= threshold
        trimmed[row] = flat[row] * keep
    elected = torch.sign(trimmed.sum(0))
    elected[elected == 0] = torch.sign(elected.sum())
    merged = torch.zeros(n)
    for j in range(n):
        picks = [
            trimmed[r, j]
            for r in range(flat.shape[0])
            if (elected[j] > 0 and trimmed[r, j] > 0) or (elected[j] <= 0 and trimmed[r, j] < 0)
        ]
        if merge_func == "sum":
            merged[j] = sum(picks) if picks else 0.0
        elif merge_func == "max":
            merged[j] = max(abs(float(p)) for p in picks) * elected[j] if picks else 0.0
        else:
            merged[j] = sum(picks) / len(picks) if picks else 0.0
    out, offset = {}, 0
    for key in keys:
        size = pool.base[key].numel()
        out[key] = pool.base[key].float() + lam * merged[offset : offset + size].reshape(pool.base[key].shape)
        offset += size
    return out


def test_registry_lists_methods():
    assert {"weight_average", "task_arithmetic", "ties"} <= set(MERGE_METHODS.names())
    assert "dare" in TV_TRANSFORMS.names()


def test_task_arithmetic_single_task_lambda_one_returns_expert():
    pool = random_pool(1)
    merged = merge(pool, "task_arithmetic", lam=1.0)
    for key, value in pool.experts["task0"].items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-6)


def test_weight_average_of_identical_experts_is_the_expert():
    pool = random_pool(1)
    expert = pool.experts["task0"]
    same = ExpertPool(pool.base, {"a": expert, "b": dict(expert), "c": dict(expert)})
    merged = merge(same, "weight_average")
    for key, value in expert.items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-6)


def test_weight_average_is_the_mean_of_experts():
    pool = random_pool(3)
    merged = merge(pool, "weight_average")
    mean = torch.stack([pool.experts[t]["a.weight"] for t in pool.tasks]).mean(0)
    torch.testing.assert_close(merged["a.weight"], mean)


@pytest.mark.parametrize("merge_func", ["mean", "sum", "max"])
@pytest.mark.parametrize("k", [20, 100])
@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_ties_matches_reference(k, lam, merge_func):
    pool = random_pool(4, seed=k)
    # sign ties: two tasks with opposite values on one entry, the others zero there
    for t, sign in zip(pool.tasks, (1.0, -1.0, 0.0, 0.0), strict=True):
        pool.experts[t]["a.bias"][0] = pool.base["a.bias"][0] + sign * 5.0
    # all-zero entries: every expert equals θ0 there
    for t in pool.tasks:
        pool.experts[t]["a.weight"][0] = pool.base["a.weight"][0]
    merged = merge(pool, "ties", k=k, lam=lam, merge_func=merge_func)
    expected = reference_ties(pool, k, lam, merge_func)
    for key, value in expected.items():
        assert (merged[key] - value).abs().max().item() <= 1e-6, key
    torch.testing.assert_close(merged["a.weight"][0], pool.base["a.weight"][0])
    assert torch.equal(merged["position_ids"], pool.base["position_ids"])


def test_ties_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        merge(random_pool(2), "ties", k=0)
    with pytest.raises(ValueError, match="merge_func"):
        merge(random_pool(2), "ties", merge_func="median")


def test_ties_hand_sized_example():
    """Three tasks, ten entries, k = 20: int(10·0.2) = 2, so the reference keeps 3 entries per task."""
    base = {"w": torch.zeros(10)}
    taus = {
        "a": torch.tensor([5.0, -4, 3, 0.1, -0.2, 0.3, 0, 1, 2, -1]),
        "b": torch.tensor([-1.0, -6, 0.5, 0, 7, 0.1, 8, -0.2, 0.3, 1]),
        "c": torch.tensor([2.0, 0.5, -9, 0.4, 0.2, 0.1, 0, 0.3, 4, 0.6]),
    }
    pool = ExpertPool(base, {t: {"w": v.clone()} for t, v in taus.items()})
    # trimmed (top 3 by magnitude): a {0: 5, 1: -4, 2: 3}; b {6: 8, 4: 7, 1: -6}; c {2: -9, 8: 4, 0: 2}
    # sums: idx0 7 (+), idx1 -10 (-), idx2 -6 (-), idx4 7, idx6 8, idx8 4; all other entries 0
    mean = torch.tensor([3.5, -5, -9, 0, 7, 0, 8, 0, 4, 0])  # idx0 (5+2)/2, idx1 (-4-6)/2, idx2 -9
    total = torch.tensor([7.0, -10, -9, 0, 7, 0, 8, 0, 4, 0])
    largest = torch.tensor([5.0, -6, -9, 0, 7, 0, 8, 0, 4, 0])
    for merge_func, expected in (("mean", mean), ("sum", total), ("max", largest)):
        got = merge(pool, "ties", k=20, lam=1.0, merge_func=merge_func)["w"]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    from simo_merge.merging.ties import magnitude_threshold

    kept = {t: int((v.abs() >= magnitude_threshold({"w": v}, 20)).sum()) for t, v in taus.items()}
    assert kept == {"a": 3, "b": 3, "c": 3}
    assert magnitude_threshold({"w": taus["a"]}, 20, count="exact") == 4.0  # exactly 2 kept


def test_dare_zero_drop_is_identity():
    pool = random_pool(2)
    plain = merge(pool, "task_arithmetic", lam=0.7)
    dared = merge(pool, "task_arithmetic", lam=0.7, transforms={"dare": {"p": 0.0}})
    for key in plain:
        assert torch.equal(plain[key], dared[key])


def test_dare_rescaling_keeps_the_expected_value():
    base = {"w": torch.zeros(200_000)}
    expert = {"w": torch.full((200_000,), 2.0)}
    tvs = {"t": {"w": expert["w"] - base["w"]}}
    dropped = TV_TRANSFORMS.get("dare")(tvs, p=0.7, seed=3)["t"]["w"]
    kept = (dropped != 0).float().mean().item()
    assert abs(kept - 0.3) < 0.005  # Bernoulli(0.3): std of the mean ≈ 0.001
    assert torch.allclose(dropped[dropped != 0], torch.tensor(2.0 / 0.3))
    assert abs(dropped.mean().item() - 2.0) < 0.03
    again = TV_TRANSFORMS.get("dare")(tvs, p=0.7, seed=3)["t"]["w"]
    assert torch.equal(dropped, again)  # same (seed, task, key) -> same mask


def test_dare_composes_with_ties_and_rejects_bad_p():
    pool = random_pool(3)
    merged = merge(pool, "ties", k=50, transforms={"dare": {"p": 0.5, "seed": 1}})
    assert set(merged) == set(pool.base)
    # DARE runs first: TIES on the pool whose experts are θ0 + DARE(τt) gives the same state exactly
    dropped = TV_TRANSFORMS.get("dare")(dict(pool.task_vectors()), p=0.5, seed=1)
    dared = ExpertPool(
        pool.base,
        {
            t: {k: base + v[k] if k in v else base for k, base in pool.base.items()}
            for t, v in dropped.items()
        },
    )
    expected = merge(dared, "ties", k=50)
    for key in pool.base:
        torch.testing.assert_close(merged[key], expected[key], rtol=0, atol=1e-6)
    plain = merge(pool, "ties", k=50)
    assert not torch.allclose(merged["a.weight"], plain["a.weight"])
    with pytest.raises(ValueError, match="drop rate"):
        merge(pool, "ties", transforms={"dare": {"p": 1.0}})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_output_keeps_input_dtype(dtype):
    pool = random_pool(2, dtype=dtype)
    for method in ("weight_average", "task_arithmetic", "ties"):
        merged = merge(pool, method)
        assert all(merged[k].dtype == v.dtype for k, v in pool.base.items())


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match=r"\['k'\]"):
        merge(random_pool(2), "task_arithmetic", k=3)
    with pytest.raises(KeyError, match="unknown merge method 'nope'"):
        merge(random_pool(2), "nope")


def test_merged_state_loads_into_the_encoder(tiny_timm):
    base = tiny_timm.model_state()
    experts = {
        t: {k: v + 0.01 * (i + 1) if v.is_floating_point() else v for k, v in base.items()}
        for i, t in enumerate(["seg", "depth"])
    }
    merged = merge(ExpertPool(base, experts), "ties", k=30)
    tiny_timm.load_model_state(merged)
    assert tiny_timm(torch.rand(1, 3, 32, 32)).features.shape == (1, 64)
