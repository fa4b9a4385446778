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

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file, key and value."""


@dataclass
class EncoderConfig:
    """Which encoder to build: a registry name (``timm``/``open_clip``), a model name and its kwargs.

    θ0's weights: ``checkpoint`` (a file: safetensors, or ``.pt/.pth/.bin`` read with weights_only) or
    ``pretrained`` (``true``, a tag such as ``lvd142m``/``openai``, or a Hugging Face repository), found in
    the local caches only; neither: the demo pretrains θ0 itself (masked reconstruction).
    """

    library: str = "timm"
    arch: str = "vit_tiny_patch16_224"
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    pretrained: str | None = None

    def weights(self) -> dict[str, Any]:
        """``{"checkpoint": ..., "pretrained": ...}`` as given (also read from ``kwargs``), empty if none."""
        from simo_merge.encoders.pretrained import parse_pretrained

        checkpoint = self.checkpoint or self.kwargs.get("checkpoint")
        pretrained = parse_pretrained(self.pretrained) or parse_pretrained(self.kwargs.get("pretrained"))
        if checkpoint and pretrained:
            raise ConfigError(
                f"encoder: give either checkpoint ({checkpoint}) or pretrained ({pretrained}), not both"
            )
        if checkpoint:
            return {"checkpoint": str(checkpoint)}
        return {"pretrained": pretrained} if pretrained else {}

    def architecture_kwargs(self) -> dict[str, Any]:
        """``kwargs`` without the weight options: what rebuilds the bare architecture."""
        return {k: v for k, v in self.kwargs.items() if k not in ("checkpoint", "pretrained")}


@dataclass
class PoolConfig:
    """Where the experts come from: checkpoint ``files``, or a generated ``toy`` pool for smoke runs."""

    kind: str = "files"
    base: str | None = None
    experts: dict[str, str] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    allow_pickle: bool = False
    # toy pool only: experts = θ0 + random task vectors (a shared part + a task-specific part)
    tasks: list[str] = field(default_factory=lambda: ["semseg", "depth", "normal"])
    seed: int = 0
    scale: float = 0.05
    shared: float = 0.5

    def validate(self) -> None:
        if self.kind not in ("files", "toy"):
            raise ConfigError(f"pool.kind must be 'files' or 'toy', got {self.kind!r}")
        if self.kind == "files" and (self.base is None or not self.experts):
            raise ConfigError("pool.kind=files needs pool.base and pool.experts (task: path)")


@dataclass
class MethodConfig:
    """A merge method from the registry, its hyper-parameters and task-vector transforms (e.g. dare)."""

    name: str = "task_arithmetic"
    params: dict[str, Any] = field(default_factory=dict)
    transforms: dict[str, Any] = field(default_factory=dict)


@dataclass
class MergeJobConfig:
    """``simo-merge merge``: pool + method -> merged checkpoint in ``output_dir``."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    output_dir: str = "runs/merge"

    def validate(self) -> None:
        self.pool.validate()


def _clear_encoder_kwargs(cfg: Any) -> None:
    """``encoder.kwargs`` given as a whole (in a YAML file or as ``encoder.kwargs={...}``) replaces the
    earlier one instead of merging into it: another architecture's kwargs (e.g. the demo's tiny
    ``patch_size: 8, depth: 6``) must not leak into ``vit_small_patch14_dinov2``. ``encoder.kwargs.depth=4``
    still changes one key."""
    if "encoder" in cfg and "kwargs" in cfg.encoder:
        cfg.encoder.kwargs = {}


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
            loaded = OmegaConf.load(path)
            if "kwargs" in (loaded.get("encoder") or {}):
                _clear_encoder_kwargs(cfg)
            cfg = OmegaConf.merge(cfg, loaded)
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            where = f"{where} + overrides {overrides}"
            if any(o.split("=", 1)[0].strip() == "encoder.kwargs" for o in overrides):
                _clear_encoder_kwargs(cfg)
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
