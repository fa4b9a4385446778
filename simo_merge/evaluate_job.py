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
from torch.utils.data import DataLoader

from simo_merge.atomic import write_json
from simo_merge.checkpoint import load_state, read_sidecar
from simo_merge.config import EncoderConfig, PoolConfig
from simo_merge.data import DataConfig, build_task_splits, data_label
from simo_merge.encoders import build_encoder
from simo_merge.experts import ExpertPool
from simo_merge.outputs import check_output_file
from simo_merge.pool_io import pool_heads
from simo_merge.pool_spec import check_checkpoint_encoder, describe, pool_kind, resolve_pool
from simo_merge.report import markdown_table, result_units, summarize
from simo_merge.training.evaluate import evaluate
from simo_merge.training.model import MultiTaskModel


@dataclass
class EvaluateConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)  # pool.dir, or pool.base + pool.experts/heads
    pool_dir: str | None = None  # shorthand for pool.dir
    encoder: EncoderConfig | None = None  # default: the pool's; given, it must match the pool's
    checkpoint: str | None = None  # merged encoder; None evaluates the experts only
    adapters: str | None = None  # realigned adapters/heads (simo-merge realign) applied on the checkpoint
    data: DataConfig = field(default_factory=lambda: DataConfig(tasks=None))  # tasks: default the pool's
    split: str = "test"
    batch_size: int = 64
    output: str | None = None  # metrics JSON path (default: next to the checkpoint, or in pool_dir)
    seed: int = 0
    threads: int = 2
    progress: bool = True

    def validate(self) -> None:
        pool_kind(self.pool, self.pool_dir)


def load_job_pool(cfg: Any) -> ExpertPool:
    """The pool of a job config with ``pool``, ``pool_dir``, ``encoder`` and ``data`` (tasks: ``pool.tasks``,
    else ``data.tasks``, else all of the pool's), with heads and an encoder config to rebuild models."""
    return resolve_pool(
        cfg.pool, cfg.pool_dir, cfg.encoder, cfg.data.tasks, need_heads=True, need_encoder=True
    )


def evaluate_splits(
    model: MultiTaskModel,
    splits: list[tuple[Any, list[str]]],
    tasks: list[str],
    desc: str,
    progress: bool,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """``tasks``' metrics, each on its own data set (SIMO: one pass over the shared one for all heads)."""
    out: dict[str, dict[str, float]] = {}
    for dataset, served in splits:
        mine = [t for t in served if t in tasks]
        if mine:
            specs = {t: dataset.task_specs[t] for t in mine}
            out.update(evaluate(model, DataLoader(dataset, batch_size), specs, desc, progress))
    return {t: out[t] for t in tasks}


def model_for(
    pool: ExpertPool, state: dict[str, torch.Tensor], tasks: list[str] | None = None
) -> MultiTaskModel:
    """The pool's encoder architecture loaded with ``state``, plus the frozen heads of ``tasks``."""
    enc_cfg = pool.encoder_config
    if not enc_cfg:
        raise KeyError("the pool's theta0 sidecar has no 'encoder' config; cannot rebuild the encoder")
    encoder = build_encoder(enc_cfg["library"], enc_cfg["arch"], **enc_cfg.get("kwargs", {}))
    encoder.load_model_state(state)
    heads = pool_heads(pool.subset(tasks) if tasks else pool)
    return MultiTaskModel(encoder, heads).eval()


def output_path(cfg: EvaluateConfig) -> Path:
    """Where the metrics JSON goes: ``output``, else next to the checkpoint, else in ``pool_dir``."""
    if cfg.output:
        return Path(cfg.output)
    if cfg.checkpoint:
        return Path(cfg.checkpoint).with_suffix(".metrics.json")
    spec = describe(cfg.pool, cfg.pool_dir)
    if spec["kind"] == "dir":
        return Path(spec["dir"]) / "metrics.json"
    return Path("runs/evaluate/metrics.json")


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
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
    rows: dict[str, Any] = {"Individual": {}}
    for task in tasks:
        model = model_for(pool, pool.experts[task], [task])
        rows["Individual"][task] = evaluate_splits(
            model, splits, [task], f"expert {task}", cfg.progress, cfg.batch_size
        )[task]
    if cfg.checkpoint:
        check_checkpoint_encoder(pool, cfg.checkpoint)
        name = read_sidecar(cfg.checkpoint).get("method", Path(cfg.checkpoint).stem)
        merged = model_for(pool, merged_state)
        rows[name] = evaluate_splits(merged, splits, tasks, name, cfg.progress, cfg.batch_size)
        if cfg.adapters:
            from simo_merge.realign.io import load_realigned

            realigned = load_realigned(cfg.adapters, merged.encoder, dict(merged.heads))
            label = f"{name}+{read_sidecar(cfg.adapters)['realigner']}"
            rows[label] = evaluate_splits(realigned, splits, tasks, label, cfg.progress, cfg.batch_size)
    summary = summarize(rows, "Individual")
    print(markdown_table(rows, summary))
    result = {
        "rows": rows,
        "summary": summary,
        "units": result_units(rows),
        "split": cfg.split,
        "data": {t: data_label(cfg.data, t) for t in tasks},
        "pool": describe(cfg.pool, cfg.pool_dir),
        "checkpoint": cfg.checkpoint,
    }
    write_json(out, result)
    print(f"wrote {out}")
    return result
