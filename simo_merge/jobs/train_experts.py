"""``simo-merge train-experts``: θ0 (pretrained here, or read from encoder.checkpoint / encoder.pretrained)
and one fine-tuned expert per task (the demo's first step) into a pool folder; with ``data.per_task`` each
expert on its own data set and label space (classification, SISO)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from simo_merge.config import ConfigError
from simo_merge.jobs._demo_config import DemoConfig
from simo_merge.training.recipes import CachedTraining

Config = DemoConfig
DEFAULT_CONFIG = "demo"


def output_folder(cfg: DemoConfig) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


def run(cfg: DemoConfig) -> dict[str, Any]:
    cfg.validate()
    if cfg.data.per_task and not cfg.encoder.weights() and cfg.pretrain.steps > 0:
        raise ConfigError(
            f"data.per_task={sorted(cfg.data.per_task)}: θ0 pretraining reads one shared data set; give θ0 "
            "as encoder.checkpoint=FILE or encoder.pretrained=..., or pretrain.steps=0 (the initialised "
            "encoder)"
        )
    torch.set_num_threads(cfg.threads)
    training = CachedTraining(cfg, Path(cfg.output_dir))
    pool = training.experts()
    print(f"expert pool ({', '.join(pool.tasks)}) in {training.pool_dir}")
    return {"pool_dir": str(training.pool_dir), "tasks": pool.tasks}
