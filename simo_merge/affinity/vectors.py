"""Data-free task affinity from task vectors alone: cosine similarities and sign conflicts.

Everything streams over the state-dict keys: for one key at a time the T task-vector tensors are
materialised, their pairwise dot products (Gram entries) and counts are added to per-group accumulators,
and the tensors are dropped. No full flattened task vector is ever built, except the per-task magnitude
threshold of :func:`sign_conflict`, which like TIES looks at one task's magnitudes at a time.

Cosine definitions. For a set of keys B (the whole encoder, one block, one parameter group) let
τt_B be task t's vector restricted to B, G_B[s,t] = <τs_B, τt_B> (float64) and ‖τt_B‖ = sqrt(G_B[t,t]).
cos_B(s,t) = G_B[s,t] / (‖τs_B‖‖τt_B‖), NaN when either norm is 0 (undefined, e.g. a frozen block).
Because the blocks b (plus the "non-block" keys) partition the keys, G = Σ_b G_b and ‖τt‖² = Σ_b ‖τt_b‖², so

    cos(s,t) = Σ_b ‖τs_b‖ ‖τt_b‖ cos_b(s,t) / (‖τs‖ ‖τt‖),

the global cosine is a norm-weighted sum of the per-block cosines (terms with a zero norm are 0). The
same holds for the attention / mlp / other partition. :func:`recombine_cosine` computes this right-hand
side from the parts alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simo_merge.affinity.keys import PARAM_GROUPS, default_block_of, param_group
from simo_merge.merging.ties import magnitude_threshold
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.progress import progress_bar

#: Elements per chunk when a key's T tensors are stacked in float64 (bounds peak memory to ~8·T·CHUNK B).
CHUNK = 1 << 20


def _tasks(pool: ExpertPool, tasks: Sequence[str] | None) -> list[str]:
    names = list(tasks) if tasks is not None else pool.tasks
    missing = [t for t in names if t not in pool.experts]
    if missing:
        raise KeyError(f"tasks not in the pool: {missing}; pool has {pool.tasks}")
    if not names:
        raise ValueError("need at least one task")
    return names


def _gram(tensors: Sequence[Tensor]) -> np.ndarray:
    """T×T float64 Gram matrix of the flattened tensors, accumulated chunk by chunk."""
    flats = [t.reshape(-1) for t in tensors]
    n = flats[0].numel()
    gram = torch.zeros(len(flats), len(flats), dtype=torch.float64)
    for start in range(0, n, CHUNK):
        x = torch.stack([f[start : start + CHUNK].double() for f in flats])
        gram += x @ x.T
    return gram.numpy()


def _finish(gram: np.ndarray, numel: int, n_keys: int) -> dict[str, Any]:
    norm = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    denom = np.outer(norm, norm)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(denom > 0, gram / np.where(denom > 0, denom, 1.0), np.nan)
    return {"cosine": cosine, "gram": gram, "norm": norm, "numel": int(numel), "keys": int(n_keys)}


def cosine_matrices(
    pool: ExpertPool,
    block_of: Callable[[str], int | None] | None = None,
    group_of: Callable[[str], str] | None = None,
    tasks: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """T×T cosine similarities of the task vectors: whole encoder, per block and per parameter group.

    ``block_of(key)`` gives a key's block index or None (default: :func:`default_block_of`; pass
    ``encoder.block_of_key`` when an encoder is at hand); ``group_of(key)`` its parameter group (default:
    :func:`param_group`). Returns ``{"tasks", "global", "blocks": {index: part}, "non_block": part | None,
    "groups": {name: part}}`` where each part is ``{"cosine" T×T, "gram" T×T, "norm" [T], "numel",
    "keys"}`` (numpy float64). See the module docstring for the exact block/global relation.
    """
    names = _tasks(pool, tasks)
    block_of = block_of or default_block_of
    group_of = group_of or param_group
    vectors = [pool.task_vector(t) for t in names]
    keys = list(vectors[0])
    if not keys:
        raise ValueError("the pool has no floating-point parameters: no task vectors to compare")
    size = len(names)

    def empty() -> dict[str, Any]:
        return {"gram": np.zeros((size, size)), "numel": 0, "keys": 0}

    total = empty()
    blocks: dict[int, dict[str, Any]] = {}
    non_block = empty()
    groups: dict[str, dict[str, Any]] = {}
    for key in progress_bar(keys, "cosine", show=progress):
        tensors = [tv[key] for tv in vectors]
        gram = _gram(tensors)
        numel = tensors[0].numel()
        block = block_of(key)
        group = group_of(key)
        targets = [
            total,
            non_block if block is None else blocks.setdefault(int(block), empty()),
            groups.setdefault(group, empty()),
        ]
        for acc in targets:
            acc["gram"] += gram
            acc["numel"] += numel
            acc["keys"] += 1
    ordered_groups = [g for g in PARAM_GROUPS if g in groups] + sorted(
        g for g in groups if g not in PARAM_GROUPS
    )
    return {
        "tasks": names,
        "global": _finish(total["gram"], total["numel"], total["keys"]),
        "blocks": {b: _finish(a["gram"], a["numel"], a["keys"]) for b, a in sorted(blocks.items())},
        "non_block": _finish(non_block["gram"], non_block["numel"], non_block["keys"])
        if non_block["keys"]
        else None,
        "groups": {
            g: _finish(groups[g]["gram"], groups[g]["numel"], groups[g]["keys"]) for g in ordered_groups
        },
    }


def recombine_cosine(parts: Sequence[dict[str, Any]]) -> np.ndarray:
    """The global cosine rebuilt from a partition's per-part cosines and norms only.

    cos(s,t) = Σ_b n_b[s] n_b[t] cos_b(s,t) / (sqrt(Σ_b n_b[s]²) sqrt(Σ_b n_b[t]²)); a part where either
    norm is 0 contributes 0 (its NaN cosine is not used).
    """
    if not parts:
        raise ValueError("recombine_cosine needs at least one part")
    numerator = 0.0
    sq = 0.0
    for part in parts:
        norm = np.asarray(part["norm"], dtype=np.float64)
        weights = np.outer(norm, norm)
        cos = np.nan_to_num(np.asarray(part["cosine"], dtype=np.float64), nan=0.0)
        numerator = numerator + np.where(weights > 0, weights * cos, 0.0)
        sq = sq + norm**2
    total = np.sqrt(sq)
    denom = np.outer(total, total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, numerator / np.where(denom > 0, denom, 1.0), np.nan)


def block_parts(cosine: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-block parts of a :func:`cosine_matrices` result plus its non-block part (a partition)."""
    parts = list(cosine["blocks"].values())
    if cosine.get("non_block") is not None:
        parts.append(cosine["non_block"])
    return parts


def sign_conflict(
    pool: ExpertPool, k: float = 20.0, tasks: Sequence[str] | None = None, progress: bool = False
) -> dict[str, Any]:
    """Pairwise sign-conflict rate among the large entries of two task vectors.

    Definition. Task t's *top-k% set* is the set of entries with |τt| ≥ h_t, where h_t is the n-th
    largest magnitude of the whole vector, n = max(1, int(N·k/100)), ties kept
    (:func:`simo_merge.merging.ties.magnitude_threshold` with ``count="exact"``; TIES itself keeps one
    more, as its reference code does; computed one task at a time). For a pair (s, t) let
    U = top(s) ∪ top(t). The conflict rate is

        C[s,t] = 100 · |{i ∈ U : τs_i ≠ 0, τt_i ≠ 0, sign(τs_i) ≠ sign(τt_i)}| / |U|  (in %),

    i.e. the percentage of the entries that matter to either task where both moved and in opposite
    directions (the entries TIES would resolve by sign election). C is symmetric with a zero diagonal.
    Returns ``{"tasks", "k", "rate" T×T, "conflicts" T×T, "union" T×T, "thresholds" {task: h_t}}``.
    """
    names = _tasks(pool, tasks)
    vectors = [pool.task_vector(t) for t in names]
    thresholds = [magnitude_threshold(tv, k, count="exact") for tv in vectors]
    size = len(names)
    conflicts = np.zeros((size, size), dtype=np.int64)
    union = np.zeros((size, size), dtype=np.int64)
    for key in progress_bar(list(vectors[0]), "sign conflict", show=progress):
        values = [tv[key].reshape(-1) for tv in vectors]
        top = [v.abs() >= h for v, h in zip(values, thresholds, strict=True)]
        signs = [torch.sign(v) for v in values]
        for i in range(size):
            for j in range(i, size):
                u = top[i] | top[j]
                c = u & (signs[i] * signs[j] < 0)
                union[i, j] += int(u.sum())
                conflicts[i, j] += int(c.sum())
    iu = np.triu_indices(size, 1)
    union[(iu[1], iu[0])] = union[iu]
    conflicts[(iu[1], iu[0])] = conflicts[iu]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(union > 0, 100.0 * conflicts / np.maximum(union, 1), np.nan)  # in %
    return {
        "tasks": names,
        "k": float(k),
        "rate": rate,
        "conflicts": conflicts,
        "union": union,
        "thresholds": dict(zip(names, thresholds, strict=True)),
    }
