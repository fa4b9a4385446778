"""``simo-merge merge``: pool + method -> merged safetensors checkpoint (+ JSON sidecar, resolved config)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simo_merge.config import ConfigError, EncoderConfig, PoolConfig, to_yaml
from simo_merge.data import DataConfig, build_task_splits, check_data_config
from simo_merge.io.atomic import write_text
from simo_merge.io.checkpoint import save_state
from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.api import resolved_merge_parameters
from simo_merge.merging.spec import MethodSpec
from simo_merge.pool.spec import describe, pool_kind, resolve_pool
from simo_merge.runtime import RuntimeConfig, on_rank_zero
from simo_merge.taskpool import TaskPool, merge


@dataclass
class MergeJobConfig:
    """``simo-merge merge``: pool + method -> merged checkpoint in ``output_dir``."""

    pool: PoolConfig = field(default_factory=PoolConfig)
    # the encoder architecture: read from the pool (θ0's sidecar); given here, it must match the pool's
    # (the toy pool is built from it; default: a tiny timm ViT)
    encoder: EncoderConfig | None = None
    method: MethodSpec = field(default_factory=MethodSpec)  # name, params, transforms (no grid here)
    # unlabelled inputs for data-dependent methods (adamerging, fisher, regmean): the ``data`` section of
    # realign/evaluate (``data.per_task.<task>`` for one data set per task); its ``split`` role
    data: DataConfig | None = None  # None: data-free methods only
    split: str = "test"  # unlabelled inputs, as the papers use (and realign's default)
    seed: int = 0
    output_dir: str = "runs/merge"
    allow_large_lambda: bool = (
        False  # a merge coefficient |λ| > 10 is refused unless set (config.check_numbers)
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def validate(self) -> None:
        pool_kind(self.pool)
        if self.data is not None:
            check_data_config(self.data)
        if self.method.grid is not None:
            raise ConfigError(
                f"method.grid={self.method.grid}: merge runs the method once; give its scale in method.params"
            )
        try:
            self.method.check("method")
        except ValueError as err:
            raise ConfigError(str(err)) from err


Config = MergeJobConfig
DEFAULT_CONFIG = None  # no built-in default: a pool must be named (merge_toy generates one)


def output_folder(cfg: MergeJobConfig) -> tuple[str, str]:
    """The folder this run writes, and the config key that names it (for error messages)."""
    return cfg.output_dir, "output_dir"


def run(cfg: MergeJobConfig) -> dict[str, Any]:
    """Merge the pool with ``cfg.method``; data-dependent methods read ``cfg.data``'s ``split`` inputs."""
    start = time.perf_counter()
    cfg.validate()
    needs_data = MERGE_METHODS.facts(cfg.method.name)["needs_data"]
    if needs_data and cfg.data is None:
        raise ConfigError(
            f"method {cfg.method.name!r} needs unlabelled inputs: give a data section (data.name=..., "
            "data.root=..., or data.per_task.<task>={name: ..., root: ...} for one data set per task)"
        )
    pool = resolve_pool(cfg.pool, cfg.encoder, need_heads=needs_data, need_encoder=needs_data)
    # data-dependent methods read the unlabelled inputs of the data's ``split``, streamed
    splits = build_task_splits(cfg.data, pool.tasks, cfg.split, cfg.seed) if needs_data else []
    taskpool = TaskPool(pool, splits, seed=cfg.seed, name=cfg.split)
    probes = taskpool.probe_inputs() if needs_data else None
    merged = merge(taskpool, cfg.method, probes)
    out_dir = Path(cfg.output_dir)
    resolved = resolved_merge_parameters(cfg.method.name, cfg.method.params, cfg.method.transforms)
    out = save_state(
        out_dir / "merged.safetensors",
        merged,
        {
            "method": cfg.method.name,
            **resolved,  # hyperparameters / transforms with every default filled in
            "given": {"hyperparameters": cfg.method.params, "transforms": cfg.method.transforms},
            "tasks": pool.tasks,
            "pool": describe(cfg.pool),
            "sources": pool.sources,
            "encoder": pool.encoder_config or None,  # the pool's (θ0's sidecar), not a CLI default
            **(
                {"probe_inputs": {t: [cfg.split, probes.num_inputs(t)] for t in probes.tasks}}
                if probes is not None
                else {}
            ),
        },
        on_rank_zero(),
    )
    write_text(out_dir / "config.yaml", to_yaml(cfg), on_rank_zero())
    n_params = sum(v.numel() for v in merged.values())
    print(
        f"merged {len(pool.tasks)} experts ({', '.join(pool.tasks)}) with {cfg.method.name} "
        f"{resolved['hyperparameters']} -> {out} ({n_params:,} values, {time.perf_counter() - start:.1f}s)"
    )
    return {"checkpoint": str(out), "tasks": pool.tasks, **resolved}
