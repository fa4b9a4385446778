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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from simo_merge.datasets import DATASETS, build_dataset
from simo_merge.protocols import PROTOCOLS, get_protocol


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
    # training augmentation (a horizontal flip, p 0.5): null = the task kinds' policy (dense tasks flip,
    # classification does not: a mirrored digit is another glyph); true / false for every task
    augment: bool | None = None
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


#: the arguments :func:`build_split` gives a data set itself (never through ``options``)
_SET_BY_LOADER = ("root", "split", "tasks", "transform", "size", "num_samples", "seed", "cache_dir")


def _sections(cfg: DataConfig) -> list[tuple[str, DataConfig]]:
    """(key, section) of the data sets a config reads: each ``per_task`` entry, else the shared section
    (with ``per_task`` given, which tasks the shared one serves is known only once the pool is read)."""
    if not cfg.per_task:
        return [("data", cfg)]
    return [(f"data.per_task.{t}", task_data(cfg, t)) for t in cfg.per_task]


def check_data_config(cfg: DataConfig) -> None:
    """A ConfigError naming the key, at start: an unknown data set, one that reads files without a
    ``root``, or ``options`` its constructor does not take (the shared section and every per_task entry)."""
    from simo_merge.config import ConfigError

    for key, section in _sections(cfg):
        if section.name not in DATASETS:
            raise ConfigError(
                f"{key}.name: unknown data set {section.name!r}; known: {', '.join(DATASETS.names())}"
            )
        params = inspect.signature(DATASETS.get(section.name)).parameters
        root = params.get("root")
        if section.root is None and root is not None and root.default is inspect.Parameter.empty:
            raise ConfigError(f"{key}.root: data set {section.name!r} reads files; give {key}.root=DIR")
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            accepted = [n for n in params if n not in _SET_BY_LOADER]
            unknown = [k for k in section.options if k not in accepted]
            if unknown:
                raise ConfigError(
                    f"{key}.options: data set {section.name!r} takes no option(s) {unknown}; "
                    f"accepted: {accepted}"
                )


def check_image_size(cfg: DataConfig, encoder: Mapping[str, Any], where: str) -> None:
    """A ConfigError naming ``data.size`` when the encoder's ``kwargs`` (``where`` names them) fix an input
    size it differs from (``img_size``) or a patch size it is no multiple of (``patch_size``)."""
    from simo_merge.config import ConfigError

    kwargs = dict(encoder.get("kwargs") or {})
    img, patch = kwargs.get("img_size"), kwargs.get("patch_size")
    for key, section in _sections(cfg):
        size = [int(v) for v in section.size]
        if img is not None and not kwargs.get("dynamic_img_size"):
            want = [int(img)] * 2 if isinstance(img, int) else [int(v) for v in img]
            if size != want:
                raise ConfigError(f"{key}.size={size}: the encoder takes {want} images ({where}.img_size)")
        elif isinstance(patch, int) and any(v % patch for v in size):
            raise ConfigError(
                f"{key}.size={size}: not a multiple of the encoder's patch size {patch} ({where}.patch_size)"
            )


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


def data_read(cfg: DataConfig, task: str, role: str) -> dict[str, Any]:
    """What ``task`` reads for split ``role``: the data set (its ``per_task`` entry, else the shared
    section), its root and its own name of the split; the record every sidecar and metrics file keeps."""
    section = task_data(cfg, task) if task in cfg.per_task else cfg
    return {"dataset": section.name, "root": section.root, "split": section.splits.get(role, role)}


def data_label(cfg: DataConfig, task: str | None = None) -> str:
    """The name of the data set serving ``task`` (or the shared one), for reports and cache keys."""
    return (task_data(cfg, task) if task in cfg.per_task else cfg).name


def augments(cfg: DataConfig, specs: dict[str, Any]) -> bool:
    """Whether a training split of tasks ``specs`` (name -> TaskSpec) is augmented: ``cfg.augment`` when
    set, else the task-kind policy (flip when any task is dense, never for classification alone)."""
    if cfg.augment is not None:
        return bool(cfg.augment)
    return any(spec.kind != "classification" for spec in specs.values())


def augmentation(cfg: DataConfig, specs: dict[str, Any]) -> str:
    """The training augmentation of tasks ``specs`` in words, for the start-up lines and sidecars."""
    pipeline = {"resize_flip": "hflip p=0.5", "scale_crop_flip": "scale {1, 1.2, 1.5} + crop + hflip p=0.5"}
    how = pipeline[get_protocol(cfg.protocol).augmentation] if augments(cfg, specs) else "none"
    why = f"data.augment={str(cfg.augment).lower()}" if cfg.augment is not None else "task-kind policy"
    return f"{how} ({why})"


def build_split(cfg: DataConfig, role: str, seed: int, cache_dir: Path | None = None):
    """The dataset of split ``role`` ("train", "val", "test") as ``cfg`` describes it; the train split (and
    the val split where the protocol says so) is augmented as :func:`augments` decides from its tasks'
    kinds (known once the dataset is built)."""
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
    # seeded so that a run (augmentation included) is reproducible from its config. The protocol picks the
    # pipeline (a dataset may name its own for a protocol) and whether the val split is augmented too;
    # whether a split is augmented at all follows augments() (the tasks' kinds, known once it is built);
    # under "native_pad" the splits left unaugmented keep their stored size (the model pads them)
    protocol = get_protocol(cfg.protocol)
    own = getattr(DATASETS.get(cfg.name), "protocol_augmentation", {})
    pipeline = own.get(cfg.protocol, protocol.augmentation)
    transform = JointTransform(size=tuple(cfg.size), train=False, seed=seed, augmentation=pipeline)
    dataset = build_dataset(
        cfg.name, root=cfg.root, split=cfg.splits[role], tasks=cfg.tasks, transform=transform, **kwargs
    )
    augmented_role = role == "train" or (role == "val" and protocol.augment_val)
    transform.train = augmented = augmented_role and augments(cfg, dataset.task_specs)
    if protocol.eval_size == "native_pad" and not augmented:
        transform.size = None
    return dataset
