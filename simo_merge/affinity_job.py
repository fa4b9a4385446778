"""``simo-merge affinity``: task affinity of a pool folder, offline from task vectors and (unless
``measured=false``) checked against measured transfer and pairwise-merge interference on data."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from simo_merge.affinity.transfer import SIMO_LAMBDAS
from simo_merge.data import DataConfig, build_split
from simo_merge.evaluate_job import model_for
from simo_merge.pool_io import load_pool_dir
from simo_merge.training.evaluate import evaluate


@dataclass
class AffinityJobConfig:
    pool_dir: str = "runs/demo/experts"
    data: DataConfig = field(default_factory=DataConfig)
    k: float = 20.0  # top-k% magnitudes for the sign-conflict rate
    cluster_threshold: float = 1.0
    measured: bool = True  # transfer curves + pairwise interference (needs data)
    # λ sweeps: the SIMO paper's grid [0, 0.25, 0.5, 0.75, 1] by default (finer: np.linspace(0, 1.5, 16))
    transfer_lambdas: list[float] = field(default_factory=lambda: list(SIMO_LAMBDAS))
    select_lambdas: list[float] = field(default_factory=lambda: list(SIMO_LAMBDAS))
    output_dir: str = "runs/affinity"
    seed: int = 0
    threads: int = 2
    progress: bool = True


def _evaluator(pool, split, specs):
    loader = DataLoader(split, 64)

    def evaluate_state(state: dict[str, torch.Tensor], tasks: list[str] | None = None) -> dict:
        tasks = list(tasks or pool.tasks)
        return evaluate(model_for(pool, state, tasks), loader, {t: specs[t] for t in tasks}, progress=False)

    return evaluate_state


def run_affinity_job(cfg: AffinityJobConfig) -> dict[str, Any]:
    from simo_merge.affinity import run_affinity, write_affinity_report
    from simo_merge.encoders import build_encoder

    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    pool = load_pool_dir(cfg.pool_dir, cfg.data.tasks)
    enc = pool.encoder_config
    block_of = build_encoder(enc["library"], enc["arch"], **enc.get("kwargs", {})).block_of_key
    kwargs: dict[str, Any] = {}
    if cfg.measured:
        test, val = build_split(cfg.data, "test", cfg.seed), build_split(cfg.data, "val", cfg.seed)
        specs = {t: test.task_specs[t] for t in pool.tasks}
        evaluate_test, evaluate_val = _evaluator(pool, test, specs), _evaluator(pool, val, specs)
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
        progress=cfg.progress,
        **kwargs,
    )
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
