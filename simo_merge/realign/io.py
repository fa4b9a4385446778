"""Save / load what a realignment trained (adapters, or re-trained heads) with the safe checkpoint I/O."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from simo_merge.encoders import Encoder
from simo_merge.features.sites import head_sites
from simo_merge.io.checkpoint import load_state, read_sidecar, save_state, state_hash
from simo_merge.realign import REALIGNERS
from simo_merge.realign.model import RealignedModel
from simo_merge.runtime import on_rank_zero


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
        on_rank_zero(),
    )


def check_trained_on(path: str | os.PathLike, merged_state: dict, checkpoint: str) -> None:
    """Raise ValueError unless the adapters in ``path`` were trained on ``merged_state`` (its hash is in
    their metadata): adapters of another merged model would give a mislabelled, meaningless row."""
    recorded = read_sidecar(path).get("merged_hash")
    if recorded is None:
        raise ValueError(f"{path}: records no merged_hash (trained before it was recorded); re-run realign")
    actual = state_hash(merged_state)
    if recorded != actual:
        raise ValueError(
            f"adapters {path} were trained on a merged model with hash {recorded}, but checkpoint "
            f"{checkpoint} has hash {actual}; pass the checkpoint they were trained on"
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
