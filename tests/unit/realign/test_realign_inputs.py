"""Which data trains a realignment: held out by default, the test-time setting by name, no augmentation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simo_merge.data import DataConfig, build_split
from simo_merge.realign.inputs import HELD_OUT, TEST_TIME, choose_inputs, describe, inputs_dataset

DATA = DataConfig(size=[32, 32], num_samples={"train": 8, "val": 4, "test": 4})


def test_the_evaluated_split_is_refused_unless_test_time_is_asked_for():
    choice = choose_inputs(DATA, "val", "test")
    assert (choice.split, choice.setting, choice.augmented) == ("val", HELD_OUT, False)
    with pytest.raises(ValueError, match=r"split='test' .* is the evaluated split .* test_time=true"):
        choose_inputs(DATA, "test", "test")
    aliased = dataclasses.replace(DATA, splits={"train": "train", "val": "test", "test": "test"})
    with pytest.raises(ValueError, match="dataset split 'test'"):  # another role, same data
        choose_inputs(aliased, "val", "test")
    test_time = choose_inputs(DATA, "val", "test", test_time=True)
    assert (test_time.split, test_time.setting) == ("test", TEST_TIME)
    with pytest.raises(ValueError, match="label_split='test'"):
        choose_inputs(DATA, "test", "test", labelled=True)
    with pytest.raises(ValueError, match="labels"):
        choose_inputs(DATA, "val", "test", test_time=True, labelled=True)
    with pytest.raises(ValueError, match="augment=true applies .* split=train"):
        choose_inputs(DATA, "val", "test", augment=True)
    with pytest.raises(ValueError, match="'dev' is not a role"):
        choose_inputs(DATA, "dev", "test")
    line = describe(test_time.record(DATA, {"semseg": 4, "depth": 4}))
    assert "synthetic_scenes/test" in line and "test-time setting" in line and "not augmented" in line


def test_a_tasks_own_split_mapping_is_checked_too():
    """SISO: DTD's test set is its ``val`` folder; split=val would train on it unless refused."""
    siso = dataclasses.replace(
        DATA, per_task={"dtd": {"name": "dtd", "splits": {"test": "val"}}, "mnist": {"name": "mnist"}}
    )
    refused = r"data.per_task.dtd: split='val' \(dataset split 'val'\) is the evaluated"
    with pytest.raises(ValueError, match=refused):
        choose_inputs(siso, "val", "test")
    held_out = dataclasses.replace(
        siso, per_task={**siso.per_task, "dtd": {"name": "dtd", "splits": {"val": "train", "test": "val"}}}
    )
    assert choose_inputs(held_out, "val", "test").setting == HELD_OUT
    assert choose_inputs(siso, "val", "test", test_time=True).setting == TEST_TIME


def test_train_split_inputs_are_not_augmented_unless_asked(tmp_path):
    plain = build_split(dataclasses.replace(DATA, augment=False), "train", 0, tmp_path)
    augmented = build_split(DATA, "train", 0, tmp_path)  # what split=train used to give realignment
    got = inputs_dataset(DATA, choose_inputs(DATA, "train", "test"), 0, tmp_path)
    asked = inputs_dataset(DATA, choose_inputs(DATA, "train", "test", augment=True), 0, tmp_path)
    n = len(plain)
    images = {  # each read once, in order: the augmentation draws from one seeded random state
        name: [ds[i]["image"] for i in range(n)]
        for name, ds in (("plain", plain), ("augmented", augmented), ("got", got), ("asked", asked))
    }
    assert all(torch.equal(a, b) for a, b in zip(images["got"], images["plain"], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(images["augmented"], images["plain"], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(images["asked"], images["augmented"], strict=True))
