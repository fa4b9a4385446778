"""Save / load what a realignment trained (adapters, or re-trained heads) with the safe checkpoint I/O."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from simo_merge.checkpoint import load_state, read_sidecar, save_state
from simo_merge.encoders import Encoder
from simo_merge.realign import REALIGNERS
from simo_merge.realign.model import RealignedModel, head_sites


def trained_state(model: RealignedModel) -> dict:
    """Only the trained tensors: ``adapters.<owner>.<site>.*`` and/or ``heads.<task>.*``."""
    parts = ["adapters"] + (["heads"] if model.train_heads else [])
    return {f"{part}.{k}": v for part in parts for k, v in getattr(model, part).state_dict().items()}


def save_realigned(
    path: str | os.PathLike, model: RealignedModel, realigner: str, meta: dict[str, Any] | None = None
):
    return save_state(
        path,
        trained_state(model),
        {
            "realigner": realigner,
            "rank": model.rank,
            "token_reduce": model.plan.token_reduce,
            "tasks": model.tasks,
            "train_heads": model.train_heads,
            "trainable_parameters": model.num_trainable(),
            **(meta or {}),
        },
    )


def load_realigned(path: str | os.PathLike, encoder: Encoder, heads: dict[str, nn.Module]) -> RealignedModel:
    """Rebuild the realigned model around ``encoder`` (already holding the merged state) and ``heads``."""
    meta = read_sidecar(path)
    for key in ("realigner", "rank"):
        if key not in meta:
            raise KeyError(f"{path}: sidecar lacks {key!r}; not written by save_realigned?")
    plan = REALIGNERS.get(meta["realigner"])(encoder.depth, {t: head_sites(h) for t, h in heads.items()})
    model = RealignedModel(encoder, heads, plan, int(meta["rank"]), bool(meta.get("train_heads", False)))
    state = load_state(path)
    for part in ("adapters", "heads") if model.train_heads else ("adapters",):
        prefix = f"{part}."
        getattr(model, part).load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    return model.eval()
