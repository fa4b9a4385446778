"""Data-free merge methods against the papers' definitions, written independently here."""

from __future__ import annotations

import pytest
import torch

from simo_merge.experts import ExpertPool
from simo_merge.merging import MERGE_METHODS, TV_TRANSFORMS, merge


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


def reference_ties(pool: ExpertPool, k: float, lam: float) -> dict[str, torch.Tensor]:
    """TIES from the paper's three steps on concatenated flat vectors (the simple, memory-hungry way)."""
    keys = [key for key, v in pool.base.items() if v.is_floating_point()]
    flat = torch.stack(
        [
            torch.cat([(pool.experts[t][key].float() - pool.base[key].float()).reshape(-1) for key in keys])
            for t in pool.tasks
        ]
    )
    n = flat.shape[1]
    n_keep = max(1, int(n * k / 100))
    trimmed = torch.zeros_like(flat)
    for row in range(flat.shape[0]):
        threshold = flat[row].abs().sort(descending=True).values[n_keep - 1]
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


@pytest.mark.parametrize("k", [20, 100])
@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_ties_matches_reference(k, lam):
    pool = random_pool(4, seed=k)
    # sign ties: two tasks with opposite values on one entry, the others zero there
    for t, sign in zip(pool.tasks, (1.0, -1.0, 0.0, 0.0), strict=True):
        pool.experts[t]["a.bias"][0] = pool.base["a.bias"][0] + sign * 5.0
    # all-zero entries: every expert equals θ0 there
    for t in pool.tasks:
        pool.experts[t]["a.weight"][0] = pool.base["a.weight"][0]
    merged = merge(pool, "ties", k=k, lam=lam)
    expected = reference_ties(pool, k, lam)
    for key, value in expected.items():
        assert (merged[key] - value).abs().max().item() <= 1e-6, key
    torch.testing.assert_close(merged["a.weight"][0], pool.base["a.weight"][0])
    assert torch.equal(merged["position_ids"], pool.base["position_ids"])


def test_ties_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        merge(random_pool(2), "ties", k=0)


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
