"""Unlabelled (optionally labelled) inputs per task, as realignment and data-dependent merges read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class RealignInputs:
    """Per-task inputs (SIMO: the same tensor for every task) and, for ``supervised``, their labels.

    ``labels[task]`` maps batch keys (``task``, ``f"{task}_mask"``) to tensors indexed like the images.
    ``name`` identifies the input set in cache keys (e.g. ``"synthetic_scenes/test"``).
    """

    images: dict[str, Tensor]
    labels: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    name: str = "inputs"


def split_inputs(splits: list[tuple[Any, list[str]]], name: str, with_labels: bool = False) -> RealignInputs:
    """Each task's inputs from its own data set (SIMO tasks sharing one data set share one tensor)."""
    images: dict[str, Tensor] = {}
    labels: dict[str, dict[str, Tensor]] = {}
    for dataset, tasks in splits:
        part = dataset_inputs(dataset, tasks, name, with_labels)
        images.update(part.images)
        labels.update(part.labels)
    return RealignInputs(images, labels, name)


def dataset_inputs(dataset: Any, tasks: list[str], name: str, with_labels: bool = False) -> RealignInputs:
    """Stack a SIMO dataset split into one image tensor shared by every task (+ labels if asked)."""
    samples = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([s["image"] for s in samples])
    labels: dict[str, dict[str, Tensor]] = {}
    if with_labels:
        for t in tasks:
            labels[t] = {t: torch.stack([s[t] for s in samples])}
            if f"{t}_mask" in samples[0]:
                labels[t][f"{t}_mask"] = torch.stack([s[f"{t}_mask"] for s in samples])
    return RealignInputs({t: images for t in tasks}, labels, name)
