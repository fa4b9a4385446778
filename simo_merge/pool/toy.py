"""A small expert pool the package generates itself, for smoke runs without any checkpoint.

θ0 is a random-init encoder; each expert is θ0 + τt with
τt = scale · std(θ0[key]) · (shared·g + (1−shared)·gt), where g is common to all tasks and gt is task-specific
Gaussian noise. It exercises every merge path
(it carries no task knowledge: the dense demo trains real experts).
"""

from __future__ import annotations

import torch

from simo_merge.config import EncoderConfig, PoolConfig
from simo_merge.encoders import build_encoder
from simo_merge.pool.expert_pool import ExpertPool, is_mergeable

TOY_TASKS = ["semseg", "depth", "normal"]


def make_toy_pool(encoder_cfg: EncoderConfig, pool_cfg: PoolConfig) -> ExpertPool:
    torch.manual_seed(pool_cfg.seed)
    # θ0: random init, or the encoder's given weights (encoder.checkpoint / encoder.pretrained)
    weights = encoder_cfg.weights()
    encoder = build_encoder(
        encoder_cfg.library, encoder_cfg.arch, **weights, **encoder_cfg.architecture_kwargs()
    )
    base = encoder.model_state()
    gen = torch.Generator().manual_seed(pool_cfg.seed + 1)
    shared = {k: torch.randn(v.shape, generator=gen) for k, v in base.items() if is_mergeable(v)}
    experts = {}
    for task in pool_cfg.tasks or TOY_TASKS:
        state = {}
        for key, value in base.items():
            if not is_mergeable(value):
                state[key] = value.clone()
                continue
            own = torch.randn(value.shape, generator=gen)
            spread = value.float().std().item() if value.numel() > 1 else 1.0
            direction = pool_cfg.shared * shared[key] + (1 - pool_cfg.shared) * own
            state[key] = (value.float() + pool_cfg.scale * max(spread, 1e-3) * direction).to(value.dtype)
        experts[task] = state
    sources = {
        "base": encoder.source.file if encoder.source else f"toy(seed={pool_cfg.seed})",
        **{t: f"toy(seed={pool_cfg.seed}, task={t})" for t in experts},
    }
    return ExpertPool(base, experts, sources=sources, encoder_config=vars(encoder_cfg))
