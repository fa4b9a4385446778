"""AdaMerging (task-wise and layer-wise) on a tiny ViT pool: equivalence with task arithmetic at λ = init,
the learning step, the λ grouping, clipping, the per-task objectives and the coefficient heatmap."""

from __future__ import annotations

import math

import pytest
import torch

from simo_merge.encoders import build_encoder
from simo_merge.features.losses import distill_output_loss
from simo_merge.heads import build_head
from simo_merge.merging import MERGE_METHODS, merge
from simo_merge.merging.adamerging import AdaMergingProblem, lambda_groups
from simo_merge.merging.data import MergeData
from simo_merge.merging.data.entropy import prediction_entropy, resolve_objectives
from simo_merge.merging.data.plots import lambda_heatmap
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.tasks import normals, regression, segmentation
from tests.helpers.toy_states import perturbed

SPECS = {"semseg": segmentation("semseg", 4), "depth": regression("depth"), "normal": normals()}
ENC = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2)
METHODS = ["adamerging", "adamerging_layerwise"]


def make_encoder():
    torch.manual_seed(0)
    return build_encoder("timm", "vit_tiny_patch16_224", **ENC)


def setup(tasks=tuple(SPECS), num_inputs=8):
    encoder = make_encoder()
    torch.manual_seed(1)
    heads = {t: build_head("linear", SPECS[t], encoder, (32, 32)).eval() for t in tasks}
    base = encoder.model_state()
    experts = {t: perturbed(base, i + 1) for i, t in enumerate(tasks)}
    images = torch.rand(num_inputs, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    merge_data = MergeData(
        make_encoder, heads, experts, {t: images for t in tasks}, batch_size=4, progress=False
    )
    return ExpertPool(base, experts), merge_data


@pytest.fixture(scope="module")
def full():
    return setup()


def hand_merge(pool, lambdas, group_of):
    """θ0 + Σ_t λ[t][g(key)] τ_t written out from the experts' states."""
    out = {}
    for key, theta0 in pool.base.items():
        acc = theta0.double()
        for t, task in enumerate(pool.tasks):
            acc = acc + lambdas[t][group_of(key)] * (pool.experts[task][key].double() - theta0.double())
        out[key] = acc
    return out


def test_registered_and_record_is_an_accepted_hyperparameter(full):
    pool, merge_data = full
    assert "adamerging" in MERGE_METHODS and "adamerging_layerwise" in MERGE_METHODS
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        merge(pool, "adamerging", merge_data=merge_data, lam=0.3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("init", [0.3, 0.7])
def test_frozen_lambdas_equal_task_arithmetic(full, method, init):
    pool, merge_data = full
    record = {}
    got = merge(pool, method, merge_data=merge_data, steps=0, init=init, record=record, progress=False)
    want = merge(pool, "task_arithmetic", lam=init)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)
    assert record["objective_curve"] == []
    assert all(abs(v - init) < 1e-7 for row in record["lambdas"] for v in row)


@pytest.mark.parametrize("method", METHODS)
def test_one_step_lowers_the_objective_on_the_same_batch(full, method):
    pool, merge_data = full
    record = {}
    merge(
        pool,
        method,
        merge_data=merge_data,
        steps=1,
        seed=2,
        batches_per_task=1,
        record=record,
        progress=False,
    )
    problem = AdaMergingProblem(
        {k: v for k, v in pool.base.items() if v.is_floating_point()},
        pool.task_vectors(),
        merge_data,
        layerwise=method == "adamerging_layerwise",
    )
    idx = {t: next(it) for t, it in problem.batch_iterators(seed=2).items()}
    before, parts = problem.objective(torch.full(problem.shape, 0.3), idx)
    after, _ = problem.objective(torch.tensor(record["lambdas"]), idx)
    # the recorded curve is the objective at init on that first batch
    assert record["objective_curve"][0] == pytest.approx(before.item(), rel=1e-6)
    assert sum(parts.values()) == pytest.approx(before.item(), rel=1e-6)
    assert after.item() < before.item() - 1e-5
    # Adam's first step moves every λ by ≈ lr (its update is lr · sign(grad) up to eps), except the
    # per-tensor λ of tensors no head reads (the final norm after the last tapped block): no gradient
    moved = (torch.tensor(record["lambdas"]) - 0.3).abs()
    assert bool(((moved - 1e-3).abs() < 1e-5).logical_or(moved == 0).all())
    assert (moved > 0).float().mean() > 0.9


def test_layerwise_groups_and_merged_state_match_hand_computation(full):
    pool, merge_data = full
    record = {}
    got = merge(
        pool,
        "adamerging_layerwise",
        merge_data=merge_data,
        steps=3,
        granularity="block",
        record=record,
        progress=False,
    )
    depth = ENC["depth"]
    assert record["groups"] == [f"block {b}" for b in range(depth)] + ["non-block"]
    assert record["tasks"] == list(SPECS)
    lambdas = record["lambdas"]
    assert len(lambdas) == 3 and all(len(row) == depth + 1 for row in lambdas)
    assert len({round(v, 6) for row in lambdas for v in row}) > 1  # coefficients actually differ

    def group_of(key):
        block = merge_data.encoder.block_of_key(key)
        return depth if block is None else block

    assert group_of("cls_token") == depth and group_of("blocks.2.mlp.fc1.weight") == 2
    want = hand_merge(pool, lambdas, group_of)
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], rtol=0, atol=1e-6, msg=key)


def test_taskwise_has_one_group_and_matches_hand_computation(full):
    pool, merge_data = full
    record = {}
    got = merge(pool, "adamerging", merge_data=merge_data, steps=2, record=record, progress=False)
    assert record["groups"] == ["all"] and [len(r) for r in record["lambdas"]] == [1, 1, 1]
    want = hand_merge(pool, record["lambdas"], lambda key: 0)
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], rtol=0, atol=1e-6, msg=key)


def test_layerwise_default_learns_one_lambda_per_task_and_tensor(full):
    """FusionBench / AdaMerging reference: λ has shape (tasks, parameter tensors), clamped to [0, 1] in
    the forward pass, and each step sums the objective over 2 batches per task before one Adam step."""
    pool, merge_data = full
    record = {}
    got = merge(
        pool, "adamerging_layerwise", merge_data=merge_data, steps=2, seed=3, record=record, progress=False
    )
    float_keys = [k for k, v in pool.base.items() if v.is_floating_point()]
    assert record["groups"] == float_keys  # one group per parameter tensor, in state order
    lambdas = torch.tensor(record["lambdas"])
    assert lambdas.shape == (len(SPECS), len(float_keys))
    assert lambdas.unique().numel() > 2  # tensors of one block got different coefficients
    index = {k: i for i, k in enumerate(float_keys)}
    want = hand_merge(
        ExpertPool({k: pool.base[k] for k in float_keys}, {t: pool.experts[t] for t in pool.tasks}),
        record["lambdas"],
        index.__getitem__,
    )
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], rtol=0, atol=1e-6, msg=key)
    # the first recorded objective: λ = init on the first two batches of every task, summed
    problem = AdaMergingProblem({k: pool.base[k] for k in float_keys}, pool.task_vectors(), merge_data, True)
    assert problem.shape == (len(SPECS), len(float_keys))
    iterators = problem.batch_iterators(seed=3)
    first = [{t: next(it) for t, it in iterators.items()} for _ in range(2)]
    lam0 = torch.full(problem.shape, 0.3)
    expected = sum(problem.objective(lam0, idx)[0].item() for idx in first)
    assert record["objective_curve"][0] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="granularity"):
        merge(pool, "adamerging_layerwise", merge_data=merge_data, steps=0, granularity="row")
    with pytest.raises(ValueError, match="batches_per_task"):
        merge(pool, "adamerging", merge_data=merge_data, steps=0, batches_per_task=0)


def test_lambda_groups_without_non_block_keys():
    names, group_of = lambda_groups(["blocks.1.w", "blocks.3.w"], lambda k: int(k.split(".")[1]))
    assert names == ["block 1", "block 3"] and group_of == {"blocks.1.w": 0, "blocks.3.w": 1}
    assert lambda_groups(["a", "b"], None) == (["all"], {"a": 0, "b": 0})
    assert lambda_groups(["a", "b"], lambda k: 0, "tensor") == (["a", "b"], {"a": 0, "b": 1})


def test_lambdas_are_clipped_to_the_unit_interval(full):
    pool, merge_data = full
    record = {}
    got = merge(
        pool, "adamerging_layerwise", merge_data=merge_data, steps=4, lr=0.4, init=1.0, granularity="block",
        record=record, progress=False,
    )  # fmt: skip
    lam = torch.tensor(record["lambdas"])
    assert lam.min() >= 0.0 and lam.max() <= 1.0
    # with lr 0.4 from 1.0, unclipped λ would leave [0, 1]: some sit exactly on a bound
    assert bool(((lam == 1.0) | (lam == 0.0)).any())
    depth = ENC["depth"]

    def group_of(key):
        block = merge_data.encoder.block_of_key(key)
        return depth if block is None else block

    want = hand_merge(pool, record["lambdas"], group_of)
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], rtol=0, atol=1e-5, msg=key)


def test_regression_only_pool_distils_the_expert():
    pool, merge_data = setup(tasks=("depth", "normal"))
    record = {}
    merge(
        pool, "adamerging", merge_data=merge_data, steps=1, batches_per_task=1, record=record, progress=False
    )
    assert record["objectives"] == {"depth": "distill", "normal": "distill"}
    idx = next(merge_data.batches("depth", 0))
    merged = merge(pool, "task_arithmetic", lam=0.3)
    out = merge_data.outputs_of_state(merged, merge_data.read("depth", idx), ["depth", "normal"])
    want = sum(
        distill_output_loss(SPECS[t], out[t], merge_data.expert_outputs(t, idx)).item()
        for t in ("depth", "normal")
    )
    assert want > 1e-3
    assert record["objective_curve"][0] == pytest.approx(want, rel=1e-5)
    # a one-task pool merged with λ = 1 is the expert itself: the distillation objective is 0
    single, single_probe = setup(tasks=("depth",))
    record = {}
    merge(single, "adamerging", merge_data=single_probe, steps=1, init=1.0, record=record, progress=False)
    assert record["objective_curve"][0] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="'depth'.*entropy"):
        merge(pool, "adamerging", merge_data=merge_data, steps=0, objectives={"depth": "entropy"})


def test_tasks_with_their_own_inputs_get_their_own_batches(full):
    pool, shared = full
    sizes = {"semseg": 8, "depth": 6, "normal": 5}
    images = {
        t: torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(n)) for t, n in sizes.items()
    }
    merge_data = MergeData(make_encoder, shared.heads, pool.experts, images, batch_size=4, progress=False)
    record = {}
    merge(
        pool,
        "adamerging",
        merge_data=merge_data,
        steps=1,
        seed=1,
        batches_per_task=1,
        record=record,
        progress=False,
    )
    merged = merge(pool, "task_arithmetic", lam=0.3)
    idx = {t: next(merge_data.batches(t, 1)) for t in sizes}
    assert not torch.equal(idx["semseg"], idx["depth"])
    want = 0.0
    for task in sizes:
        out = merge_data.outputs_of_state(merged, images[task][idx[task]], [task])[task]
        if task == "semseg":
            want += prediction_entropy(out).item()
        else:
            want += distill_output_loss(SPECS[task], out, merge_data.expert_outputs(task, idx[task])).item()
    assert record["objective_curve"][0] == pytest.approx(want, rel=1e-5)


def test_segmentation_defaults_to_entropy(full):
    pool, merge_data = full
    record = {}
    merge(
        pool, "adamerging", merge_data=merge_data, steps=1, batches_per_task=1, record=record, progress=False
    )
    assert record["objectives"] == {"semseg": "entropy", "depth": "distill", "normal": "distill"}
    idx = next(merge_data.batches("semseg", 0))
    merged = merge(pool, "task_arithmetic", lam=0.3)
    out = merge_data.outputs_of_state(merged, merge_data.read("semseg", idx), list(SPECS))
    p = out["semseg"].softmax(1)
    entropy = -(p * p.log()).sum(1).mean().item()
    distill = sum(
        distill_output_loss(SPECS[t], out[t], merge_data.expert_outputs(t, idx)).item()
        for t in ("depth", "normal")
    )
    assert 0 < entropy <= math.log(4)
    assert record["objective_curve"][0] == pytest.approx(entropy + distill, rel=1e-5)


def test_prediction_entropy_hand_values():
    assert prediction_entropy(torch.zeros(2, 5, 3, 3)).item() == pytest.approx(math.log(5), rel=1e-6)
    assert prediction_entropy(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    p = 0.2  # two classes with logits (log p, log(1-p))
    logits = torch.tensor([[math.log(p), math.log(1 - p)]])
    want = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert prediction_entropy(logits).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="class dim"):
        prediction_entropy(torch.zeros(4))


def test_bad_objectives_and_arguments_raise(full):
    pool, merge_data = full
    with pytest.raises(ValueError, match="'semseg'.*'kl'"):
        merge(pool, "adamerging", merge_data=merge_data, steps=0, objectives={"semseg": "kl"})
    with pytest.raises(ValueError, match="'edge'"):
        resolve_objectives({"semseg": SPECS["semseg"]}, {"edge": "distill"})
    with pytest.raises(ValueError, match="init"):
        merge(pool, "adamerging", merge_data=merge_data, steps=0, init=1.5)
    with pytest.raises(ValueError, match="steps"):
        merge(pool, "adamerging", merge_data=merge_data, steps=-1)
    small_pool, small_probe = setup(tasks=("depth",))
    with pytest.raises(ValueError, match=r"\['semseg', 'normal'\]"):
        merge(pool, "adamerging", merge_data=small_probe, steps=0)


@pytest.mark.parametrize("method", METHODS)
def test_probe_free_call_raises_a_clear_error(full, method):
    pool, _ = full
    with pytest.raises(ValueError, match="needs merge_data"):
        merge(pool, method, steps=1)


def test_lambda_heatmap_is_written(tmp_path, full):
    pool, merge_data = full
    record = {}
    merge(pool, "adamerging_layerwise", merge_data=merge_data, steps=1, record=record, progress=False)
    path = lambda_heatmap(record, tmp_path / "plots" / "lambdas.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == ["lambdas.png"]  # no temporary left behind
    from PIL import Image

    with Image.open(path) as im:
        assert im.size[0] > im.size[1] > 100
    with pytest.raises(ValueError, match="shape"):
        lambda_heatmap({**record, "lambdas": [[0.1]]}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="'groups'"):
        lambda_heatmap({"lambdas": [[0.1]], "tasks": ["a"]}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
