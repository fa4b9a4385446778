"""Which dataset a job reads and how: the ``data`` section shared by demo, evaluate and realign configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simo_merge.datasets import build_dataset


@dataclass
class DataConfig:
    """Which registered dataset, its root and options, splits and loader settings."""

    name: str = "synthetic_scenes"
    root: str | None = None
    tasks: list[str] = field(default_factory=lambda: ["semseg", "depth", "normal"])
    size: list[int] = field(default_factory=lambda: [64, 64])
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val", "test": "test"})
    num_samples: dict[str, int] = field(default_factory=lambda: {"train": 1600, "val": 160, "test": 240})
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    augment: bool = True


def build_split(cfg: DataConfig, role: str, seed: int, cache_dir: Path | None = None):
    """The dataset of split ``role`` ("train", "val", "test") as ``cfg`` describes it."""
    from simo_merge.datasets.transforms import JointTransform

    if role not in cfg.splits:
        raise KeyError(f"data.splits has no {role!r} entry: {cfg.splits}")
    kwargs = dict(cfg.options)
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
