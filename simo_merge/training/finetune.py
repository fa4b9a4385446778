"""Expert fine-tuning (head probe on the frozen encoder, then full fine-tuning) and the MTL baseline."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.heads import TaskHead
from simo_merge.model import MultiTaskModel
from simo_merge.runtime import placed
from simo_merge.tasks import TaskSpec
from simo_merge.training.loop import fit
from simo_merge.training.losses import multitask_loss


@dataclass
class FinetuneRecipe:
    """Steps and learning rates of the two phases (as the SIMO paper: probe the head on the frozen encoder,
    then fine-tune encoder and head together), each phase with its own learning rates.

    The defaults suit a real pretrained ViT (DINOv2, CLIP): a small encoder lr, since 5e-4 destroyed a
    pretrained DINOv2-S/14 where 3e-5 worked. A θ0 pretrained by the toolkit itself (the demo's tiny,
    briefly pretrained ViT) starts from :data:`simo_merge.training.recipes.SCRATCH_RECIPE` (head 3e-3,
    encoder 5e-4); the SIMO dataset configs carry the paper's.
    """

    probe_steps: int = 100
    finetune_steps: int = 400
    probe_lr_head: float | None = None  # head lr of the probe phase; None: lr_head
    lr_head: float = 1e-3  # head lr of the full fine-tuning phase
    lr_encoder: float = 3e-5  # encoder lr of the full fine-tuning phase
    weight_decay: float = 0.01
    clip: float = 1.0

    def __post_init__(self) -> None:
        rates = {"probe_lr_head": self.probe_lr_head, "lr_head": self.lr_head, "lr_encoder": self.lr_encoder}
        bad = {k: v for k, v in rates.items() if v is not None and not v > 0}
        if bad or self.probe_steps < 0 or self.finetune_steps < 0:
            raise ValueError(
                f"FinetuneRecipe: learning rates must be > 0 and steps >= 0, got {bad or ''} "
                f"probe_steps={self.probe_steps} finetune_steps={self.finetune_steps}"
            )

    @property
    def probe_lr(self) -> float:
        """The head's learning rate in the probe phase."""
        return self.lr_head if self.probe_lr_head is None else self.probe_lr_head


@dataclass
class RecipeConfig:
    """A job's recipe section (``expert:``, ``mtl:``): the :class:`FinetuneRecipe` fields it sets; every
    field left null comes from the base recipe the θ0 calls for (:func:`simo_merge.training.recipes.
    base_recipe`), so ``expert.finetune_steps=800`` changes the steps and nothing else."""

    probe_steps: int | None = None
    finetune_steps: int | None = None
    probe_lr_head: float | None = None
    lr_head: float | None = None
    lr_encoder: float | None = None
    weight_decay: float | None = None
    clip: float | None = None

    def given(self) -> dict[str, Any]:
        """The fields this section sets."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def over(self, base: FinetuneRecipe) -> FinetuneRecipe:
        """``base`` with the fields this section sets (checked as every recipe is)."""
        return replace(base, **self.given())


class MultiTaskObjective(nn.Module):
    """The fine-tuning objective as a module (so DDP can wrap its forward): the batch's multi-task loss."""

    def __init__(self, model: MultiTaskModel, specs: dict[str, TaskSpec]) -> None:
        super().__init__()
        self.model, self.specs = model, specs

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        return multitask_loss(self.specs, self.model(batch["image"], tasks=list(self.specs)), batch)


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
    with placed(model):  # trained on the run's device, handed back where it came from
        curve = _probe_then_tune(model, loader, recipe, desc, progress)
    return model.eval(), curve


def _probe_then_tune(
    model: MultiTaskModel, loader: Iterable, recipe: FinetuneRecipe, desc: str, progress: bool
) -> list[float]:
    """The two phases of :func:`finetune` on ``model`` where it is: the heads alone, then everything."""
    encoder, heads = model.encoder, model.heads
    objective = MultiTaskObjective(model, {t: h.task for t, h in heads.items()})
    head_params = [p for h in heads.values() for p in h.parameters()]
    curve: list[float] = []
    if recipe.probe_steps:
        encoder.requires_grad_(False)
        curve += fit(
            objective,
            [{"params": head_params, "lr": recipe.probe_lr}],
            loader,
            recipe.probe_steps,
            recipe.weight_decay,
            recipe.clip,
            desc=f"{desc}: probe",
            progress=progress,
        )
        encoder.requires_grad_(True)
    curve += fit(
        objective,
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
    return curve
