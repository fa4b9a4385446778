"""Streamed realignment / probe inputs: items are read only when sampled, dataset-backed runs equal the
in-memory ones, and the on-disk feature cache round-trips exactly under deterministic keys."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import load_file

from simo_merge.encoders import build_encoder
from simo_merge.features.cache import FeatureCache
from simo_merge.features.disk_rows import DiskRows, write_rows
from simo_merge.features.inputs import (
    DatasetSource,
    RealignInputs,
    TensorSource,
    dataset_inputs,
    seeded_subset,
    split_inputs,
)
from simo_merge.features.sampling import IndexSampler
from simo_merge.heads import build_head
from simo_merge.merging.data import MergeData, diagonal_fisher
from simo_merge.realign.train import RealignConfig, Realignment, realign
from simo_merge.tasks import regression, segmentation
from tests.helpers.toy_states import perturbed

SPECS = {"semseg": segmentation("semseg", 4), "depth": regression("depth")}
ENC = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2)


class CountingDataset:
    """A SIMO dataset whose items are made on demand (seeded by index); it records every index read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        self.reads.append(i)
        g = torch.Generator().manual_seed(1000 + i)
        return {
            "image": torch.rand(3, 32, 32, generator=g),
            "semseg": torch.randint(0, 4, (32, 32), generator=g),
            "depth": torch.rand(1, 32, 32, generator=g),
            "depth_mask": torch.ones(1, 32, 32, dtype=torch.bool),
        }

    def stacked(self) -> dict:
        items = [self[i] for i in range(self.n)]
        self.reads.clear()
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def make_encoder():
    torch.manual_seed(0)
    return build_encoder("timm", "vit_tiny_patch16_224", **ENC)


def pool():
    encoder = make_encoder()
    torch.manual_seed(1)
    heads = {t: build_head("linear", s, encoder, (32, 32)).eval() for t, s in SPECS.items()}
    base = encoder.model_state()
    experts = {t: perturbed(base, i + 1, 0.05) for i, t in enumerate(SPECS)}
    return base, experts, heads


CFG = dict(steps=4, batch_size=4, rank=4, progress=False)


def test_only_sampled_items_are_read_and_the_cache_holds_only_them():
    base, experts, heads = pool()
    data = CountingDataset(40)
    inputs = dataset_inputs(data, list(SPECS), "counting")
    cache = FeatureCache()
    run = Realignment(make_encoder, base, experts, heads, inputs, RealignConfig(fraction=0.25, **CFG), cache)
    run.train()
    pool_idx = IndexSampler(40, 4, 0, 0.25).pool  # the joint sampler of the one shared source
    assert set(data.reads) == set(pool_idx.tolist()) and len(pool_idx) == 10
    # surgery reads cached features only: every pooled input is read once per table it fills
    # (merged features, two experts) plus the first and last for the source's fingerprint
    assert len(data.reads) == 3 * 10 + 2
    per_input = sum(v[0].numel() * v.element_size() for t in cache._tables.values() for v in t.store.values())
    assert cache.memory_bytes == 10 * per_input
    with pytest.raises(KeyError, match="were not sampled"):
        run.expert_targets("depth", torch.tensor([int(i) for i in range(40) if i not in pool_idx][:2]))


def test_a_dataset_backed_run_equals_the_in_memory_run():
    base, experts, heads = pool()
    data = CountingDataset(24)
    tensors = data.stacked()
    for realigner in ("surgery", "deep"):
        cfg = RealignConfig(realigner=realigner, **CFG)
        streamed_model, streamed = realign(
            make_encoder, base, experts, heads, dataset_inputs(data, list(SPECS), "x"), cfg
        )
        memory_model, memory = realign(
            make_encoder, base, experts, heads, RealignInputs({t: tensors["image"] for t in SPECS}), cfg
        )
        assert streamed == memory, realigner
        for (k, a), (_, b) in zip(
            streamed_model.state_dict().items(), memory_model.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), (realigner, k)
    # supervised: labels (and the depth mask) come from the items read with the images
    labels = {
        "semseg": {"semseg": tensors["semseg"]},
        "depth": {"depth": tensors["depth"], "depth_mask": tensors["depth_mask"]},
    }
    cfg = RealignConfig(objective="supervised", **CFG)
    _, streamed = realign(
        make_encoder, base, experts, heads, dataset_inputs(data, list(SPECS), "x", with_labels=True), cfg
    )
    _, memory = realign(
        make_encoder, base, experts, heads, RealignInputs({t: tensors["image"] for t in SPECS}, labels), cfg
    )
    assert streamed == memory and len(streamed) == 4


def test_the_disk_cache_round_trips_exactly_and_gives_the_same_run(tmp_path):
    g = torch.Generator().manual_seed(0)
    table = {
        "block1": torch.randn(10, 5, 3, generator=g),
        "final": torch.randn(10, 7, generator=g).to(torch.bfloat16),
        "mask": torch.rand(10, 2, generator=g) > 0.5,
    }
    path = write_rows(
        tmp_path / "t.safetensors", 10, ({k: v[i : i + 4] for k, v in table.items()} for i in (0, 4, 8))
    )
    loaded = load_file(str(path))  # an ordinary safetensors file
    assert loaded.keys() == table.keys() and all(torch.equal(loaded[k], table[k]) for k in table)
    rows = DiskRows(path).rows(torch.tensor([9, 0, 4]))
    assert all(torch.equal(rows[k], table[k][[9, 0, 4]]) for k in table)
    parts = [{k: v[:4] for k, v in table.items()}] * 3
    with pytest.raises(ValueError, match="more than the 10 rows announced"):
        write_rows(tmp_path / "u.safetensors", 10, parts)
    with pytest.raises(ValueError, match="8 rows written, 10 announced"):
        write_rows(tmp_path / "u.safetensors", 10, parts[:2])
    assert not (tmp_path / "u.safetensors").exists()  # atomic: nothing published on failure

    base, experts, heads = pool()
    inputs = dataset_inputs(CountingDataset(16), list(SPECS), "disk")
    on_disk = FeatureCache(tmp_path / "cache", max_memory_mb=0)  # nothing fits: every table on disk
    _, disk_curve = realign(make_encoder, base, experts, heads, inputs, RealignConfig(**CFG), on_disk)
    _, memory_curve = realign(make_encoder, base, experts, heads, inputs, RealignConfig(**CFG))
    assert disk_curve == memory_curve
    assert on_disk.memory_bytes == 0 and all(t.on_disk for t in on_disk._tables.values())
    files = sorted(p.name for p in (tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 3  # merged features + one table per expert
    # the keys are deterministic: a new cache on the same folder (a rerun) reuses every table
    again = FeatureCache(tmp_path / "cache")
    _, rerun = realign(make_encoder, base, experts, heads, inputs, RealignConfig(**CFG), again)
    assert rerun == memory_curve and again.misses == 0 and len(again._tables) == 3
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.safetensors")) == files


def test_streamed_reads_and_shared_sources():
    data = CountingDataset(6)
    inputs = split_inputs([(data, ["semseg", "depth"])], "x", with_labels=True)
    assert inputs.sources["semseg"] is inputs.sources["depth"] and data.reads == []
    stacked = data.stacked()
    got = inputs.read("depth", torch.tensor([4, 1]))  # only the items asked for, stacked
    assert data.reads == [4, 1] and set(got) == {"image", "semseg", "depth", "depth_mask"}
    assert all(torch.equal(got[k], stacked[k][[4, 1]]) for k in got)
    assert inputs.label_keys == {"semseg": ("semseg", "semseg_mask"), "depth": ("depth", "depth_mask")}
    assert torch.equal(inputs.sources["semseg"].images([0]), stacked["image"][:1])
    assert inputs.num_inputs("semseg") == 6
    assert not hasattr(inputs, "images") and not hasattr(inputs, "labels")  # nothing stacks every input
    x = torch.rand(5, 3, 32, 32)
    wrapped = RealignInputs(images={"a": x, "b": x, "c": x.clone()}, name="w")
    assert wrapped.sources["a"] is wrapped.sources["b"] is not wrapped.sources["c"]
    assert torch.equal(wrapped.sources["a"].images([3, 0]), x[[3, 0]])
    assert isinstance(wrapped.sources["c"], TensorSource)
    with pytest.raises(ValueError, match="first dims"):
        TensorSource({"image": x, "depth": torch.zeros(4, 1)})
    with pytest.raises(KeyError, match=r"labels for task\(s\) \['z'\] without images"):
        RealignInputs(images={"a": x}, labels={"z": {"z": x}})


def test_probes_read_only_the_batches_they_draw():
    base, experts, heads = pool()
    data = CountingDataset(32)
    merge_data = MergeData(
        make_encoder, heads, experts, dataset_inputs(data, list(SPECS), "p"), batch_size=4, progress=False
    )
    diagonal_fisher(merge_data, "depth", num_batches=2)
    drawn = torch.cat(list(itertools.islice(merge_data.batches("depth"), 2))).tolist()
    fingerprint = {0, 31}  # first and last input, read for the cache key
    assert set(data.reads) == set(drawn) | fingerprint and len(data.reads) == len(drawn) + 2


def test_a_seeded_subset_is_read_only_when_drawn_and_equals_the_stacked_subset():
    data = CountingDataset(10)
    idx = torch.randperm(10, generator=torch.Generator().manual_seed(3))[:4].sort().values
    assert torch.equal(seeded_subset(10, 4, 3), idx)
    assert torch.equal(seeded_subset(10, None, 3), torch.arange(10))  # no limit: every item
    source = DatasetSource(data, indices=seeded_subset(10, 4, 3))
    assert data.reads == [] and len(source) == 4  # nothing read up front
    got = source.read(torch.tensor([2, 0]))
    assert data.reads == [int(idx[2]), int(idx[0])]
    stacked = torch.stack([data[int(i)]["image"] for i in idx])
    assert torch.equal(got["image"], stacked[[2, 0]]) and set(got) == {"image"}
    # the subset is part of the cache key: another seed's subset never reuses its features
    pool = torch.arange(4)
    other = DatasetSource(data, indices=seeded_subset(10, 4, 4))
    assert source.fingerprint(pool) != other.fingerprint(pool)
    assert DatasetSource(data).fingerprint(pool) == DatasetSource(data).fingerprint(pool)
