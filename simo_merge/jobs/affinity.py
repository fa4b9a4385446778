"""``simo-merge affinity``: task affinity of a pool, offline from task vectors and (unless
``measured=false``) checked against measured transfer and pairwise-merge interference on data (each task
on its own data set when ``data.per_task`` gives one)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simo_merge.affinity.transfer import SIMO_LAMBDAS
from simo_merge.config import EncoderConfig, PoolConfig
from simo_merge.data import DataConfig, build_task_splits, check_data_config, data_read
from simo_merge.pool.spec import load_job_pool, pool_kind
from simo_merge.runtime import RuntimeConfig, on_rank_zero
from simo_merge.taskpool import TaskPool


@dataclass
class AffinityJobConfig:
    pool: PoolConfig = field(default_factory=PoolConfig)  # pool.dir, or pool.base + pool.experts/heads
    encoder: EncoderConfig | None = None  # default: the pool's; given, it must match the pool's
    data: DataConfig = field(default_factory=lambda: DataConfig(tasks=None))  # tasks: default the pool's
    k: float = 20.0  # top-k% magnitudes for the sign-conflict rate
    cluster_threshold: float = 1.0
    measured: bool = True  # transfer curves + pairwise interference (needs data)
    # λ sweeps: the SIMO paper's grid [0, 0.25, 0.5, 0.75, 1] by default (finer: np.linspace(0, 1.5, 16))
    transfer_lambdas: list[float] = field(default_factory=lambda: list(SIMO_LAMBDAS))
    select_lambdas: list[float] = field(default_factory=lambda: list(SIMO_LAMBDAS))
    allow_large_lambda: bool = (
        False  # a merge coefficient |λ| > 10 is refused unless set (config.check_numbers)
    )
    output_dir: str = "runs/affinity"
    seed: int = 0
    threads: int = 2
    progress: bool = True
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def validate(self) -> None:
        pool_kind(self.pool)
        check_data_config(self.data)


Config = AffinityJobConfig
DEFAULT_CONFIG = None


def output_folder(cfg: AffinityJobConfig) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


def run(cfg: AffinityJobConfig) -> dict[str, Any]:
    from simo_merge.affinity import run_affinity, write_affinity_report

    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    pool = load_job_pool(cfg)
    block_of = pool.encoder().block_of_key  # the pool's architecture names each key's block
    kwargs: dict[str, Any] = {}
    if cfg.measured:
        test, val = (
            TaskPool(pool, build_task_splits(cfg.data, pool.tasks, split, cfg.seed), progress=False)
            for split in ("test", "val")
        )
        evaluate_test, evaluate_val = test.evaluate, val.evaluate  # (state, tasks) -> each on its own data
        kwargs = {
            "evaluate_state": evaluate_test,
            "evaluate_val": evaluate_val,
            "baselines": {t: evaluate_test(pool.experts[t], [t])[t] for t in pool.tasks},
            "val_baselines": {t: evaluate_val(pool.experts[t], [t])[t] for t in pool.tasks},
            "transfer_lambdas": cfg.transfer_lambdas,
            "select_lambdas": cfg.select_lambdas,
        }
    results = run_affinity(
        pool,
        block_of=block_of,
        k=cfg.k,
        cluster_threshold=cfg.cluster_threshold,
        progress=cfg.progress and on_rank_zero(),
        **kwargs,
    )
    if cfg.measured:  # what each task's measurements read
        results["data"] = {t: {r: data_read(cfg.data, t, r) for r in ("test", "val")} for t in pool.tasks}
    files = write_affinity_report(Path(cfg.output_dir), results)
    names = results["tasks"]
    cos = np.asarray(results["cosine"]["global"]["cosine"])
    print("task-vector cosine (whole encoder):")
    for i, t in enumerate(names):
        print(f"  {t:>10} " + " ".join(f"{cos[i, j]:+.3f}" for j in range(len(names))))
    if "interference" in results:
        inter = np.asarray(results["interference"]["matrix"])
        print("measured interference (loss of column task, % of its expert, when merged with row task):")
        for i, t in enumerate(names):
            print(f"  {t:>10} " + " ".join(f"{inter[i, j]:+7.2f}" for j in range(len(names))))
        for name, agr in results.get("agreement", {}).items():
            print(f"  agreement {name}: Spearman ρ = {agr['spearman_rho']:.3f} over {agr['n_pairs']} pairs")
    print(
        f"wrote {', '.join(sorted(p.name for p in files.values()))} to {cfg.output_dir} "
        f"({time.perf_counter() - start:.0f}s)"
    )
    return results
