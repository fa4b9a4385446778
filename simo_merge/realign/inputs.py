"""Which data trains a realignment, and how the run says so.

By default the adapters train on a split that is *not* the evaluated one (``split=val`` while
``eval_split=test``). The papers' setting, adapting on the unlabelled inputs of the evaluated split
(Surgery, SurgeryV2: test-time adaptation), is an explicit option, ``test_time=true``, and is named as
such in every report. Realignment inputs are never augmented unless ``augment=true`` is asked for (it
applies the training augmentation of ``split=train``, one draw per input, fixed for the run), or the
protocol augments the split (``protocol=simo`` realigns on its augmented val split, as the SIMO code).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simo_merge.data import DataConfig, build_split, data_read, task_data
from simo_merge.protocols import get_protocol

HELD_OUT = "held-out"
TEST_TIME = "test-time"


@dataclass(frozen=True)
class InputsChoice:
    """The split a realignment trains on and why it is allowed."""

    split: str  # role in ``data.splits`` ("train", "val", "test")
    dataset_split: str  # the dataset's own split name it maps to
    setting: str  # HELD_OUT, or TEST_TIME (the evaluated split's unlabelled inputs)
    labelled: bool  # objective=supervised reads its labels
    augmented: bool
    eval_split: str

    def record(self, data: DataConfig, num_inputs: Mapping[str, int]) -> dict[str, Any]:
        """What metrics.json and the adapters' sidecar store about the training inputs: the choice, and per
        task the data set actually read (``data.per_task``'s entry, else the shared one), its root, its
        own name of the split and how many inputs it gave."""
        per_task = {t: {**data_read(data, t, self.split), "num_inputs": n} for t, n in num_inputs.items()}
        return {**dataclasses.asdict(self), "per_task": per_task}


def _refuse_evaluated_split(data: DataConfig, split: str, eval_split: str, labelled: bool) -> None:
    """Refuse a training split that is the evaluated one, in the shared section or in any task's own
    (``data.per_task``: a SISO task may map the roles to other split names of its own data set)."""
    sections = [("", data)] + [(f"data.per_task.{t}: ", task_data(data, t)) for t in data.per_task]
    for where, section in sections:
        if section.splits[split] != section.splits[eval_split]:
            continue
        what = "labels" if labelled else "inputs"
        key = "label_split" if labelled else "split"
        raise ValueError(
            f"{where}{key}={split!r} (dataset split {section.splits[split]!r}) is the evaluated split "
            f"(eval_split={eval_split!r}): the adapters would train on the {what} they are judged on. "
            + (
                "Pick a held-out split, e.g. label_split=val."
                if labelled
                else "Pick a held-out split (e.g. split=val), or set test_time=true for the papers' "
                "test-time setting (unlabelled evaluation inputs, as Surgery does)."
            )
        )


def choose_inputs(
    data: DataConfig,
    split: str,
    eval_split: str,
    test_time: bool = False,
    labelled: bool = False,
    augment: bool = False,
) -> InputsChoice:
    """Resolve and check the training split: refuse the evaluated split unless ``test_time`` asks for it.

    ``test_time=true`` trains on ``eval_split``'s unlabelled inputs whatever ``split`` says; it refuses a
    labelled objective (that would fit the evaluated split's labels).
    """
    for key, role in (("split", split), ("eval_split", eval_split)):
        if role not in data.splits:
            raise ValueError(f"{key}={role!r} is not a role of data.splits {data.splits}")
    if test_time:
        if labelled:
            raise ValueError(
                "test_time=true adapts on the evaluated split's unlabelled inputs; objective=supervised "
                f"would train on its labels (eval_split={eval_split!r}). Use a held-out label_split instead."
            )
        split = eval_split
    else:
        _refuse_evaluated_split(data, split, eval_split, labelled)
    if augment and split != "train":
        raise ValueError(f"augment=true applies the training augmentation of split=train; split is {split!r}")
    return InputsChoice(
        split=split,
        dataset_split=data.splits[split],
        setting=TEST_TIME if test_time else HELD_OUT,
        labelled=labelled,
        augmented=augment or _protocol_augments(data, split),
        eval_split=eval_split,
    )


def _protocol_augments(data: DataConfig, split: str) -> bool:
    """Whether the run's protocol augments ``split`` as it does train (SIMO realigns on its augmented val
    loader: ``Protocol.augment_val``); then the data section's own augmentation setting applies."""
    return split == "val" and get_protocol(data.protocol).augment_val and data.augment is not False


def inputs_dataset(data: DataConfig, choice: InputsChoice, seed: int, cache_dir: Path | None = None) -> Any:
    """The dataset of ``choice.split``, augmented only when the choice says so (``augment=true`` on
    train, or a protocol that augments val)."""
    augment = data.augment if _protocol_augments(data, choice.split) else choice.augmented
    return build_split(dataclasses.replace(data, augment=augment), choice.split, seed, cache_dir)


def describe(info: dict[str, Any]) -> str:
    """One report line naming the split (and setting) that trained the adapters."""
    kind = "labelled" if info["labelled"] else "unlabelled"
    aug = "augmented" if info["augmented"] else "not augmented"
    groups: dict[tuple[str, str, int], list[str]] = {}
    for task, read in info["per_task"].items():
        groups.setdefault((read["dataset"], read["split"], read["num_inputs"]), []).append(task)
    where = "; ".join(
        f"{name}/{info['split']} (dataset split {split!r}): {n} {kind} inputs"
        + (f" ({', '.join(tasks)})" if len(groups) > 1 else "")
        for (name, split, n), tasks in groups.items()
    )
    if info["setting"] == TEST_TIME:
        return (
            f"Adapters trained on {where}, {aug}; test-time setting "
            f"(test_time=true): these are the inputs of the evaluated split {info['eval_split']!r}, as in "
            "the Surgery papers."
        )
    return f"Adapters trained on {where}, {aug}; held out from the evaluated split {info['eval_split']!r}."
