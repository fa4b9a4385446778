"""Typed, validated configs: YAML files + ``key=value`` overrides -> dataclass instances (omegaconf).

omegaconf's structured configs give type checking and unknown-key errors for free; this module only
adds the file name to those errors and turns the result into plain dataclass objects.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
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


_POSITIVE = ("> 0", lambda v: v > 0)
_NON_NEGATIVE = (">= 0", lambda v: v >= 0)
_COUNT = (">= 1", lambda v: v >= 1)
#: the range of every numeric setting by its key's last part, wherever it occurs (job sections, realign
#: and method params); lists and per-task mappings under the key are checked element by element
NUMBER_RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    **dict.fromkeys(("lr", "lr_encoder", "lr_head", "probe_lr_head", "epochs", "clip_grad"), _POSITIVE),
    **dict.fromkeys(
        ("weight_decay", "cache_memory_mb", "steps", "finetune_steps", "probe_steps", "num_workers", "clip"),
        _NON_NEGATIVE,
    ),
    **dict.fromkeys(
        (
            "threads",
            "batch_size",
            "rank",
            "batches_per_task",
            "num_nodes",
            "image_size",
            "max_unlabelled",
            "size",
        ),
        _COUNT,
    ),
    "scale": _NON_NEGATIVE,
    "seed": ("in [0, 2**32)", lambda v: 0 <= v < 2**32),
    "fraction": ("in (0, 1]", lambda v: 0 < v <= 1),
    "warmup": ("in [0, 1)", lambda v: 0 <= v < 1),
    "mask_ratio": ("in [0, 1)", lambda v: 0 <= v < 1),
    "shared": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "k": ("in (0, 100]", lambda v: 0 < v <= 100),
    "cluster_threshold": ("in [0, 2] (a distance 1 - cos)", lambda v: 0 <= v <= 2),
}
#: merge coefficients λ (a method's ``lam``, the grids swept); |λ| above :data:`MAX_LAMBDA` is almost
#: always a typo, so it needs ``allow_large_lambda=true``
LAMBDA_KEYS = ("lam", "lam_grid", "grid", "transfer_lambdas", "select_lambdas")
MAX_LAMBDA = 10.0


def check_numbers(cfg: Any) -> None:
    """Raise ConfigError naming the key of the first non-finite number in ``cfg`` (dataclasses, mappings,
    lists), or one outside the range :data:`NUMBER_RULES` gives its key, or a λ beyond ±MAX_LAMBDA unless
    ``cfg.allow_large_lambda``."""
    large_ok = bool(getattr(cfg, "allow_large_lambda", False))

    def check(key: str, name: str, value: Any) -> None:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        if isinstance(value, (int, float)):
            problem = None
            if not math.isfinite(value):
                problem = "must be a finite number"
            elif name in NUMBER_RULES and not NUMBER_RULES[name][1](value):
                problem = f"must be {NUMBER_RULES[name][0]}"
            elif name in LAMBDA_KEYS and abs(value) > MAX_LAMBDA and not large_ok:
                problem = f"|λ| > {MAX_LAMBDA:g}; set allow_large_lambda=true if you mean it"
            if problem:
                raise ConfigError(f"{key}={value!r}: {problem}")
            return
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                check(f"{key}[{i}]", name, item)
        elif dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                check(f"{key}.{f.name}" if key else f.name, f.name, getattr(value, f.name))
        elif isinstance(value, Mapping):
            for child, item in value.items():  # a per-task mapping of λ (``lam: {task: λ}``) keeps λ's rule
                check(
                    f"{key}.{child}" if key else str(child), name if name in LAMBDA_KEYS else str(child), item
                )

    check("", "", cfg)


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
            try:
                cfg = _merge_replacing_kwargs(cfg, loaded)
            except (TypeError, ValueError) as err:  # e.g. a mapping given for a list
                raise ConfigError(f"{path}: a value does not fit its key's type: {err}") from err
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            where = f"{where} + overrides {overrides}"
            for item in overrides:  # ``encoder.kwargs={...}`` replaces; ``encoder.kwargs.x=1`` updates
                key = item.split("=", 1)[0]
                update = OmegaConf.from_dotlist([item])
                try:
                    if key.rsplit(".", 1)[-1] in REPLACED_KEYS:
                        cfg = _merge_replacing_kwargs(cfg, update)
                    cfg = OmegaConf.merge(cfg, update)
                except (TypeError, ValueError) as err:  # e.g. a mapping given for a list
                    raise ConfigError(f"{where}: invalid value for key {key!r}: {err}") from err
        obj = OmegaConf.to_object(cfg)
        check_numbers(obj)
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
