"""A classification merging benchmark's shared state: pool, frozen heads, test sets, unlabelled inputs.

Every row of such a benchmark (θ0, each expert, each merge, each merge + realigner) is a model
evaluated for top-1 accuracy on the tasks' test sets. Data-dependent merges and realigners read the same
unlabelled test inputs: a seeded subset of at most ``max_unlabelled`` items per task (None: the whole
test split, the papers' setting), streamed from the datasets, so images are read only when a batch is
drawn.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from simo_merge.encoders import Encoder
from simo_merge.features.inputs import RealignInputs, subset_inputs
from simo_merge.merging import MERGE_METHODS, merge
from simo_merge.model import MultiTaskModel
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.realign.train import RealignConfig, realign
from simo_merge.training.evaluate import evaluate

StateDict = dict[str, Tensor]


class ClassificationBench:
    """Evaluates, merges and realigns over one pool; ``datasets[task]`` is the task's test set (a SIMO
    dataset with ``task_specs``), ``heads[task]`` its frozen head (copied into every model built)."""

    def __init__(
        self,
        make_encoder: Callable[[], Encoder],
        pool: ExpertPool,
        heads: Mapping[str, nn.Module],
        datasets: Mapping[str, Dataset],
        name: str,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        max_unlabelled: int | None = 256,
        progress: bool = True,
    ) -> None:
        self.make_encoder = make_encoder
        self.pool = pool
        self.heads = dict(heads)
        self.datasets = dict(datasets)
        self.tasks = list(datasets)
        self.specs = {t: ds.task_specs[t] for t, ds in self.datasets.items()}
        self.name = name
        self.batch_size, self.num_workers = batch_size, num_workers
        self.seed, self.max_unlabelled, self.progress = seed, max_unlabelled, progress
        self._unlabelled: RealignInputs | None = None
        self.evaluations = 0

    def loader(self, task: str) -> DataLoader:
        return DataLoader(self.datasets[task], batch_size=self.batch_size, num_workers=self.num_workers)

    def unlabelled(self) -> RealignInputs:
        """Each task's unlabelled test inputs (a seeded subset of at most ``max_unlabelled``), streamed."""
        if self._unlabelled is None:
            self._unlabelled = subset_inputs(self.datasets, self.name, self.max_unlabelled, self.seed)
        return self._unlabelled

    def heads_copy(self) -> dict[str, nn.Module]:
        return {t: copy.deepcopy(h) for t, h in self.heads.items()}

    def accuracy(self, model: nn.Module, tasks: list[str], desc: str) -> dict[str, float]:
        """Top-1 accuracy (%) of ``model`` on each of ``tasks``' test sets."""
        out = {}
        for t in tasks:
            metrics = evaluate(model, self.loader(t), {t: self.specs[t]}, f"{desc}/{t}", self.progress)
            out[t] = float(metrics[t]["accuracy"])  # already in %
            self.evaluations += 1
        return out

    def state_model(self, state: StateDict) -> MultiTaskModel:
        """The encoder holding ``state`` with (copies of) every head."""
        encoder = self.make_encoder()
        encoder.load_model_state(state)
        return MultiTaskModel(encoder, self.heads_copy()).eval()

    def merged_state(self, method: str, params: Mapping[str, Any], **extra: Any) -> StateDict:
        """``merge(pool, method, **params)``; a method that needs data (its registration fact
        ``needs_data``) gets a :class:`~simo_merge.merging.data.MergeData` over the unlabelled inputs."""
        params = {**params, **extra}
        facts = MERGE_METHODS.facts(method)
        if facts["needs_data"]:
            from simo_merge.merging.data import MergeData

            params["merge_data"] = MergeData(
                self.make_encoder,
                self.heads_copy(),
                self.pool.experts,
                self.unlabelled(),
                seed=self.seed,
                progress=self.progress,
            )
        if facts["progress"]:
            params.setdefault("progress", self.progress)
        return merge(self.pool, method, **params)

    def realigned(self, merged: StateDict, rcfg: RealignConfig) -> nn.Module:
        """The merged encoder realigned by ``rcfg`` on the unlabelled inputs."""
        model, _ = realign(
            self.make_encoder, merged, self.pool.experts, self.heads_copy(), self.unlabelled(), rcfg
        )
        return model.eval()
