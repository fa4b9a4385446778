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

from simo_merge.peers import watching_peers
from simo_merge.progress import progress_bar
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
    step_loss: Callable[[dict[str, Tensor]], tuple[Tensor, dict[str, float]]] | nn.Module,
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

    An ``nn.Module`` objective (its forward returns ``(loss, parts)``) trains on the current runtime through
    Fabric: on its device and precision (``bf16-mixed`` autocast; ``16-mixed`` is refused), and, under
    several processes, as DDP over :meth:`Runtime.train_loader`'s shards: per-device batch = the
    loader's, global batch = that x world size; the curve holds the loss averaged over the ranks.
    A plain callable trains in one process, on its parameters' device (under the runtime's precision when
    that is the runtime's device)."""
    groups = [g for g in param_groups if any(p.requires_grad for p in g["params"])]
    if not groups:
        raise ValueError(f"{desc}: nothing to train (no parameter requires grad)")
    runtime = current()
    as_module = isinstance(step_loss, nn.Module)
    if not as_module and runtime.world_size > 1:
        raise ValueError(
            f"{desc}: training on {runtime.world_size} processes needs the objective as an nn.Module "
            "(DDP averages gradients through its forward)"
        )
    device = runtime.device if as_module else groups[0]["params"][0].device
    on_runtime = device == runtime.device
    if on_runtime:
        runtime.refuse_fp16_training("training")
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, pct_start))
    params = [p for g in groups for p in g["params"]]
    if as_module:  # Fabric's forward runs under the precision itself
        step_loss, optimizer = runtime.setup_training(step_loss, optimizer)
        loader = runtime.train_loader(loader)
        _say_global_batch(loader, desc)
    precision = runtime.autocast if on_runtime and not as_module else contextlib.nullcontext
    backward = runtime.fabric.backward if as_module else Tensor.backward
    curve: list[float] = []
    batches = forever(loader)
    show = progress and runtime.is_global_zero
    bar = progress_bar(range(steps), desc, show=show)
    unwritten = f"the model {desc} trains and the run's later outputs"
    for step in bar:
        # DDP meets the other ranks in backward and the loss average: a lost peer stops this step
        with watching_peers(runtime, f"{desc}, step {step + 1} of {steps}", unwritten):
            with precision():
                loss, parts = step_loss(move_data_to_device(next(batches), device))
            loss = loss.float()
            _update(loss, optimizer, schedule, backward, params, clip)
            curve.append(runtime.mean_over_ranks(loss.detach()).item() if as_module else loss.item())
        bar.set_postfix(loss=f"{curve[-1]:.4f}", **{k: f"{v:.3f}" for k, v in parts.items()})
    runtime.share_buffers(step_loss)  # several processes (an nn.Module): every rank holds rank 0's model
    return curve


def _update(loss: Tensor, optimizer, schedule, backward: Callable, params: list, clip: float | None) -> None:
    """One optimizer step from ``loss``: backward, gradients clipped to ``clip`` (if set), step, schedule."""
    optimizer.zero_grad(set_to_none=True)
    backward(loss)
    if clip:
        nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    schedule.step()


def _say_global_batch(loader: Iterable, desc: str) -> None:
    """Print (rank 0) the global batch of a several-process run: per-device batch x world size."""
    runtime, per_device = current(), getattr(loader, "batch_size", None)
    if runtime.world_size > 1 and per_device:
        runtime.fabric.print(
            f"{desc}: global batch {per_device * runtime.world_size} "
            f"= {per_device} per device x {runtime.world_size} processes"
        )
