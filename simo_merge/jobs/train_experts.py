"""``simo-merge train-experts``: θ0 (pretrained here, or read from encoder.checkpoint / encoder.pretrained)
and one fine-tuned expert per task (the demo's first step) into a pool folder."""

from __future__ import annotations

from typing import Any

from simo_merge.jobs.demo import Demo, DemoConfig

Config = DemoConfig
DEFAULT_CONFIG = "demo"


def output_folder(cfg: DemoConfig) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


def run(cfg: DemoConfig) -> dict[str, Any]:
    demo = Demo(cfg)
    pool = demo.experts()
    print(f"expert pool ({', '.join(pool.tasks)}) in {demo.pool_dir}")
    return {"pool_dir": str(demo.pool_dir), "tasks": pool.tasks}
