"""Test-time objectives for AdaMerging-style coefficient learning on unlabelled inputs.

AdaMerging (Yang et al., ICLR 2024) learns merge coefficients by minimising the Shannon entropy of the
merged model's predictions on unlabelled test inputs, a surrogate that correlates with the error for
classifiers. Entropy needs a categorical prediction, so it is defined here only for logits
(segmentation: per pixel, averaged; classification: per image). Regression (depth, disparity, edges,
autoencoding) and surface normals have no predictive distribution, so for them the objective is
distillation to the expert model's own outputs on the same inputs
(:func:`simo_merge.realign.train.distill_output_loss`: L1 for regression, 1 − cos for normals), which is
also unsupervised. Distillation can be chosen for logits too (KL to the expert's softmax).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from simo_merge.features.losses import distill_output_loss

#: objective names a task can be given
OBJECTIVES = ("entropy", "distill")
#: task kinds whose predictions are logits over classes (channel dim 1), so entropy is defined
ENTROPY_KINDS = ("segmentation", "classification")


def prediction_entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of ``softmax(logits)`` over dim 1.

    ``[B, C]`` classification logits give the mean over images, ``[B, C, H, W]`` segmentation logits the
    mean over images and pixels. Computed from ``log_softmax`` so it is stable for large logits.
    """
    if logits.dim() < 2:
        raise ValueError(f"prediction_entropy: logits need a class dim 1, got shape {tuple(logits.shape)}")
    log_p = logits.float().log_softmax(1)
    return -(log_p.exp() * log_p).sum(1).mean()


def default_objective(spec: Any) -> str:
    """``"entropy"`` for logits (segmentation, classification), ``"distill"`` for everything else."""
    return "entropy" if spec.kind in ENTROPY_KINDS else "distill"


def resolve_objectives(specs: Mapping[str, Any], objectives: Mapping[str, str] | None) -> dict[str, str]:
    """Each task's objective: the given one where set, else :func:`default_objective` of its spec.

    Raises a ValueError naming the task for an unknown task or objective, or entropy on a non-logit task.
    """
    objectives = dict(objectives or {})
    unknown = [t for t in objectives if t not in specs]
    if unknown:
        raise ValueError(f"objectives: task(s) {unknown} are not being merged; tasks: {list(specs)}")
    out = {}
    for task, spec in specs.items():
        name = objectives.get(task, default_objective(spec))
        if name not in OBJECTIVES:
            raise ValueError(f"objectives[{task!r}] = {name!r}; must be one of {OBJECTIVES}")
        if name == "entropy" and spec.kind not in ENTROPY_KINDS:
            raise ValueError(
                f"objectives[{task!r}] = 'entropy' but task kind {spec.kind!r} has no predictive "
                f"distribution (entropy needs logits: {ENTROPY_KINDS}); use 'distill'"
            )
        out[task] = name
    return out


def task_objective(merge_data: Any, task: str, name: str, pred: Tensor, idx: Tensor) -> Tensor:
    """The scalar objective ``name`` of prediction ``pred`` on ``task``'s inputs ``idx``.

    ``"entropy"``: :func:`prediction_entropy`; ``"distill"``: distance to ``merge_data.expert_outputs(task,
    idx)`` (the expert model's cached outputs on the same inputs).
    """
    if name == "entropy":
        return prediction_entropy(pred)
    if name == "distill":
        target = merge_data.expert_outputs(task, idx).to(pred.device)
        return distill_output_loss(merge_data.heads[task].task, pred, target)
    raise ValueError(f"unknown objective {name!r} for task {task!r}; must be one of {OBJECTIVES}")
