"""``simo-merge merge``: pool + method -> merged safetensors checkpoint (+ JSON sidecar, resolved config).

With ``method.grid=[...]`` the method's scale (λ, β) is chosen on the labelled ``split`` (e.g. val): the
pool is read once, each candidate merged and evaluated there, the best written; every candidate's score
lands in the sidecar, ``metrics.json`` and ``sweep.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simo_merge.config import ConfigError, EncoderConfig, PoolConfig, to_yaml
from simo_merge.data import DataConfig, build_task_splits, check_data_config, data_read
from simo_merge.io.atomic import write_json, write_text
from simo_merge.io.checkpoint import save_state
from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.api import resolved_merge_parameters
from simo_merge.merging.spec import MethodSpec
from simo_merge.metrics.selection import criterion
from simo_merge.pool.spec import apply_normalisation, describe, pool_kind, resolve_pool
from simo_merge.protocols import PROTOCOLS, get_protocol
from simo_merge.report import sweep_plot
from simo_merge.runtime import RuntimeConfig, on_rank_zero
from simo_merge.taskpool import Selection, TaskPool, merge, select_scale
from simo_merge.taskpool.selection import sweep_scale


@dataclass
class MergeJobConfig:
    """``simo-merge merge``: pool + method -> merged checkpoint in ``output_dir``."""

    pool: PoolConfig = field(default_factory=PoolConfig)
    # the encoder architecture: read from the pool (θ0's sidecar); given here, it must match the pool's
    # (the toy pool is built from it; default: a tiny timm ViT)
    encoder: EncoderConfig | None = None
    # name, params, transforms, and grid: the values of the method's scale chosen from on ``split``
    method: MethodSpec = field(default_factory=MethodSpec)
    # the ``data`` section of realign/evaluate (``data.per_task.<task>`` for one data set per task): the
    # unlabelled inputs of data-dependent methods (adamerging, fisher, regmean), and the labelled ones a
    # method.grid is judged on; its ``split`` role
    data: DataConfig | None = None  # None: data-free methods and no grid
    split: str = "test"  # unlabelled inputs, as the papers use; with method.grid: the selection split
    seed: int = 0
    progress: bool = True
    output_dir: str = "runs/merge"
    allow_large_lambda: bool = (
        False  # a merge coefficient |λ| > 10 is refused unless set (config.check_numbers)
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def validate(self) -> None:
        pool_kind(self.pool)
        if self.data is not None:
            check_data_config(self.data)
        try:
            self.method.check("method")
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if self.method.grid is not None:
            self.check_grid()

    def check_grid(self) -> None:
        """``method.grid``: a sweepable scale not also fixed in params, judged on labelled held-out data."""
        grid = self.method.grid
        try:
            scale = sweep_scale(self.method.name)
        except ValueError as err:
            raise ConfigError(f"method.grid={grid}: {err}") from err
        if scale in self.method.params:
            raise ConfigError(
                f"method.grid={grid} and method.params.{scale}={self.method.params[scale]}: give one "
                "(the grid chooses the scale on split, the params fix it)"
            )
        if self.data is None:
            raise ConfigError(
                f"method.grid={grid}: the candidates are judged on labelled data; give a data section "
                "(data.name=..., or data.per_task.<task>={name: ..., root: ...}) and split=val"
            )
        if self.split == "test":
            raise ConfigError(
                f"method.grid={grid} with split=test would choose {scale} on the evaluated split; "
                "choose it on held-out data: split=val"
            )


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
    sweep = cfg.method.grid is not None
    reads = needs_data or sweep  # data-dependent methods read the split's inputs, a grid its labels too
    # read once: the pool (its heads and architecture when data are read) and the ``split`` data
    pool = resolve_pool(cfg.pool, cfg.encoder, need_heads=reads, need_encoder=reads)
    protocol = get_protocol(cfg.data.protocol) if cfg.data is not None else PROTOCOLS["default"]
    if reads:  # the encoders read the data as its protocol feeds them
        apply_normalisation(pool, protocol.name)
    splits = build_task_splits(cfg.data, pool.tasks, cfg.split, cfg.seed) if reads else []
    taskpool = TaskPool(pool, splits, seed=cfg.seed, name=cfg.split, progress=cfg.progress, protocol=protocol)
    probes = taskpool.probe_inputs() if needs_data else None
    out_dir = Path(cfg.output_dir)
    params, selection = dict(cfg.method.params), None
    if sweep:
        # the protocol's criterion: NormPerf against the experts on the split, or SIMO's constants
        baseline = taskpool.individual(f"{cfg.split} expert") if protocol.selection == "normperf" else None
        select = criterion(protocol.selection, cfg.data.name, pool.tasks, baseline)
        merged, selection = select_scale(taskpool, cfg.method, cfg.method.grid, select, inputs=probes)
        params[selection.scale] = selection.value
        write_sweep(cfg, out_dir, selection, baseline, pool.tasks)
    else:
        merged = merge(taskpool, cfg.method, probes)
    resolved = resolved_merge_parameters(cfg.method.name, params, cfg.method.transforms)
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
            **({"selection": selection.record(cfg.split)} if selection is not None else {}),
            **({"data": {t: data_read(cfg.data, t, cfg.split) for t in pool.tasks}} if reads else {}),
        },
        on_rank_zero(),
    )
    write_text(out_dir / "config.yaml", to_yaml(cfg), on_rank_zero())
    n_params = sum(v.numel() for v in merged.values())
    if selection is not None:
        print(
            f"chose {selection.scale}={selection.value:g} on {cfg.split} "
            f"(NormPerf {selection.score:.2f}) from "
            + ", ".join(f"{c[selection.scale]:g}: {c['score']:.2f}" for c in selection.candidates)
        )
    print(
        f"merged {len(pool.tasks)} experts ({', '.join(pool.tasks)}) with {cfg.method.name} "
        f"{resolved['hyperparameters']} -> {out} ({n_params:,} values, {time.perf_counter() - start:.1f}s)"
    )
    return {
        "checkpoint": str(out),
        "tasks": pool.tasks,
        **resolved,
        **({"selection": selection.record(cfg.split)} if selection is not None else {}),
    }


def write_sweep(
    cfg: MergeJobConfig, out_dir: Path, selection: Selection, baseline: dict, tasks: list[str]
) -> None:
    """``metrics.json`` (every candidate's score and metrics on the split, the experts' there) and
    ``sweep.png`` (score against the scale) of a ``method.grid`` run."""
    scale = selection.scale
    write_json(
        out_dir / "metrics.json",
        {
            **selection.record(cfg.split),
            "method": cfg.method.name,
            "metrics": [{scale: c[scale], **c["metrics"]} for c in selection.candidates],
            "individual": baseline,
            "data": {t: data_read(cfg.data, t, cfg.split) for t in tasks},
        },
        on_rank_zero(),
    )
    values = [c[scale] for c in selection.candidates]
    scores = [c["score"] for c in selection.candidates]
    title = f"{cfg.method.name}: {scale} chosen on {cfg.split}"
    sweep_plot(values, scores, selection.value, scale, out_dir / "sweep.png", title)
