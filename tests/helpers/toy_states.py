"""State dicts for tests: an "expert" as θ0 plus seeded Gaussian noise on its float entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: a one-block timm ViT at 32 px: the encoder of the small pools the job tests write
TINY_ENCODER: dict[str, Any] = {
    "library": "timm",
    "arch": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 16, "num_heads": 2},
}


def perturbed(state: dict[str, torch.Tensor], seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """``state`` with ``scale`` x N(0, 1) noise (generator seeded with ``seed``) on every float tensor."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in state.items()
    }


def write_dense_pool(
    root: Path, encoder: dict[str, Any], tasks: list[str], scale: float, size: tuple[int, int] = (32, 32)
) -> Path:
    """A tiny dense pool folder in ``root``: θ0 = the random ``encoder`` (seed 0) with its config in the
    sidecar, each task's expert = θ0 + ``scale`` x noise (one generator seeded 1, tasks in order), and a
    random linear head per task (images of ``size``)."""
    from simo_merge.datasets import build_dataset
    from simo_merge.encoders import build_encoder
    from simo_merge.heads import build_head
    from simo_merge.io.checkpoint import save_state
    from simo_merge.pool.folder import save_expert

    torch.manual_seed(0)
    model = build_encoder(encoder["library"], encoder["arch"], **encoder["kwargs"])
    base = model.model_state()
    save_state(root / "theta0.safetensors", base, {"encoder": encoder})
    specs = build_dataset("synthetic_scenes", split="test", size=size, num_samples=2).task_specs
    gen = torch.Generator().manual_seed(1)
    for task in tasks:
        expert = {
            k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in base.items()
        }
        save_expert(root, task, expert, build_head("linear", specs[task], model, size))
    return root
