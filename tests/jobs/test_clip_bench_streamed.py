"""``bench clip``'s unlabelled inputs are streamed: only the seeded subset's items are read, when drawn,
and data-dependent merges and realigners compute what they did on the stacked subset."""

from __future__ import annotations

import pytest
import torch

from simo_merge.config import ConfigError, load_config
from simo_merge.features.inputs import RealignInputs
from simo_merge.jobs import clip as clip_bench
from simo_merge.jobs.clip import ClipConfig
from simo_merge.merging.spec import MethodSpec
from simo_merge.taskpool import merge, realigned
from tests.helpers.clip8_fixture import STANDIN
from tests.helpers.clip8_fixture import overrides as _overrides


class Counting(torch.utils.data.Dataset):
    """A test set that records which items are read."""

    def __init__(self, dataset) -> None:
        self.dataset, self.task_specs, self.reads = dataset, dataset.task_specs, []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        self.reads.append(i)
        return self.dataset[i]


def test_only_the_sampled_items_are_read_and_rows_equal_the_stacked_subset(fixture_dirs, tmp_path):  # noqa: F811
    root, text = fixture_dirs
    extra = ["tasks=[mnist,svhn]", "max_unlabelled=3", "realign.params={steps: 2, batch_size: 2}"]
    cfg = load_config(ClipConfig, STANDIN, _overrides(root, text, tmp_path / "run", *extra))
    taskpool = clip_bench.build_taskpool(cfg, clip_bench.load_checkpoints(cfg))
    taskpool.splits = [(Counting(ds), tasks) for ds, tasks in taskpool.splits]
    sets = {tasks[0]: ds for ds, tasks in taskpool.splits}
    gen = torch.Generator
    subset = {
        t: torch.randperm(len(ds), generator=gen().manual_seed(cfg.seed))[:3].sort().values.tolist()
        for t, ds in sets.items()
    }
    assert all(len(ds) > 3 for ds in sets.values())  # a strict subset of each test set
    streamed = taskpool.probe_inputs(cfg.max_unlabelled)
    assert all(ds.reads == [] for ds in sets.values())  # nothing read up front
    spec = MethodSpec("regmean", {"num_batches": 1})
    merged = merge(taskpool, spec, streamed)
    surgery = clip_bench.realign_config(cfg, "surgery")
    realigned_state = realigned(taskpool, merged, surgery, streamed)[0].state_dict()
    for t, ds in sets.items():
        assert ds.reads and set(ds.reads) <= set(subset[t]), (t, ds.reads, subset[t])
    # the same rows on the subset stacked in memory (what the bench held before streaming)
    images = {t: torch.stack([ds.dataset[i]["image"] for i in subset[t]]) for t, ds in sets.items()}
    stacked_inputs = RealignInputs(images=images, name=streamed.name)
    stacked = merge(taskpool, spec, stacked_inputs)
    assert all(torch.equal(merged[k], stacked[k]) for k in merged)
    again = realigned(taskpool, stacked, surgery, stacked_inputs)[0].state_dict()
    assert all(torch.equal(realigned_state[k], again[k]) for k in realigned_state)


def test_max_unlabelled_null_is_the_whole_test_split(fixture_dirs, tmp_path):  # noqa: F811
    root, text = fixture_dirs
    over = _overrides(root, text, tmp_path / "run", "tasks=[mnist]")
    cfg = load_config(ClipConfig, STANDIN, [*over, "max_unlabelled=null"])
    assert cfg.max_unlabelled is None
    taskpool = clip_bench.build_taskpool(cfg, clip_bench.load_checkpoints(cfg))
    ((dataset, _),) = taskpool.splits
    assert taskpool.probe_inputs(cfg.max_unlabelled).num_inputs("mnist") == len(dataset)
    with pytest.raises(ConfigError, match="max_unlabelled"):
        load_config(ClipConfig, STANDIN, [*over, "max_unlabelled=0"])
