"""The one training loop every phase uses (pretraining, head probing, fine-tuning, MTL, realignment).

AdamW with per-group learning rates, linear warm-up then cosine decay, gradient
clipping, a progress bar, and an infinite iterator over the loader so "steps" means optimizer steps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from torch import Tensor, nn
from tqdm.auto import tqdm

from simo_merge.runtime import current


def forever(loader: Iterable) -> Iterator:
    """Cycle over ``loader`` indefinitely (a new shuffle each epoch); an empty loader is an error
    (a ValueError), not an endless loop."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yields no batch (fewer samples than one batch?)")


def warmup_cosine(steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR factor: linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0."""
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def fit(
    step_loss: Callable[[dict[str, Tensor]], tuple[Tensor, dict[str, float]]],
    param_groups: list[dict],
    loader: Iterable,
    steps: int,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    pct_start: float = 0.1,
    desc: str = "train",
    progress: bool = True,
) -> list[float]:
    """Run ``steps`` optimizer steps of ``step_loss(batch) -> (loss, parts)``; return the loss curve.

    Batches move to the parameters' device; where that is the current runtime's device, the steps run
    under its precision (``bf16-mixed`` autocast; ``16-mixed`` would need loss scaling and is refused)."""
    groups = [g for g in param_groups if any(p.requires_grad for p in g["params"])]
    if not groups:
        raise ValueError(f"{desc}: nothing to train (no parameter requires grad)")
    runtime = current()
    device = groups[0]["params"][0].device
    on_runtime = device == runtime.device
    if on_runtime and runtime.cfg.precision == "16-mixed":
        raise ValueError("runtime.precision=16-mixed: training needs loss scaling; use bf16-mixed or 32-true")
    precision = runtime.autocast if on_runtime else contextlib.nullcontext
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, pct_start))
    params = [p for g in groups for p in g["params"]]
    curve: list[float] = []
    batches = forever(loader)
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for _ in bar:
        with precision():
            loss, parts = step_loss(move_data_to_device(next(batches), device))
        loss = loss.float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        schedule.step()
        curve.append(loss.item())
        bar.set_postfix(loss=f"{curve[-1]:.4f}", **{k: f"{v:.3f}" for k, v in parts.items()})
    return curve
