"""``simo-merge evaluate``: a pool (+ optionally merged encoder checkpoints, one row each) -> metrics table.

The encoder is rebuilt from the pool's encoder config (θ0's sidecar), the frozen heads from theirs.
SIMO data: the merged encoder runs once per batch and every head reads the same taps; SISO
(``data.per_task``): each task is evaluated on its own data set.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from simo_merge.config import ConfigError, EncoderConfig, PoolConfig
from simo_merge.data import DataConfig, build_task_splits, check_data_config, data_read
from simo_merge.io.atomic import write_json
from simo_merge.io.checkpoint import load_state, read_sidecar
from simo_merge.io.outputs import check_output_file
from simo_merge.pool.spec import check_checkpoint_encoder, describe, load_job_pool, pool_kind
from simo_merge.protocols import get_protocol
from simo_merge.runtime import RuntimeConfig, on_rank_zero
from simo_merge.taskpool import INDIVIDUAL, ResultsTable, TaskPool


@dataclass
class EvaluateConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)  # pool.dir, or pool.base + pool.experts/heads
    encoder: EncoderConfig | None = None  # default: the pool's; given, it must match the pool's
    # a merged encoder file, or a list of them (one row each, pool and data read once); None: experts only
    checkpoint: Any = None
    adapters: str | None = None  # realigned adapters/heads (simo-merge realign) on the (one) checkpoint
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
        files = self.checkpoints()
        if self.adapters and len(files) != 1:
            raise ConfigError(
                f"adapters={self.adapters} needs checkpoint= (the one merged encoder they were trained on), "
                f"got {len(files)} checkpoints"
            )

    def checkpoints(self) -> list[str]:
        """The merged encoder files given, in order (``checkpoint``: one path or a list)."""
        if self.checkpoint is None:
            return []
        files = [self.checkpoint] if isinstance(self.checkpoint, str) else list(self.checkpoint)
        bad = [f for f in files if not isinstance(f, str) or not f]
        if bad:
            raise ConfigError(f"checkpoint: a file path or a list of them, got {self.checkpoint!r}")
        return files


def output_path(cfg: EvaluateConfig) -> Path:
    """Where the metrics JSON goes: ``output``, else next to the checkpoint (several: in the first one's
    folder, ``evaluate.metrics.json``), else in ``pool.dir``."""
    if cfg.output:
        return Path(cfg.output)
    files = cfg.checkpoints()
    if len(files) == 1:
        return Path(files[0]).with_suffix(".metrics.json")
    if files:
        return Path(files[0]).parent / "evaluate.metrics.json"
    spec = describe(cfg.pool)
    if spec["kind"] == "dir":
        return Path(spec["dir"]) / "metrics.json"
    return Path("runs/evaluate/metrics.json")


Config = EvaluateConfig
DEFAULT_CONFIG = None


def output_folder(cfg: EvaluateConfig) -> tuple[str, str]:
    """The folder the metrics JSON goes to, checked writable (named by ``output`` in errors)."""
    return str(check_output_file(output_path(cfg), "output").parent), "the folder of output"


def row_names(files: list[str]) -> list[str]:
    """A row name per checkpoint: the method its sidecar names (else the file's stem); where two files
    would share a name, the file paths as given."""
    names = [read_sidecar(f).get("method", Path(f).stem) for f in files]
    counts = Counter(names)
    return [name if counts[name] == 1 else path for name, path in zip(names, files, strict=True)]


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    out = check_output_file(output_path(cfg), "output")  # before any evaluation
    files = cfg.checkpoints()
    if cfg.adapters and not files:
        raise ValueError("adapters= needs checkpoint= (the merged encoder they were trained on)")
    if cfg.adapters:
        from simo_merge.realign.io import check_trained_on

        check_trained_on(cfg.adapters, load_state(files[0]), files[0])
    pool = load_job_pool(cfg)
    tasks = pool.tasks
    splits = build_task_splits(cfg.data, tasks, cfg.split, cfg.seed)
    protocol = get_protocol(cfg.data.protocol)
    taskpool = TaskPool(pool, splits, batch_size=cfg.batch_size, progress=cfg.progress, protocol=protocol)
    for path in files:  # every file checked before any evaluation
        check_checkpoint_encoder(pool, path)
    rows = {INDIVIDUAL: taskpool.individual("expert")}
    for path, name in zip(files, row_names(files), strict=True):
        merged = taskpool.model(load_state(path))
        rows[name] = taskpool.evaluate_model(merged, desc=name)
        if cfg.adapters:
            from simo_merge.realign.io import load_realigned

            realigned = load_realigned(cfg.adapters, merged.encoder, dict(merged.heads))
            label = f"{name}+{read_sidecar(cfg.adapters)['realigner']}"
            rows[label] = taskpool.evaluate_model(realigned, desc=label)
    table = ResultsTable(rows, delta_metrics=protocol.delta_metrics)
    print(table.markdown())
    result = {
        **table.results(),
        "split": cfg.split,
        "data": {t: data_read(cfg.data, t, cfg.split) for t in tasks},
        "pool": describe(cfg.pool),
        "checkpoint": cfg.checkpoint,
        "rows_of": dict(zip(row_names(files), files, strict=True)),  # row name -> checkpoint file
    }
    write_json(out, result, on_rank_zero())
    print(f"wrote {out}")
    return result
