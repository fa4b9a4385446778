"""Helpers shared by the layer-aware data-free merges (LiNeS, Iso-C/CTS, TSV-M): which keys are
"matrices" the SVD methods decompose, which transformer block a key belongs to, per-key task means."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

#: the authors' only exception to "every 2-D tensor is a layer matrix" (a text-tower key of CLIP)
DEFAULT_EXCLUDE: tuple[str, ...] = ("text_projection",)

_BLOCK = re.compile(r"\.(\d+)\.")


def is_layer_matrix(key: str, value: Tensor, exclude: Sequence[str]) -> bool:
    """True for a 2-D tensor whose key contains none of the ``exclude`` substrings.

    This is the authors' rule (Iso-C/CTS, TSV-M): every 2-D parameter is decomposed, embeddings included
    when they are 2-D (open_clip's ``positional_embedding`` and ``proj``); timm's ``pos_embed`` and
    ``cls_token`` are 3-D and the patch embedding is 4-D, so those are averaged.
    """
    return value.dim() == 2 and not any(part in key for part in exclude)


def block_of(key: str) -> int | None:
    """The block index of ``key``: its first ``.<int>.`` path component (``blocks.3.attn...``,
    ``transformer.resblocks.3...``), the rule of LiNeS' code; None for keys outside blocks."""
    match = _BLOCK.search(key)
    return int(match.group(1)) if match else None


def task_mean(task_vectors: Mapping[str, Mapping[str, Tensor]], key: str) -> Tensor:
    """Mean of the task vectors at ``key`` (float32), as a running mean over tasks."""
    acc: Tensor | None = None
    for i, tv in enumerate(task_vectors.values()):
        value = tv[key].float()
        acc = value.clone() if acc is None else acc.add_(value - acc, alpha=1.0 / (i + 1))
    if acc is None:
        raise ValueError("no task vectors to merge")
    return acc


def check_tasks(task_vectors: Mapping[str, Mapping[str, Tensor]], method: str) -> None:
    """A clear error for an empty task set (every method here needs at least one task)."""
    if not task_vectors:
        raise ValueError(f"{method}: needs at least one task vector, got none")


def as_device(device: str | torch.device | None) -> torch.device:
    return torch.device("cpu" if device is None else device)


def merge_layer_matrices(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    lam: float,
    exclude: Sequence[str],
    device: str | None,
    matrix_fn: Callable[[list[Tensor], str], Tensor],
) -> dict[str, Tensor]:
    """θ0 + lam·Δ with Δ = ``matrix_fn`` on layer matrices and the task-vector mean elsewhere."""
    dev = as_device(device)
    merged = {}
    for key, theta0 in base.items():
        if is_layer_matrix(key, theta0, exclude):
            delta = matrix_fn([tv[key].to(dev) for tv in task_vectors.values()], key).to(theta0.device)
        else:
            delta = task_mean(task_vectors, key)
        merged[key] = theta0.float() + lam * delta
    return merged
