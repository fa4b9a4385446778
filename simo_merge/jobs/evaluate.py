"""``simo-merge evaluate``: a pool (+ optionally a merged encoder checkpoint) -> metrics table.

The encoder is rebuilt from the pool's encoder config (θ0's sidecar), the frozen heads from theirs.
SIMO data: the merged encoder runs once per batch and every head reads the same taps; SISO
(``data.per_task``): each task is evaluated on its own data set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from simo_merge.config import EncoderConfig, PoolConfig
from simo_merge.data import DataConfig, build_task_splits, check_data_config, data_label
from simo_merge.io.atomic import write_json
from simo_merge.io.checkpoint import load_state, read_sidecar
from simo_merge.io.outputs import check_output_file
from simo_merge.pool.spec import check_checkpoint_encoder, describe, load_job_pool, pool_kind
from simo_merge.runtime import RuntimeConfig, on_rank_zero
from simo_merge.taskpool import INDIVIDUAL, ResultsTable, TaskPool


@dataclass
class EvaluateConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)  # pool.dir, or pool.base + pool.experts/heads
    encoder: EncoderConfig | None = None  # default: the pool's; given, it must match the pool's
    checkpoint: str | None = None  # merged encoder; None evaluates the experts only
    adapters: str | None = None  # realigned adapters/heads (simo-merge realign) applied on the checkpoint
    data: DataConfig = field(default_factory=lambda: DataConfig(tasks=None))  # tasks: default the pool's
    split: str = "test"
    batch_size: int = 64
    output: str | None = None  # metrics JSON path (default: next to the checkpoint, or in pool.dir)
    seed: int = 0
    threads: int = 2
    progress: bool = True
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def validate(self) -> None:
        pool_kind(self.pool)
        check_data_config(self.data)


def output_path(cfg: EvaluateConfig) -> Path:
    """Where the metrics JSON goes: ``output``, else next to the checkpoint, else in ``pool.dir``."""
    if cfg.output:
        return Path(cfg.output)
    if cfg.checkpoint:
        return Path(cfg.checkpoint).with_suffix(".metrics.json")
    spec = describe(cfg.pool)
    if spec["kind"] == "dir":
        return Path(spec["dir"]) / "metrics.json"
    return Path("runs/evaluate/metrics.json")


Config = EvaluateConfig
DEFAULT_CONFIG = None


def output_folder(cfg: EvaluateConfig) -> tuple[str, str]:
    """The folder the metrics JSON goes to, checked writable (named by ``output`` in errors)."""
    return str(check_output_file(output_path(cfg), "output").parent), "the folder of output"


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    out = check_output_file(output_path(cfg), "output")  # before any evaluation
    if cfg.adapters and not cfg.checkpoint:
        raise ValueError("adapters= needs checkpoint= (the merged encoder they were trained on)")
    merged_state = load_state(cfg.checkpoint) if cfg.checkpoint else None
    if cfg.adapters:
        from simo_merge.realign.io import check_trained_on

        check_trained_on(cfg.adapters, merged_state, cfg.checkpoint)
    pool = load_job_pool(cfg)
    tasks = pool.tasks
    splits = build_task_splits(cfg.data, tasks, cfg.split, cfg.seed)
    taskpool = TaskPool(pool, splits, batch_size=cfg.batch_size, progress=cfg.progress)
    rows = {INDIVIDUAL: taskpool.individual("expert")}
    if cfg.checkpoint:
        check_checkpoint_encoder(pool, cfg.checkpoint)
        name = read_sidecar(cfg.checkpoint).get("method", Path(cfg.checkpoint).stem)
        merged = taskpool.model(merged_state)
        rows[name] = taskpool.evaluate_model(merged, desc=name)
        if cfg.adapters:
            from simo_merge.realign.io import load_realigned

            realigned = load_realigned(cfg.adapters, merged.encoder, dict(merged.heads))
            label = f"{name}+{read_sidecar(cfg.adapters)['realigner']}"
            rows[label] = taskpool.evaluate_model(realigned, desc=label)
    table = ResultsTable(rows)
    print(table.markdown())
    result = {
        **table.results(),
        "split": cfg.split,
        "data": {t: data_label(cfg.data, t) for t in tasks},
        "pool": describe(cfg.pool),
        "checkpoint": cfg.checkpoint,
    }
    write_json(out, result, on_rank_zero())
    print(f"wrote {out}")
    return result
