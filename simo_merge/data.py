"""Which dataset a job reads and how: the ``data`` section shared by demo, evaluate and realign configs.

SIMO pools read one data set whose samples carry every task's label (the ``data`` section itself).
SISO pools (one data set per task, e.g. classification) add ``per_task``: ``task -> overrides`` of the
section for that task, e.g.::

    data:
      size: [224, 224]
      per_task:
        mnist:  {name: mnist, root: /data}
        sun397: {name: sun397, root: /data, splits: {test: val}}

Dict-valued keys (``splits``, ``num_samples``, ``options``) merge key by key over the shared section;
tasks without an entry share the section's data set.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from simo_merge.datasets import DATASETS, build_dataset
from simo_merge.protocols import PROTOCOLS


@dataclass
class DataConfig:
    """Which registered dataset, its root and options, splits and loader settings."""

    name: str = "synthetic_scenes"
    root: str | None = None
    # None (evaluate, realign, affinity): the pool's tasks
    tasks: list[str] | None = field(default_factory=lambda: ["semseg", "depth", "normal"])
    size: list[int] = field(default_factory=lambda: [64, 64])
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val", "test": "test"})
    num_samples: dict[str, int] = field(default_factory=lambda: {"train": 1600, "val": 160, "test": 240})
    options: dict[str, Any] = field(default_factory=dict)
    # how the run feeds, augments, scores and selects (simo_merge.protocols); datasets with
    # protocol-specific splits or encodings (nyuv2, cityscapes_npy, taskonomy) read the same name
    protocol: str = "default"
    batch_size: int = 32
    augment: bool = True
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)  # SISO: task -> overrides

    def __post_init__(self) -> None:
        from simo_merge.config import ConfigError

        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"data.protocol: unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}"
            )
        if "protocol" in (self.options or {}):
            raise ConfigError(
                "data.options.protocol: the protocol is set by data.protocol, not a dataset option"
            )


#: keys a ``per_task`` entry may set (everything but the task list and per_task itself)
PER_TASK_KEYS = ("name", "root", "size", "splits", "num_samples", "options", "batch_size", "augment")
_DICT_KEYS = ("splits", "num_samples", "options")


def task_data(cfg: DataConfig, task: str) -> DataConfig:
    """The data section serving ``task`` alone: its ``per_task`` entry over the shared section."""
    entry = dict(cfg.per_task.get(task) or {})
    bad = [k for k in entry if k not in PER_TASK_KEYS]
    if bad:
        from simo_merge.config import ConfigError

        hint = " (use splits: {test: NAME}, the split name per role)" if "split" in bad else ""
        raise ConfigError(
            f"data.per_task.{task}: unknown key(s) {bad}{hint}; allowed: {', '.join(PER_TASK_KEYS)}"
        )
    for key in _DICT_KEYS:
        if key in entry:
            entry[key] = {**getattr(cfg, key), **dict(entry[key] or {})}
    return replace(cfg, **entry, tasks=[task], per_task={})


def task_groups(cfg: DataConfig, tasks: list[str]) -> list[tuple[DataConfig, list[str]]]:
    """(data section, tasks it serves): one group for the shared section (SIMO), one per ``per_task``
    entry (SISO); a ``per_task`` entry for a task outside ``tasks`` is an error."""
    from simo_merge.config import ConfigError

    extra = [t for t in cfg.per_task if t not in tasks]
    if extra:
        raise ConfigError(f"data.per_task has task(s) {extra} that are not among the tasks {tasks}")
    shared = [t for t in tasks if t not in cfg.per_task]
    groups = [(replace(cfg, tasks=shared, per_task={}), shared)] if shared else []
    return groups + [(task_data(cfg, t), [t]) for t in tasks if t in cfg.per_task]


def build_task_splits(
    cfg: DataConfig, tasks: list[str], role: str, seed: int, cache_dir: Path | None = None
) -> list[tuple[Any, list[str]]]:
    """(dataset of split ``role``, the tasks it serves) per group of :func:`task_groups`."""
    return [(build_split(c, role, seed, cache_dir), ts) for c, ts in task_groups(cfg, tasks)]


def data_label(cfg: DataConfig, task: str | None = None) -> str:
    """The name of the data set serving ``task`` (or the shared one), for reports and cache keys."""
    return (task_data(cfg, task) if task in cfg.per_task else cfg).name


def build_split(cfg: DataConfig, role: str, seed: int, cache_dir: Path | None = None):
    """The dataset of split ``role`` ("train", "val", "test") as ``cfg`` describes it."""
    from simo_merge.datasets.transforms import JointTransform

    if role not in cfg.splits:
        raise KeyError(f"data.splits has no {role!r} entry: {cfg.splits}")
    kwargs = dict(cfg.options)
    # datasets whose splits or encodings depend on the protocol take it; the others have one reading
    if "protocol" in inspect.signature(DATASETS.get(cfg.name)).parameters:
        kwargs["protocol"] = cfg.protocol
    if cfg.name == "synthetic_scenes":
        kwargs.update(
            size=tuple(cfg.size),
            num_samples=cfg.num_samples.get(role),
            seed=seed,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    # seeded so that a run (augmentation included) is reproducible from its config
    transform = JointTransform(size=tuple(cfg.size), train=role == "train" and cfg.augment, seed=seed)
    return build_dataset(
        cfg.name, root=cfg.root, split=cfg.splits[role], tasks=cfg.tasks, transform=transform, **kwargs
    )
