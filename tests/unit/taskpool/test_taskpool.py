"""The task pool: its models, evaluations, Individual row, cache, probe inputs, merges and results table
equal what is built by hand from the same pool, heads and data."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from simo_merge.datasets import build_dataset
from simo_merge.encoders import build_encoder
from simo_merge.features.inputs import seeded_subset
from simo_merge.heads import build_head
from simo_merge.merging import merge as merge_pool
from simo_merge.merging.data import MergeData
from simo_merge.merging.spec import MethodSpec
from simo_merge.model import MultiTaskModel
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.protocols import PROTOCOLS
from simo_merge.taskpool import INDIVIDUAL, ResultsTable, TaskPool, accuracy_rows, merge, merge_data
from simo_merge.tasks import classification
from simo_merge.training.eval_cache import EvaluationCache
from simo_merge.training.evaluate import evaluate
from tests.helpers.toy_states import perturbed

ENCODER = {
    "library": "timm",
    "arch": "vit_tiny_patch16_224",
    "kwargs": dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2),
}
DENSE = ["semseg", "depth"]


def make_encoder():
    return build_encoder(ENCODER["library"], ENCODER["arch"], **ENCODER["kwargs"])


def make_pool(specs: dict) -> ExpertPool:
    """θ0 (seed 0), one noisy expert per task, a random linear head per task (seed 1)."""
    torch.manual_seed(0)
    encoder = make_encoder()
    base = encoder.model_state()
    torch.manual_seed(1)
    heads = {t: build_head("linear", spec, encoder, (32, 32)) for t, spec in specs.items()}
    return ExpertPool(
        base,
        {t: perturbed(base, i + 1, 0.05) for i, t in enumerate(specs)},
        {t: h.state_dict() for t, h in heads.items()},
        {t: h.config() for t, h in heads.items()},
        encoder_config=ENCODER,
    )


class Labelled(Dataset):
    """A classification set of one task: random images, 3 seeded classes."""

    def __init__(self, task: str, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.task, self.images, self.labels = (
            task,
            torch.rand(n, 3, 32, 32, generator=g),
            torch.randint(0, 3, (n,), generator=g),
        )
        self.task_specs = {task: classification(task, 3)}
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        self.reads.append(i)
        return {"image": self.images[i], self.task: self.labels[i]}


@pytest.fixture(scope="module")
def dense():
    data = build_dataset("synthetic_scenes", split="test", size=(32, 32), num_samples=6, tasks=DENSE)
    pool = make_pool({t: data.task_specs[t] for t in DENSE})
    return pool, data


def by_hand(pool: ExpertPool, state: dict, tasks: list[str], data, batch_size: int = 4) -> dict:
    """``tasks``' metrics of the encoder holding ``state`` under the pool's heads, built by hand."""
    encoder = make_encoder()
    encoder.load_model_state(state)
    model = MultiTaskModel(encoder, pool.subset(tasks).frozen_heads()).eval()
    specs = {t: data.task_specs[t] for t in tasks}
    return evaluate(model, DataLoader(data, batch_size), specs, progress=False)


def test_evaluate_of_a_state_equals_the_model_built_by_hand(dense):
    pool, data = dense
    taskpool = TaskPool(pool, [(data, DENSE)], batch_size=4, progress=False)
    merged = merge_pool(pool, "task_arithmetic", lam=0.5)
    got = taskpool.evaluate(merged)
    assert got == by_hand(pool, merged, DENSE, data) and list(got) == DENSE
    assert taskpool.evaluate(merged, ["depth"]) == {"depth": got["depth"]}
    model = taskpool.model(merged)
    assert not model.training and all(not p.requires_grad for p in model.heads.parameters())
    assert all(model.heads[t] is not taskpool.heads[t] for t in DENSE)  # each model gets copies
    assert taskpool.evaluate_model(model) == got


def test_individual_row_is_each_expert_on_its_own_task(dense):
    pool, data = dense
    taskpool = TaskPool(pool, [(data, DENSE)], batch_size=4, progress=False)
    individual = taskpool.individual()
    assert individual == {t: by_hand(pool, pool.experts[t], [t], data)[t] for t in DENSE}
    assert individual != taskpool.evaluate(pool.base)  # θ0 is not the experts


def test_per_task_data_sets_each_task_on_its_own():
    sets = {"a": Labelled("a", 7, 0), "b": Labelled("b", 5, 1)}
    pool = make_pool({t: ds.task_specs[t] for t, ds in sets.items()})
    taskpool = TaskPool(pool, [(sets["a"], ["a"]), (sets["b"], ["b"])], batch_size=3, progress=False)
    merged = merge_pool(pool, "task_arithmetic", lam=0.3)
    got = taskpool.evaluate(merged)
    assert got == {t: by_hand(pool, merged, [t], sets[t], 3)[t] for t in sets}
    assert set(got["a"]) == {"accuracy"} and 0 <= got["a"]["accuracy"] <= 100
    assert taskpool.individual() == {t: by_hand(pool, pool.experts[t], [t], sets[t], 3)[t] for t in sets}
    with pytest.raises(ValueError, match=r"no data for task\(s\) \['b'\]"):
        TaskPool(pool, [(sets["a"], ["a"])])


def test_evaluations_of_an_unchanged_state_are_reused(dense, tmp_path):
    pool, data = dense
    cache = EvaluationCache(tmp_path)
    parts = {"data": "synthetic test", "seed": 0}
    taskpool = TaskPool(pool, [(data, DENSE)], batch_size=4, progress=False, cache=cache, cache_parts=parts)
    first = taskpool.evaluate(pool.base)
    assert (cache.hits, cache.misses) == (0, 1)
    again = TaskPool(pool, [(data, DENSE)], batch_size=4, progress=False, cache=cache, cache_parts=parts)
    assert again.evaluate(pool.base) == first and (cache.hits, cache.misses) == (1, 1)
    assert again.evaluate(pool.experts["depth"]) != first and cache.misses == 2  # another state


def test_probe_inputs_are_streamed_seeded_subsets():
    sets = {"a": Labelled("a", 9, 0), "b": Labelled("b", 6, 1)}
    pool = make_pool({t: ds.task_specs[t] for t, ds in sets.items()})
    taskpool = TaskPool(pool, [(sets["a"], ["a"]), (sets["b"], ["b"])], seed=3, name="probe")
    subset = taskpool.probe_inputs(limit=4)
    assert all(ds.reads == [] for ds in sets.values())  # nothing read up front
    assert subset.name == "probe" and subset.num_inputs("a") == subset.num_inputs("b") == 4
    idx = seeded_subset(9, 4, 3)
    assert torch.equal(subset.sources["a"].images([1, 3]), sets["a"].images[idx[[1, 3]]])
    whole = taskpool.probe_inputs()
    assert whole.num_inputs("a") == 9 and whole.num_inputs("b") == 6


def test_simo_tasks_share_one_probe_source(dense):
    pool, data = dense
    inputs = TaskPool(pool, [(data, DENSE)]).probe_inputs(limit=3)
    assert inputs.sources["semseg"] is inputs.sources["depth"] and inputs.num_inputs("depth") == 3


def test_merge_fills_in_the_probe_data_and_the_facts(dense):
    pool, data = dense
    taskpool = TaskPool(pool, [(data, DENSE)], seed=2, progress=False)
    ta = MethodSpec("task_arithmetic", {"lam": 0.4})
    free = merge(taskpool, ta)
    assert all(torch.equal(free[k], merge_pool(pool, "task_arithmetic", lam=0.4)[k]) for k in free)
    inputs = taskpool.probe_inputs(limit=4)
    regmean = MethodSpec("regmean", {"num_batches": 1})
    with pytest.raises(ValueError, match="needs unlabelled inputs"):
        merge(taskpool, regmean)
    got = merge(taskpool, regmean, inputs)
    probes = MergeData(pool.encoder, pool.frozen_heads(), pool.experts, inputs, seed=2, progress=False)
    want = merge_pool(pool, "regmean", merge_data=probes, num_batches=1)
    assert all(torch.equal(got[k], want[k]) for k in want)
    built = merge_data(taskpool, inputs, batch_size=2)
    assert (built.batch_size, built.seed, built.name, built.progress) == (2, 2, inputs.name, False)
    record: dict = {}
    merge(taskpool, MethodSpec("adamerging", {"steps": 1}), merge_data=built, record=record)
    assert record  # the method's coefficients, recorded because its facts say it records


def test_results_table_summarises_against_the_individual_row():
    rows = {
        INDIVIDUAL: {"depth": {"abs_err": 0.5}, "semseg": {"miou": 40.0}},
        "TA": {"depth": {"abs_err": 1.0}, "semseg": {"miou": 20.0}},
    }
    table = ResultsTable(rows, {"TA": {"params": "lam=0.3"}})
    assert table.summary[INDIVIDUAL]["norm_perf"] == pytest.approx(100.0)
    assert table.summary["TA"]["norm_semseg"] == pytest.approx(50.0)
    assert list(table.results()) == ["rows", "summary", "delta_metrics", "units"]
    assert table.results()["units"]["miou"] == "%" and table.results()["delta_metrics"] == "all"
    assert "| TA |" in table.markdown() and "lam=0.3" in table.markdown()
    assert "ΔMTL (all metrics) % ↑" in table.markdown()
    primary = ResultsTable(
        {
            INDIVIDUAL: {"depth": {"abs_err": 0.5, "rel_err": 0.1}},
            "TA": {"depth": {"abs_err": 1.0, "rel_err": 0.1}},
        },
        delta_metrics="primary",
    )
    assert primary.summary["TA"]["delta_mtl"] == pytest.approx(-100.0)  # abs_err only; "all": -50
    assert (
        "ΔMTL (primary metrics) % ↑" in primary.markdown() and primary.results()["delta_metrics"] == "primary"
    )
    acc = {INDIVIDUAL: {"a": 80.0, "b": 50.0}, "TA": {"a": 40.0, "b": 50.0}}
    summary = accuracy_rows(acc, ["a", "b"], ["TA"])
    assert list(summary) == ["TA"] and summary["TA"]["normalized"] == {"a": 50.0, "b": 100.0}
    assert summary["TA"]["avg"] == pytest.approx(45.0) and summary["TA"]["normalized_avg"] == pytest.approx(
        75.0
    )


class HolesInDepth(Dataset):
    """``data`` with the first ``i + 1`` depth rows of item ``i`` invalid (0, masked): images differ in
    their number of valid pixels, so per-batch means differ from pooled ones."""

    def __init__(self, data) -> None:
        self.data, self.task_specs = data, data.task_specs

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.data[i])
        item["depth"], item["depth_mask"] = item["depth"].clone(), item["depth_mask"].clone()
        item["depth"][..., : i + 1, :] = 0.0
        item["depth_mask"][..., : i + 1, :] = False
        return item


def test_the_protocol_decides_how_the_pool_scores(dense, tmp_path):
    """protocol=simo reaches every metric (per-batch means of 6 images in batches of 4 and 2, SIMO's
    pixels) and keys the evaluation cache apart from the default's."""
    pool, data = dense
    data = HolesInDepth(data)
    simo = PROTOCOLS["simo"]
    cache = EvaluationCache(tmp_path)
    kwargs = {"batch_size": 4, "progress": False, "cache": cache, "cache_parts": {"data": "synthetic"}}
    default = TaskPool(pool, [(data, DENSE)], **kwargs).evaluate(pool.base)
    got = TaskPool(pool, [(data, DENSE)], protocol=simo, **kwargs).evaluate(pool.base)
    assert cache.misses == 2  # not the default's stored metrics
    encoder = make_encoder()
    encoder.load_model_state(pool.base)
    model = MultiTaskModel(encoder, pool.frozen_heads()).eval()
    specs = {t: data.task_specs[t] for t in DENSE}
    assert got == evaluate(model, DataLoader(data, 4), specs, progress=False, protocol=simo)
    assert default == evaluate(model, DataLoader(data, 4), specs, progress=False)
    assert got["depth"]["abs_err"] != pytest.approx(default["depth"]["abs_err"], rel=1e-6)
