"""One pool spec for every command (``merge``, ``realign``, ``evaluate``, ``affinity``) and its resolver.

A pool is given in one of three ways, the same on every command::

    pool.dir=runs/demo/experts            # a pool folder: theta0 + <task> + <task>_head .safetensors
    pool.base=theta0.safetensors pool.experts.a=a.safetensors pool.heads.a=a_head.safetensors
    pool.kind=toy                         # generated experts (merge smoke runs); only when named

Giving ``pool.base``/``pool.experts`` means a files pool, a folder means a folder pool; mixing them (or
either with ``pool.kind=toy``) is an error. ``pool.tasks`` picks a subset of the pool's tasks (default:
all of them). The encoder architecture is the pool's own: the ``encoder`` entry of θ0's JSON sidecar or
of its safetensors metadata; ``encoder.*`` given by the user must agree with it, and is required only
when the pool carries none.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simo_merge.config import ConfigError, EncoderConfig, PoolConfig, pool_kind
from simo_merge.data import check_image_size
from simo_merge.io.checkpoint import load_state, read_sidecar
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.protocols import get_protocol


def describe(pool: PoolConfig) -> dict[str, Any]:
    """The pool spec as recorded in sidecars and metrics (kind + its paths)."""
    kind = pool_kind(pool)
    if kind == "dir":
        return {"kind": "dir", "dir": str(pool.dir)}
    if kind == "files":
        return {"kind": "files", "base": pool.base, "experts": dict(pool.experts), "heads": dict(pool.heads)}
    return {"kind": "toy", "seed": pool.seed, "scale": pool.scale, "shared": pool.shared}


def _canonical(cfg: dict[str, Any]) -> str:
    return json.dumps(
        {"library": cfg.get("library"), "arch": cfg.get("arch"), "kwargs": cfg.get("kwargs") or {}},
        sort_keys=True,
    )


def stored_encoder_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The encoder config stored with a checkpoint: its JSON sidecar's ``encoder``, else an ``encoder``
    entry in its safetensors metadata (JSON, under ``simo_merge`` or ``encoder``); None when absent."""
    found = read_sidecar(path).get("encoder")
    if found:
        return dict(found)
    if Path(path).suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - unreadable files are reported by load_state
        return None
    for key in ("simo_merge", "encoder"):
        try:
            value = json.loads(meta.get(key, "null"))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            value = value.get("encoder", value if key == "encoder" else None)
            if isinstance(value, dict) and "arch" in value:
                return dict(value)
    return None


def check_encoder(
    found: dict[str, Any] | None, given: EncoderConfig | None, where: str
) -> dict[str, Any] | None:
    """The pool's encoder config; ``given`` (the user's ``encoder.*``) must equal it when both exist."""
    if given is None:
        return found
    # the architecture only: where θ0's weights came from is not part of the pool's encoder
    mine = {k: v for k, v in asdict(given).items() if k not in ("checkpoint", "pretrained", "input_check")}
    if found is None:
        return mine
    if _canonical(found) != _canonical(mine):
        raise ConfigError(
            f"encoder given on the command line ({_canonical(mine)}) differs from the pool's encoder in "
            f"{where} ({_canonical(found)}); drop encoder.* to use the pool's, or fix the pool"
        )
    return dict(found)


def pool_tasks(kind: str, pool: PoolConfig, folder: str | None) -> list[str]:
    """Every task the pool has an expert for (toy: the tasks it would generate)."""
    if kind == "dir":
        root = Path(folder)
        if not (root / "theta0.safetensors").is_file():
            raise FileNotFoundError(f"pool folder {root}: no theta0.safetensors (not a pool folder)")
        found = sorted(p.name[: -len("_head.safetensors")] for p in root.glob("*_head.safetensors"))
        if not found:
            raise FileNotFoundError(f"pool folder {root}: no <task>_head.safetensors files")
        return found
    if kind == "files":
        return list(pool.experts)
    return list(pool.tasks or ["semseg", "depth", "normal"])


def select_tasks(available: list[str], requested: list[str] | None, where: str) -> list[str]:
    """``requested`` (default: ``available``), each of which must have an expert."""
    if not requested:
        return list(available)
    missing = [t for t in requested if t not in available]
    if missing:
        raise ConfigError(
            f"task(s) {missing} have no expert in the pool ({where}); its tasks: {', '.join(available)}"
        )
    return list(requested)


def _load_heads(pool: ExpertPool, heads: dict[str, str], allow_pickle: bool) -> None:
    """Head files: state + the ``head`` config in the sidecar (as ``save_expert`` writes), or a bare
    zero-shot classifier ``weight`` [C, D] (+ ``bias`` [C]) as CLIP head files hold."""
    from simo_merge.heads.zeroshot import ZeroShotHead, placeholder_layout
    from simo_merge.tasks import classification

    for task in pool.tasks:
        if task not in heads:
            continue
        path = heads[task]
        state = load_state(path, allow_pickle=allow_pickle)
        config = read_sidecar(path).get("head")
        if config is None:
            weight = state.get("weight")
            if weight is None or weight.dim() != 2 or set(state) - {"weight", "bias"}:
                raise ConfigError(
                    f"pool.heads.{task}={path}: no 'head' config in its sidecar and not a zero-shot "
                    "classifier (a 2-D 'weight' [classes, dim] and optional 'bias'); "
                    f"keys: {sorted(state)[:5]}"
                )
            c, d = (int(v) for v in weight.shape)
            head = ZeroShotHead(classification(task, c), placeholder_layout(d), ["final"], d, "bias" in state)
            config = head.config()
        pool.heads[task] = state
        pool.head_configs[task] = config


def _load_files_pool(pool: PoolConfig, chosen: list[str], encoder: EncoderConfig | None) -> ExpertPool:
    """A files pool: θ0 and the chosen experts from their files, heads from ``pool.heads``."""
    enc_cfg = check_encoder(stored_encoder_config(pool.base), encoder, f"{pool.base}'s sidecar")
    unknown = [t for t in pool.heads if t not in pool.experts]
    if unknown:
        raise ConfigError(f"pool.heads has task(s) {unknown} without an expert in pool.experts")
    result = ExpertPool.from_files(
        pool.base,
        {t: pool.experts[t] for t in chosen},
        None,
        pool.allow_pickle,
        encoder_config=enc_cfg,
    )
    _load_heads(result, pool.heads, pool.allow_pickle)
    return result


def _check_needs(result: ExpertPool, need_heads: bool, need_encoder: bool) -> None:
    """Refuse a pool that lacks the heads or encoder config the command needs, naming the key to give."""
    if need_heads:
        missing = [t for t in result.tasks if t not in result.head_configs]
        if missing:
            raise ConfigError(
                f"task(s) {missing} have no head: give pool.heads.<task>=<file> (a head written by "
                "train-experts, or a zero-shot classifier weight file)"
            )
    if need_encoder and not result.encoder_config:
        raise ConfigError(
            f"the pool's θ0 ({result.sources.get('base')}) records no encoder config: give "
            "encoder.library=... encoder.arch=... (and encoder.kwargs=...) to rebuild it"
        )


def resolve_pool(
    pool: PoolConfig,
    encoder: EncoderConfig | None = None,
    tasks: list[str] | None = None,
    need_heads: bool = False,
    need_encoder: bool = False,
) -> ExpertPool:
    """Load the pool the spec names, over ``tasks`` (default: ``pool.tasks`` or all of the pool's).

    ``need_heads``/``need_encoder``: the command rebuilds models, so every task needs a head and the pool
    an encoder config; a ConfigError says which key to give otherwise.
    """
    kind = pool_kind(pool)
    folder = pool.dir
    where = {"dir": f"pool folder {folder}", "files": "pool.experts", "toy": "pool.kind=toy"}[kind]
    if tasks and pool.tasks and list(tasks) != list(pool.tasks):
        raise ConfigError(f"pool.tasks={pool.tasks} and the tasks asked for ({tasks}) disagree; give one")
    chosen = select_tasks(pool_tasks(kind, pool, folder), tasks or pool.tasks, where)
    if kind == "toy":
        from simo_merge.pool.toy import make_toy_pool

        enc = encoder or EncoderConfig(
            "timm",
            "vit_tiny_patch16_224",
            {"img_size": 64, "patch_size": 8, "depth": 6, "embed_dim": 96, "num_heads": 3},
        )
        toy = PoolConfig(**{**asdict(pool), "tasks": chosen})
        return make_toy_pool(enc, toy)
    if kind == "dir":
        from simo_merge.pool.folder import load_pool_dir

        base_file = Path(folder) / "theta0.safetensors"
        enc_cfg = check_encoder(stored_encoder_config(base_file), encoder, str(base_file))
        result = load_pool_dir(folder, chosen)
        result.encoder_config = dict(enc_cfg or {})
    else:
        result = _load_files_pool(pool, chosen, encoder)
    _check_needs(result, need_heads, need_encoder)
    return result


def check_checkpoint_encoder(pool: ExpertPool, checkpoint: str | os.PathLike) -> None:
    """A merged checkpoint whose sidecar names another encoder than the pool's is refused."""
    recorded = read_sidecar(checkpoint).get("encoder")
    if recorded and pool.encoder_config and _canonical(recorded) != _canonical(pool.encoder_config):
        raise ConfigError(
            f"checkpoint {checkpoint} was merged for encoder {_canonical(recorded)}, but the pool's is "
            f"{_canonical(pool.encoder_config)}"
        )


def apply_normalisation(pool: ExpertPool, protocol: str) -> ExpertPool:
    """Set the input normalisation of the pool's encoders to ``protocol``'s (``data.protocol``); a pool
    whose θ0 sidecar records another one (its experts were trained so) is a ConfigError."""
    wanted = get_protocol(protocol).normalisation
    recorded = pool.encoder_config.get("normalisation")
    if recorded is not None and recorded != wanted:
        raise ConfigError(
            f"data.protocol={protocol!r} feeds the encoder with {wanted!r} normalisation, but the pool "
            f"({pool.sources.get('base', 'theta0')}) was trained with {recorded!r}; use the pool's protocol"
        )
    pool.encoder_config = {**pool.encoder_config, "normalisation": wanted}
    return pool


def load_job_pool(cfg: Any) -> ExpertPool:
    """The pool of a job config with ``pool``, ``encoder`` and ``data`` (tasks: ``pool.tasks``, else
    ``data.tasks``, else all of the pool's), with heads and an encoder config to rebuild models whose
    input normalisation is ``data.protocol``'s."""
    pool = resolve_pool(cfg.pool, cfg.encoder, cfg.data.tasks, need_heads=True, need_encoder=True)
    check_image_size(cfg.data, pool.encoder_config, f"the pool's encoder kwargs ({pool.sources.get('base')})")
    return apply_normalisation(pool, cfg.data.protocol)
