"""Weight averaging (model soup): θ = (1/T) Σ_t θt = θ0 + (1/T) Σ_t τt."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.task_arithmetic import task_arithmetic


@MERGE_METHODS.register("weight_average", label="WA", scale=None, keywise=True)
def weight_average(
    base: Mapping[str, Tensor], task_vectors: Mapping[str, Mapping[str, Tensor]]
) -> dict[str, Tensor]:
    return task_arithmetic(base, task_vectors, lam=1.0 / len(task_vectors))
