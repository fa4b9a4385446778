"""TaskPool: an expert pool's frozen heads over evaluation data; the one "state -> model" and evaluation.

The data are ``splits``, a list of ``(dataset, tasks it serves)``: one SIMO dataset every task reads from
the same images (the encoder then runs once per batch for every head), or one dataset per task
(classification, SISO). Datasets yield ``{"image", task: target, f"{task}_mask"}`` items and carry
``task_specs``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader

from simo_merge.encoders import Encoder
from simo_merge.features.inputs import DatasetSource, RealignInputs, seeded_subset, split_inputs
from simo_merge.io.checkpoint import state_hash
from simo_merge.model import MultiTaskModel
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.protocols import PROTOCOLS, Protocol
from simo_merge.runtime import on_rank_zero
from simo_merge.training.eval_cache import EvaluationCache, module_hash
from simo_merge.training.evaluate import evaluate

Results = dict[str, dict[str, float]]  # task -> metric -> value
State = Mapping[str, Tensor]


class TaskPool:
    """``pool``'s tasks evaluated on ``splits`` under frozen ``heads`` (default: the pool's own).

    ``make_encoder()`` builds the pool's architecture (default :meth:`ExpertPool.encoder`); every model
    gets its own copies of the heads, so nothing a model does reaches another. ``batch_size`` and
    ``num_workers`` are the evaluation loaders'; ``seed`` and ``name`` key the probe inputs
    (:meth:`probe_inputs`). With ``cache`` (and ``cache_parts``: what the data depend on, e.g. the data
    config, split and seed), :meth:`evaluate` reuses the stored metrics of an unchanged state. ``protocol``
    (``data.protocol``'s) decides how the metrics aggregate and which pixels they count."""

    def __init__(
        self,
        pool: ExpertPool,
        splits: Sequence[tuple[Any, Sequence[str]]],
        *,
        heads: Mapping[str, nn.Module] | None = None,
        make_encoder: Callable[[], Encoder] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        name: str = "inputs",
        progress: bool = True,
        cache: EvaluationCache | None = None,
        cache_parts: Mapping[str, Any] | None = None,
        protocol: Protocol = PROTOCOLS["default"],
    ) -> None:
        served = [t for _, tasks in splits for t in tasks]
        missing = [t for t in pool.tasks if t not in served]
        if splits and missing:
            raise ValueError(f"task pool {name!r}: no data for task(s) {missing}; the data serve {served}")
        self.pool = pool
        self.splits = [(dataset, list(tasks)) for dataset, tasks in splits]
        self.make_encoder = make_encoder or pool.encoder
        self._heads = dict(heads) if heads is not None else None
        self.batch_size, self.num_workers = batch_size, num_workers
        self.seed, self.name, self.progress = seed, name, progress
        self.cache, self.cache_parts = cache, dict(cache_parts or {})
        self.protocol = protocol

    @property
    def tasks(self) -> list[str]:
        return self.pool.tasks

    @property
    def heads(self) -> dict[str, nn.Module]:
        """The frozen heads (the pool's, rebuilt from their configs on first use unless given)."""
        if self._heads is None:
            self._heads = self.pool.frozen_heads()
        return self._heads

    @property
    def shows_progress(self) -> bool:
        """Whether this process draws progress bars (``progress``, on rank 0 only)."""
        return self.progress and on_rank_zero()

    def heads_copy(self, tasks: Sequence[str] | None = None) -> dict[str, nn.Module]:
        """Copies of the frozen heads of ``tasks`` (default all), for one model or one merge/realignment."""
        return {t: copy.deepcopy(self.heads[t]) for t in (tasks or self.tasks)}

    def encoder(self, state: State) -> Encoder:
        """A fresh encoder of the pool's architecture holding ``state``."""
        encoder = self.make_encoder()
        encoder.load_model_state(state)
        return encoder

    def model(self, state: State, tasks: Sequence[str] | None = None) -> MultiTaskModel:
        """The encoder holding ``state`` with (copies of) the frozen heads of ``tasks`` (default all), in
        eval mode: the one way a state becomes a model."""
        return MultiTaskModel(self.encoder(state), self.heads_copy(tasks)).eval()

    def evaluate(self, state: State, tasks: Sequence[str] | None = None, desc: str = "eval") -> Results:
        """``tasks``' (default all) metrics of the encoder ``state`` under the frozen heads."""
        tasks = list(tasks or self.tasks)
        if self.cache is None:
            return self.evaluate_model(self.model(state, tasks), tasks, desc)
        heads = {t: [module_hash(self.heads[t]), self.heads[t].config()] for t in tasks}
        parts = {**self.cache_parts, "what": "evaluate", "encoder_state": state_hash(state), "heads": heads}
        parts["scoring"] = [self.protocol.aggregation, self.protocol.valid_pixels]
        return self.cache.get(parts, lambda: self.evaluate_model(self.model(state, tasks), tasks, desc))

    def evaluate_model(
        self, model: nn.Module, tasks: Sequence[str] | None = None, desc: str = "eval"
    ) -> Results:
        """``tasks``' metrics of any multi-task ``model`` (e.g. realigned), each on its own data (SIMO: one
        pass over the shared dataset for every head)."""
        tasks = list(tasks or self.tasks)
        out: Results = {}
        for dataset, served in self.splits:
            mine = [t for t in served if t in tasks]
            if mine:
                specs = {t: dataset.task_specs[t] for t in mine}
                loader = DataLoader(dataset, self.batch_size, num_workers=self.num_workers)
                label = desc if len(self.splits) == 1 else f"{desc}/{'+'.join(mine)}"
                out.update(evaluate(model, loader, specs, label, self.progress, self.protocol))
        return {t: out[t] for t in tasks}

    def per_task(self, state_of: Callable[[str], State], desc: str) -> Results:
        """Each task evaluated alone on its own model ``state_of(task)`` (built one task at a time)."""
        return {t: self.evaluate(state_of(t), [t], f"{desc} {t}")[t] for t in self.tasks}

    def individual(self, desc: str = "Individual") -> Results:
        """The Individual row: each expert on its own task (its encoder and head), the 100 % of NormPerf."""
        return self.per_task(lambda t: self.pool.experts[t], desc)

    def probe_inputs(self, limit: int | None = None) -> RealignInputs:
        """Every task's unlabelled inputs of these splits, streamed (items read only when a batch draws
        them; tasks sharing a dataset share one source): all of them, or a seeded subset of at most
        ``limit`` per dataset."""
        if limit is None:
            return split_inputs(self.splits, self.name)
        sources = {}
        for dataset, tasks in self.splits:
            source = DatasetSource(dataset, indices=seeded_subset(len(dataset), limit, self.seed))
            sources.update({t: source for t in tasks})
        return RealignInputs(name=self.name, sources=sources)
