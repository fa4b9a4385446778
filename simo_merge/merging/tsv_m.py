"""TSV-Merge (Gargiulo et al., CVPR 2025, "Task Singular Vectors: Reducing Task Interference").

Follows AntoAndGar/task_singular_vectors ``src/utils/TSVM_utils.py`` ``compute_and_sum_svd_mem_reduction``
(the ``TSVM`` method; commit a6c97188f7aa, file last changed in d1f2d24):

- per layer matrix τt = U_t S_t V_tᵀ (thin SVD, rank bound r = min(m, n)); each task keeps its top
  k = int(r·(1/T)) singular triplets;
- the kept left vectors are stacked side by side ([U_1[:, :k] … U_T[:, :k]], zero-padded to r columns),
  the right vectors likewise, the singular values concatenated;
- interference is removed by orthogonalising each stack to its polar factor (P Qᵀ of its SVD P Σ Qᵀ),
  and Δ = polar(U) · diag(S) · polar(V)ᵀ;
- every other parameter (1-D, 3-D, 4-D, or excluded keys) is the mean of the task vectors;
- θ = θ0 + lam·Δ (the authors sweep lam in (0, 3]; FusionBench's default is 1.0).

With T > r a task keeps k = 0 triplets and the layer's Δ is zero, as in the authors' code. Layer
matrices are every 2-D tensor whose key contains none of ``exclude`` (default: the authors' one
exception, ``text_projection``). Memory: one key at a time, float32 SVD on ``device``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging._layers import DEFAULT_EXCLUDE, check_tasks, merge_layer_matrices

SOURCE = "AntoAndGar/task_singular_vectors src/utils/TSVM_utils.py @ a6c97188f7aa"


def _polar(x: Tensor) -> Tensor:
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh


def tsv_matrix(task_matrices: Sequence[Tensor]) -> Tensor:
    """TSV-M update of one layer matrix from its per-task matrices (float32)."""
    mats = [m.float() for m in task_matrices]
    rows, cols = mats[0].shape
    r = min(rows, cols)
    k = int(r * (1 / len(mats)))
    stack_u = mats[0].new_zeros(rows, r)
    stack_s = mats[0].new_zeros(r)
    stack_vh = mats[0].new_zeros(r, cols)
    for i, m in enumerate(mats):
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        stack_u[:, i * k : (i + 1) * k] = u[:, :k]
        stack_s[i * k : (i + 1) * k] = s[:k]
        stack_vh[i * k : (i + 1) * k] = vh[:k]
    return (_polar(stack_u) * stack_s) @ _polar(stack_vh)


@MERGE_METHODS.register(
    "tsv_m",
    facts={
        "label": "TSV-M",
        "scale": "lam",
        "grid": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
        "keywise": True,
        "source": SOURCE,
    },
)
def tsv_m(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    lam: float = 1.0,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    device: str | None = None,
) -> dict[str, Tensor]:
    check_tasks(task_vectors, "tsv_m")
    return merge_layer_matrices(base, task_vectors, lam, exclude, device, lambda mats, key: tsv_matrix(mats))
