"""Training augmentation is a per-task-kind policy: dense tasks flip as before, classification never
unless ``data.augment=true`` asks (a mirrored digit is another glyph); ``false`` turns it off for all."""

from __future__ import annotations

import dataclasses

from simo_merge.data import DataConfig, augmentation, build_split
from tests.helpers.idx_files import write_idx_classification

DENSE = DataConfig(size=[32, 32], num_samples={"train": 4, "val": 2, "test": 2})


def test_classification_is_not_flipped_unless_asked(tmp_path):
    write_idx_classification(tmp_path, 3, 12, {"train": 6, "val": 3}, seed=0)
    digits = DataConfig(name="idx", root=str(tmp_path), tasks=["digits"], size=[16, 16])
    train = build_split(digits, "train", 0)
    assert train.transform.train is False  # no flip: the task-kind policy for classification
    assert augmentation(digits, train.task_specs) == "none (task-kind policy)"
    asked = dataclasses.replace(digits, augment=True)
    assert build_split(asked, "train", 0).transform.train is True
    assert augmentation(asked, train.task_specs) == "hflip p=0.5 (data.augment=true)"
    assert build_split(asked, "val", 0).transform.train is False  # only the train split is augmented


def test_dense_tasks_flip_as_before(tmp_path):
    train = build_split(DENSE, "train", 0, tmp_path)
    assert train.transform.train is True
    assert augmentation(DENSE, train.task_specs) == "hflip p=0.5 (task-kind policy)"
    off = dataclasses.replace(DENSE, augment=False)
    assert build_split(off, "train", 0, tmp_path).transform.train is False
