"""Expert fine-tuning (head probe on the frozen encoder, then full fine-tuning) and the MTL baseline."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor

from simo_merge.encoders import Encoder
from simo_merge.heads import TaskHead
from simo_merge.tasks import TaskSpec
from simo_merge.training.loop import fit
from simo_merge.training.losses import multitask_loss
from simo_merge.training.model import MultiTaskModel


@dataclass
class FinetuneRecipe:
    """Steps and learning rates of the two phases (as the SIMO paper: probe the head, then fine-tune all)."""

    probe_steps: int = 100
    finetune_steps: int = 400
    lr_head: float = 3e-3
    lr_encoder: float = 5e-4
    weight_decay: float = 0.01
    clip: float = 1.0


def _step_fn(model: MultiTaskModel, specs: dict[str, TaskSpec]) -> Callable:
    def step(batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        return multitask_loss(specs, model(batch["image"], tasks=list(specs)), batch)

    return step


def finetune(
    encoder: Encoder,
    heads: dict[str, TaskHead],
    loader: Iterable,
    recipe: FinetuneRecipe,
    desc: str,
    progress: bool = True,
) -> tuple[MultiTaskModel, list[float]]:
    """Train ``heads`` on the frozen ``encoder`` (probe), then everything; one head = an expert, all = MTL."""
    model = MultiTaskModel(encoder, heads).train()
    specs = {t: h.task for t, h in heads.items()}
    head_params = [p for h in heads.values() for p in h.parameters()]
    curve: list[float] = []
    if recipe.probe_steps:
        encoder.requires_grad_(False)
        curve += fit(
            _step_fn(model, specs),
            [{"params": head_params, "lr": recipe.lr_head}],
            loader,
            recipe.probe_steps,
            recipe.weight_decay,
            recipe.clip,
            desc=f"{desc}: probe",
            progress=progress,
        )
        encoder.requires_grad_(True)
    curve += fit(
        _step_fn(model, specs),
        [
            {"params": list(encoder.parameters()), "lr": recipe.lr_encoder},
            {"params": head_params, "lr": recipe.lr_head},
        ],
        loader,
        recipe.finetune_steps,
        recipe.weight_decay,
        recipe.clip,
        desc=f"{desc}: fine-tune",
        progress=progress,
    )
    return model.eval(), curve
