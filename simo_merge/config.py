"""Typed, validated configs: YAML files + ``key=value`` overrides -> dataclass instances (omegaconf).

omegaconf's structured configs give type checking and unknown-key errors for free; this module only
adds the file name to those errors and turns the result into plain dataclass objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
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
    """Where the experts come from: a pool folder, explicit checkpoint files, or the generated toy pool.

    ``kind`` is inferred from the keys given (``dir`` -> a folder, ``base``/``experts`` -> files); the toy
    pool is used only when asked for by name (``kind: toy``). See :mod:`simo_merge.pool.spec`.
    """

    kind: str | None = None  # "dir" | "files" | "toy"; None: inferred from dir / base + experts
    dir: str | None = None  # a pool folder (theta0, <task>, <task>_head safetensors)
    base: str | None = None
    experts: dict[str, str] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    tasks: list[str] | None = None  # a subset of the pool's tasks (default: all); toy: the tasks made
    allow_pickle: bool = False
    # toy pool only: experts = θ0 + random task vectors (a shared part + a task-specific part)
    seed: int = 0
    scale: float = 0.05
    shared: float = 0.5

    def validate(self) -> None:
        pool_kind(self)


POOL_KINDS = ("dir", "files", "toy")
POOL_HOW = (
    "give a pool folder (pool.dir=DIR), or files (pool.base=θ0 file and "
    "pool.experts.<task>=file, optional pool.heads.<task>=file), or pool.kind=toy for the generated pool"
)


def pool_kind(pool: PoolConfig) -> str:
    """``dir``, ``files`` or ``toy``: which kind of pool the keys describe; a ConfigError names the keys
    that are missing or mixed."""
    folder = pool.dir
    files = [
        k
        for k, v in (("pool.base", pool.base), ("pool.experts", pool.experts), ("pool.heads", pool.heads))
        if v
    ]
    kind = pool.kind
    if kind is not None and kind not in POOL_KINDS:
        raise ConfigError(f"pool.kind must be one of {list(POOL_KINDS)} (or unset), got {kind!r}")
    if kind == "toy":
        given = files + (["pool.dir"] if folder else [])
        if given:
            raise ConfigError(
                f"pool.kind=toy generates its own experts and cannot be combined with {', '.join(given)}; "
                "drop pool.kind=toy to use your files"
            )
        return "toy"
    if folder is not None and files:
        raise ConfigError(
            f"a pool is either a folder (pool.dir={folder!r}) or files ({', '.join(files)}), not both"
        )
    if kind == "dir" and folder is None:
        raise ConfigError("pool.kind=dir needs pool.dir=DIR")
    if kind == "files" and folder is not None:
        raise ConfigError(f"pool.kind=files takes pool.base/pool.experts, not a folder ({folder!r})")
    if folder is not None:
        return "dir"
    if files or kind == "files":
        missing = [k for k, v in (("pool.base", pool.base), ("pool.experts", pool.experts)) if not v]
        if missing:
            raise ConfigError(
                "a files pool needs pool.base (θ0) and pool.experts.<task>=<file>; "
                f"missing {', '.join(missing)}"
            )
        return "files"
    raise ConfigError(f"no pool given: {POOL_HOW}")


REPLACED_KEYS = ("kwargs",)


def _merge_replacing_kwargs(base: Any, update: Any) -> Any:
    """``OmegaConf.merge`` except that a mapping given for a ``kwargs`` key replaces the one below it.

    Constructor kwargs belong together: the default tiny ViT's ``encoder.kwargs`` must not leak
    ``patch_size: 8`` into a DINOv2 config that sets only ``img_size``. (:func:`load_config` applies this
    to a YAML file and to ``...kwargs={...}`` overrides; a dotted ``encoder.kwargs.img_size=...`` override
    still updates one entry.)
    """

    def clear(node: Any, upd: Any) -> None:
        if not (OmegaConf.is_dict(node) and OmegaConf.is_dict(upd)):
            return
        for key in upd:
            if key not in node:
                continue
            if key in REPLACED_KEYS and OmegaConf.is_dict(upd[key]) and OmegaConf.is_dict(node[key]):
                for old in list(node[key]):
                    if old not in upd[key]:
                        del node[key][old]
            else:
                clear(node[key], upd[key])

    clear(base, update)
    return OmegaConf.merge(base, update)


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
            try:
                loaded = OmegaConf.load(path)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from err
            except UnicodeDecodeError as err:
                raise ConfigError(f"{path}: not a text file ({err})") from err
            if not isinstance(loaded, DictConfig):
                raise ConfigError(f"{path}: the top level must be a mapping of keys, got a list")
            cfg = _merge_replacing_kwargs(cfg, loaded)
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            where = f"{where} + overrides {overrides}"
            for item in overrides:  # ``encoder.kwargs={...}`` replaces; ``encoder.kwargs.x=1`` updates
                key = item.split("=", 1)[0]
                if key.rsplit(".", 1)[-1] in REPLACED_KEYS:
                    cfg = _merge_replacing_kwargs(cfg, OmegaConf.from_dotlist([item]))
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
