"""A pool on disk: ``theta0.safetensors``, ``<task>.safetensors`` (encoder) and ``<task>_head.safetensors``.

Each head's sidecar carries its config, so :func:`load_pool_dir` rebuilds heads without any code
knowledge of how they were trained. Every file is written with the atomic safetensors writer, and every
read checks each file's header (task, role) and content hash, so a tampered, swapped or copied file stops
the run naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from simo_merge.heads import TaskHead, head_from_config
from simo_merge.io.checkpoint import load_state, read_sidecar, save_state
from simo_merge.io.provenance import checked_state
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.runtime import on_rank_zero

EXPERT_ROLE, HEAD_ROLE = "expert encoder", "expert head"


def save_expert(
    pool_dir: str | os.PathLike,
    task: str,
    encoder_state: dict[str, Tensor],
    head: TaskHead,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write an expert's encoder, then its head: the head file (what :func:`load_pool_dir` lists) is the
    expert's commit marker, so a crash between the two never leaves a head without its encoder."""
    pool_dir = Path(pool_dir)
    meta = dict(meta or {})
    save_state(
        pool_dir / f"{task}.safetensors",
        encoder_state,
        {"task": task, "role": EXPERT_ROLE, **meta},
        on_rank_zero(),
    )
    save_state(
        pool_dir / f"{task}_head.safetensors",
        head.state_dict(),
        {"head": head.config(), "task": task, "role": HEAD_ROLE, **meta},
        on_rank_zero(),
    )


def load_head(path: str | os.PathLike) -> TaskHead:
    """Rebuild a head from its safetensors file and the config in its sidecar."""
    meta = read_sidecar(path)
    if "head" not in meta:
        raise KeyError(f"{path}: sidecar has no 'head' config; was it written by save_expert?")
    head = head_from_config(meta["head"])
    head.load_state_dict(load_state(path))
    return head.eval()


def load_pool_dir(pool_dir: str | os.PathLike, tasks: list[str] | None = None) -> ExpertPool:
    """Load θ0, the experts and their heads from ``pool_dir`` (tasks default: every ``*_head`` file)."""
    pool_dir = Path(pool_dir)
    if not (pool_dir / "theta0.safetensors").is_file():
        raise FileNotFoundError(f"{pool_dir}: no theta0.safetensors (not a pool folder)")
    if tasks is None:
        tasks = sorted(p.name[: -len("_head.safetensors")] for p in pool_dir.glob("*_head.safetensors"))
    if not tasks:
        raise FileNotFoundError(f"{pool_dir}: no <task>_head.safetensors files")
    base = pool_dir / "theta0.safetensors"
    experts = {t: pool_dir / f"{t}.safetensors" for t in tasks}
    heads = {t: pool_dir / f"{t}_head.safetensors" for t in tasks}
    return ExpertPool(
        checked_state(base, {"task": None}),  # θ0 belongs to no task
        {t: checked_state(p, {"task": t, "role": EXPERT_ROLE}) for t, p in experts.items()},
        {t: checked_state(p, {"task": t, "role": HEAD_ROLE}) for t, p in heads.items()},
        {t: read_sidecar(p)["head"] for t, p in heads.items()},
        {"base": str(base), **{t: str(p) for t, p in experts.items()}},
        read_sidecar(base).get("encoder", {}),
    )
