"""Iso-CTS, isotropic merging in common and task-specific subspaces (Marczak et al., ICML 2025).

Follows danielm1405/iso-merging ``src/utils/iso.py`` ``iso_cts`` (commit d34010af8ba1):

- per layer matrix of rank bound r = min(m, n): the common subspace is the top k_c singular triplets of
  M = Σ_t τt, k_c = r − round((r − ⌊r·f⌋)/T)·T (f = ``common_space_fraction``, Python's round);
- each task contributes the top d = (r − k_c)/T singular triplets of τt − U_c U_cᵀ τt;
- the stacked left (right) vectors [task blocks…, common] are orthogonalised to their polar factor
  (P Qᵀ of their SVD P Σ Qᵀ) and every singular value is set to the mean of the stacked ones;
- every other parameter (1-D, 3-D, 4-D, or excluded keys) is the mean of the task vectors;
- θ = θ0 + lam·Δ (the authors sweep lam in (0, 3]; FusionBench's default is 1.0).

With one task Iso-CTS equals Iso-C (the stacked triplets are τ's full SVD). Layer matrices as in
:mod:`simo_merge.merging.iso_c`. Memory: one key at a time, float32 SVD on ``device``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging._layers import DEFAULT_EXCLUDE, check_tasks, merge_layer_matrices
from simo_merge.merging.iso_c import GRID

SOURCE = "danielm1405/iso-merging src/utils/iso.py @ d34010af8ba1"


def common_space_size(
    shape: tuple[int, ...], num_tasks: int, fraction: float, key: str = ""
) -> tuple[int, int]:
    """(k_c, d): common-subspace size and per-task size, with the authors' rounding."""
    r = min(shape)
    task_total = round((r - int(r * fraction)) / num_tasks) * num_tasks
    k_c = r - task_total
    if k_c < 0:
        raise ValueError(
            f"iso_cts: key {key!r} of shape {tuple(shape)}: {num_tasks} tasks round to {task_total} "
            f"task-specific directions, more than its rank bound {r}; raise common_space_fraction "
            f"(got {fraction})"
        )
    return k_c, (r - k_c) // num_tasks


def _polar(x: Tensor) -> Tensor:
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh


def iso_cts_matrix(task_matrices: Sequence[Tensor], fraction: float, key: str = "") -> Tensor:
    """Iso-CTS update of one layer matrix from its per-task matrices (float32)."""
    mats = [m.float() for m in task_matrices]
    k_c, d = common_space_size(tuple(mats[0].shape), len(mats), fraction, key)
    u, s, vh = torch.linalg.svd(torch.stack(mats).sum(0), full_matrices=False)
    u_c, s_c, vh_c = u[:, :k_c], s[:k_c], vh[:k_c]
    us, ss, vhs = [], [], []
    for m in mats:
        u_t, s_t, vh_t = torch.linalg.svd(m - u_c @ (u_c.T @ m), full_matrices=False)
        us.append(u_t[:, :d])
        ss.append(s_t[:d])
        vhs.append(vh_t[:d])
    stacked_u = _polar(torch.cat([*us, u_c], dim=1))
    stacked_vh = _polar(torch.cat([*vhs, vh_c], dim=0))
    level = torch.cat([*ss, s_c]).mean()
    return (stacked_u * level) @ stacked_vh


@MERGE_METHODS.register(
    "iso_cts",
    facts={
        "label": "Iso-CTS",
        "scale": "lam",
        "grid": GRID,
        "keywise": True,
        "source": SOURCE,
    },
)
def iso_cts(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    lam: float = 1.0,
    common_space_fraction: float = 0.8,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    device: str | None = None,
) -> dict[str, Tensor]:
    check_tasks(task_vectors, "iso_cts")
    if not 0.0 <= common_space_fraction <= 1.0:
        raise ValueError(f"iso_cts: common_space_fraction must be in [0, 1], got {common_space_fraction}")
    return merge_layer_matrices(
        base,
        task_vectors,
        lam,
        exclude,
        device,
        lambda mats, key: iso_cts_matrix(mats, common_space_fraction, key),
    )
