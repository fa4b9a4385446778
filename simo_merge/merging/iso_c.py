"""Iso-C, isotropic merging in the common subspace (Marczak et al., ICML 2025, "No Task Left Behind").

Follows danielm1405/iso-merging ``src/utils/iso.py`` ``iso_c`` (commit d34010af8ba1):

- per layer matrix: M = Σ_t τt, M = U S Vᵀ, every singular value replaced by mean(S):
  Δ = mean(S)·U Vᵀ (thin SVD, so for a rank-deficient M the zero singular values count in the mean
  and their singular vectors are kept, exactly as in the authors' code);
- every other parameter (1-D, 3-D, 4-D, or excluded keys) is the mean of the task vectors;
- θ = θ0 + lam·Δ (the authors sweep lam in (0, 3]; FusionBench's default is 1.0).

Layer matrices are every 2-D tensor whose key contains none of ``exclude`` (default: the authors' one
exception, ``text_projection``); see :func:`simo_merge.merging._layers.is_layer_matrix`. Memory: one key
at a time, float32 SVD on ``device``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging._layers import DEFAULT_EXCLUDE, check_tasks, merge_layer_matrices

SOURCE = "danielm1405/iso-merging src/utils/iso.py @ d34010af8ba1"
#: a coarse version of the authors' sweep, linspace(0, 3, 21)[1:]
GRID = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def iso_c_matrix(task_matrices: Sequence[Tensor]) -> Tensor:
    """mean(S)·U Vᵀ of the summed task matrices (float32)."""
    total = torch.stack([m.float() for m in task_matrices]).sum(0)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    return (u * s.mean()) @ vh


@MERGE_METHODS.register(
    "iso_c",
    facts={
        "label": "Iso-C",
        "scale": "lam",
        "grid": GRID,
        "keywise": True,
        "source": SOURCE,
    },
)
def iso_c(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    lam: float = 1.0,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    device: str | None = None,
) -> dict[str, Tensor]:
    check_tasks(task_vectors, "iso_c")
    return merge_layer_matrices(
        base, task_vectors, lam, exclude, device, lambda mats, key: iso_c_matrix(mats)
    )
