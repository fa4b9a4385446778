"""What the SISO (one data set per task) CLI tests recompute with the Python API to compare with a run."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import DataLoader

from simo_merge.model import MultiTaskModel
from simo_merge.training.evaluate import evaluate


def state_model(make_encoder: Callable, pool, state: dict, tasks: list[str]) -> MultiTaskModel:
    """The encoder ``make_encoder()`` with ``state`` under the pool's frozen heads of ``tasks``."""
    encoder = make_encoder()
    encoder.load_model_state(state)
    return MultiTaskModel(encoder, pool.subset(tasks).frozen_heads()).eval()


def accuracy(model, sets: dict, tasks: list[str]) -> dict[str, float]:
    """The Python API's accuracy of ``model`` on each task's own data set."""
    out = {}
    for t in tasks:
        spec = sets[t].task_specs[t]
        out[t] = evaluate(model, DataLoader(sets[t], 64), {t: spec}, progress=False)[t]["accuracy"]
    return out


def rows_accuracy(rows: dict, name: str) -> dict[str, float]:
    """Each task's accuracy in the row ``name`` of a job's results."""
    return {t: rows[name][t]["accuracy"] for t in rows[name]}
