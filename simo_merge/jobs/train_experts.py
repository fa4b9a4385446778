"""``simo-merge train-experts``: θ0 (pretrained here, or read from encoder.checkpoint / encoder.pretrained)
and one fine-tuned expert per task (the demo's first step) into a pool folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from simo_merge.jobs._demo_config import DemoConfig
from simo_merge.training.recipes import CachedTraining

Config = DemoConfig
DEFAULT_CONFIG = "demo"


def output_folder(cfg: DemoConfig) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


def run(cfg: DemoConfig) -> dict[str, Any]:
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    training = CachedTraining(cfg, Path(cfg.output_dir))
    pool = training.experts()
    print(f"expert pool ({', '.join(pool.tasks)}) in {training.pool_dir}")
    return {"pool_dir": str(training.pool_dir), "tasks": pool.tasks}
