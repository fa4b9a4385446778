"""``simo-merge evaluate``: a pool folder (+ optionally a merged encoder checkpoint) -> metrics table.

The encoder is rebuilt from the config stored in θ0's sidecar, the frozen heads from their sidecars;
the merged encoder runs once per batch and every head reads the same taps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from simo_merge.atomic import write_json
from simo_merge.checkpoint import load_state, read_sidecar
from simo_merge.data import DataConfig, build_split
from simo_merge.encoders import build_encoder
from simo_merge.experts import ExpertPool
from simo_merge.pool_io import load_pool_dir, pool_heads
from simo_merge.report import markdown_table, result_units, summarize
from simo_merge.training.evaluate import evaluate
from simo_merge.training.model import MultiTaskModel


@dataclass
class EvaluateConfig:
    pool_dir: str = "runs/demo/experts"
    checkpoint: str | None = None  # merged encoder; None evaluates the experts only
    adapters: str | None = None  # realigned adapters/heads (simo-merge realign) applied on the checkpoint
    data: DataConfig = field(default_factory=DataConfig)
    split: str = "test"
    batch_size: int = 64
    output: str | None = None  # metrics JSON path (default: next to the checkpoint, or in pool_dir)
    seed: int = 0
    threads: int = 2
    progress: bool = True


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


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    pool = load_pool_dir(cfg.pool_dir, cfg.data.tasks)
    dataset = build_split(cfg.data, cfg.split, cfg.seed)
    loader = DataLoader(dataset, cfg.batch_size)
    specs = {t: dataset.task_specs[t] for t in pool.tasks}
    rows: dict[str, Any] = {"Individual": {}}
    for task in pool.tasks:
        model = model_for(pool, pool.experts[task], [task])
        rows["Individual"][task] = evaluate(
            model, loader, {task: specs[task]}, f"expert {task}", cfg.progress
        )[task]
    if cfg.adapters and not cfg.checkpoint:
        raise ValueError("adapters= needs checkpoint= (the merged encoder they were trained on)")
    if cfg.checkpoint:
        name = read_sidecar(cfg.checkpoint).get("method", Path(cfg.checkpoint).stem)
        merged = model_for(pool, load_state(cfg.checkpoint))
        rows[name] = evaluate(merged, loader, specs, name, cfg.progress)
        if cfg.adapters:
            from simo_merge.realign.io import load_realigned

            realigned = load_realigned(cfg.adapters, merged.encoder, dict(merged.heads))
            label = f"{name}+{read_sidecar(cfg.adapters)['realigner']}"
            rows[label] = evaluate(realigned, loader, specs, label, cfg.progress)
    summary = summarize(rows, "Individual")
    print(markdown_table(rows, summary))
    out = (
        Path(cfg.output)
        if cfg.output
        else (
            Path(cfg.checkpoint).with_suffix(".metrics.json")
            if cfg.checkpoint
            else Path(cfg.pool_dir) / "metrics.json"
        )
    )
    result = {
        "rows": rows,
        "summary": summary,
        "units": result_units(rows),
        "split": cfg.split,
        "pool_dir": cfg.pool_dir,
        "checkpoint": cfg.checkpoint,
    }
    write_json(out, result)
    print(f"wrote {out}")
    return result
