"""Typed, validated configs: YAML files + ``key=value`` overrides -> dataclass instances (omegaconf).

omegaconf's structured configs give type checking and unknown-key errors for free; this module only
adds the file name to those errors and turns the result into plain dataclass objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from simo_merge.data import DataConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file, key and value."""


@dataclass
class EncoderConfig:
    """Which encoder to build: a registry name (``timm``/``open_clip``), a model name and its kwargs."""

    library: str = "timm"
    arch: str = "vit_tiny_patch16_224"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PoolConfig:
    """Where the experts come from: a pool folder, explicit checkpoint files, or the generated toy pool.

    ``kind`` is inferred from the keys given (``dir`` -> a folder, ``base``/``experts`` -> files); the toy
    pool is used only when asked for by name (``kind: toy``). See :mod:`simo_merge.pool_spec`.
    """

    kind: str | None = None  # "dir" | "files" | "toy"; None: inferred from dir / base + experts
    dir: str | None = None  # a pool folder (theta0, <task>, <task>_head safetensors); same as pool_dir=
    base: str | None = None
    experts: dict[str, str] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    tasks: list[str] | None = None  # a subset of the pool's tasks (default: all); toy: the tasks made
    allow_pickle: bool = False
    # toy pool only: experts = θ0 + random task vectors (a shared part + a task-specific part)
    seed: int = 0
    scale: float = 0.05
    shared: float = 0.5

    def resolve_kind(self, pool_dir: str | None = None) -> str:
        """``dir``, ``files`` or ``toy``; a ConfigError names the keys when they are missing or mixed."""
        from simo_merge.pool_spec import pool_kind

        return pool_kind(self, pool_dir)

    def validate(self) -> None:
        self.resolve_kind()


@dataclass
class MethodConfig:
    """A merge method from the registry, its hyper-parameters and task-vector transforms (e.g. dare)."""

    name: str = "task_arithmetic"
    params: dict[str, Any] = field(default_factory=dict)
    transforms: dict[str, Any] = field(default_factory=dict)


@dataclass
class MergeJobConfig:
    """``simo-merge merge``: pool + method -> merged checkpoint in ``output_dir``."""

    pool: PoolConfig = field(default_factory=PoolConfig)
    pool_dir: str | None = None  # shorthand for pool.dir
    # the encoder architecture: read from the pool (θ0's sidecar); given here, it must match the pool's
    # (the toy pool is built from it; default: a tiny timm ViT)
    encoder: EncoderConfig | None = None
    method: MethodConfig = field(default_factory=MethodConfig)
    # unlabelled inputs for data-dependent methods (adamerging, fisher, regmean): the ``data`` section of
    # realign/evaluate (``data.per_task.<task>`` for one data set per task); its ``split`` role
    data: DataConfig | None = None  # None: data-free methods only
    split: str = "test"  # unlabelled inputs, as the papers use (and realign's default)
    seed: int = 0
    output_dir: str = "runs/merge"

    def validate(self) -> None:
        self.pool.resolve_kind(self.pool_dir)


def load_config(
    schema: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> T:
    """Merge ``schema``'s defaults, the YAML at ``path`` and ``key=value`` overrides; validate; build."""
    where = str(path) if path else "<defaults>"
    try:
        cfg = OmegaConf.structured(schema)
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            where = f"{where} + overrides {overrides}"
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        obj = OmegaConf.to_object(cfg)
        if hasattr(obj, "validate"):
            obj.validate()
        return obj
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{where}: invalid config at key {key!r}: {message}") from err
    except ConfigError as err:
        if where in str(err):
            raise
        raise ConfigError(f"{where}: {err}") from err


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (written to every run folder)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
