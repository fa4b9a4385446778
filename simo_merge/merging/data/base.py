"""MergeData: encoder architecture + frozen heads + expert states + unlabelled inputs per task.

It offers the pieces data-dependent methods share:
- :meth:`MergeData.functional_outputs`: head outputs of the encoder run with *given* parameter
  tensors through ``torch.func.functional_call`` (no model copy; gradients flow to those tensors);
- :meth:`MergeData.expert_outputs`: each expert model's own head outputs, cached once per input;
- :meth:`MergeData.batches`: seeded index batches over a task's inputs, :meth:`MergeData.read` the
  images of one batch (inputs are read from their source when drawn, never stacked up front);
- ``encoder`` / ``heads``: modules to register statistics hooks on.
Statistics a method computes from these (Fisher diagonals, Gram matrices) are cached through
:attr:`MergeData.cache` (the realignment feature cache), keyed by inputs and checkpoint hashes (and the
precision, when not fp32).

Runtime: the encoders and heads run on the current runtime's device (heads are copied there when they
live elsewhere, so the pool's own heads never move), :meth:`MergeData.read` hands batches over on it and
:meth:`MergeData.functional_outputs` runs under its autocast; statistics come back on the CPU.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from simo_merge.encoders import Encoder
from simo_merge.features.cache import FeatureCache
from simo_merge.features.inputs import InputSource, RealignInputs
from simo_merge.features.sampling import IndexSampler
from simo_merge.features.sites import head_sites, run_encoder
from simo_merge.heads.base import head_output
from simo_merge.io.checkpoint import state_hash
from simo_merge.runtime import current


def on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` itself when all its tensors are on ``device``, else a copy moved there."""
    if all(t.device == device for t in itertools.chain(module.parameters(), module.buffers())):
        return module
    return copy.deepcopy(module).to(device)


class MergeData:
    """``make_encoder()`` builds the pool's architecture; ``images`` are the unlabelled inputs per task:
    :class:`RealignInputs` (streamed from datasets; its ``name`` is used) or ``{task: tensor}`` (SIMO: one
    tensor shared by all tasks), read batch by batch either way."""

    def __init__(
        self,
        make_encoder: Callable[[], Encoder],
        heads: dict[str, nn.Module],
        expert_states: dict[str, dict[str, Tensor]],
        images: dict[str, Tensor] | RealignInputs,
        name: str = "inputs",
        batch_size: int = 16,
        seed: int = 0,
        cache: FeatureCache | None = None,
        progress: bool = True,
    ) -> None:
        inputs = images if isinstance(images, RealignInputs) else RealignInputs(images=images, name=name)
        missing = [t for t in heads if t not in inputs.sources or t not in expert_states]
        if missing:
            raise KeyError(f"merge_data: task(s) {missing} lack inputs or an expert state")
        self.runtime = current()
        self.device = self.runtime.device
        self.make_encoder = make_encoder
        self.encoder = make_encoder().eval().requires_grad_(False).to(self.device)
        self.heads = {t: on_device(h.eval().requires_grad_(False), self.device) for t, h in heads.items()}
        self.expert_states = expert_states
        self.inputs = inputs
        self.name = inputs.name
        self.batch_size = batch_size
        self.seed = seed
        self.cache = cache or FeatureCache()
        self.progress = progress
        self._hashes: dict[str, str] = {}

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def sites(self, tasks: list[str] | None = None) -> list:
        return sorted({s for t in (tasks or self.tasks) for s in head_sites(self.heads[t])}, key=str)

    def source(self, task: str) -> InputSource:
        """``task``'s inputs (tasks sharing one source share the object)."""
        return self.inputs.sources[task]

    def num_inputs(self, task: str) -> int:
        return len(self.source(task))

    def read(self, task: str, idx: Tensor) -> Tensor:
        """The images of ``task``'s inputs ``idx``, on the runtime's device."""
        return self.source(task).images(idx).to(self.device)

    def input_hash(self, task: str) -> str:
        key = f"images:{id(self.source(task))}"
        if key not in self._hashes:
            self._hashes[key] = self.source(task).fingerprint(torch.arange(self.num_inputs(task)))
        return self._hashes[key]

    def expert_hash(self, task: str) -> str:
        key = f"expert:{task}"
        if key not in self._hashes:
            self._hashes[key] = state_hash(self.expert_states[task])
        return self._hashes[key]

    def cache_key(self, task: str, what: str) -> str:
        tag = self.runtime.precision_tag()  # "" under fp32
        name = self.name.replace("/", "_")
        return f"{name}-{self.input_hash(task)}-{self.expert_hash(task)}-{what}-{task}{tag}"

    def batches(self, task: str, seed_offset: int = 0) -> Iterator[Tensor]:
        """Endless seeded index batches over ``task``'s inputs."""
        return iter(IndexSampler(self.num_inputs(task), self.batch_size, self.seed + seed_offset))

    def expert_encoder(self, task: str) -> Encoder:
        encoder = self.make_encoder()
        encoder.load_model_state(self.expert_states[task])
        return encoder.eval().requires_grad_(False).to(self.device)

    def expert_outputs(self, task: str, idx: Tensor) -> Tensor:
        """The expert model's (its encoder + its head) outputs on inputs ``idx``; computed once for every
        input, in batches, and cached (on disk when larger than the cache's memory budget)."""
        made: list = []

        def compute(batch: Tensor) -> dict:
            if not made:
                made.append(self.expert_encoder(task))
            head = self.heads[task]
            return {"output": head(run_encoder(made[0], self.read(task, batch), head_sites(head)))}

        table = self.cache.table(
            self.cache_key(task, "outputs"), torch.arange(self.num_inputs(task)), compute
        )
        return table.rows(idx)["output"]

    def functional_outputs(
        self, params: dict[str, Tensor], images: Tensor, tasks: list[str]
    ) -> dict[str, Tensor]:
        """Head outputs of the encoder whose model state is ``params`` (keys as in ``model_state()``; on the
        runtime's device, like ``images``), under the runtime's autocast."""
        named = {f"model.{k}": v for k, v in params.items()}
        sites = self.sites(tasks)
        with self.runtime.autocast():
            out = functional_call(
                self.encoder, named, (images,), {"taps": [s for s in sites if s != "final"]}, strict=False
            )
            feats = {**out.taps, "final": out.features}
            return {t: head_output(self.heads[t], feats, tuple(images.shape[-2:])) for t in tasks}

    @torch.no_grad()
    def outputs_of_state(
        self, state: dict[str, Tensor], images: Tensor, tasks: list[str]
    ) -> dict[str, Tensor]:
        return self.functional_outputs(state, images, tasks)


def per_task_statistics(
    method: str,
    what: str,
    tasks: list[str],
    merge_data: MergeData | None,
    given: Mapping[str, Mapping[str, Tensor]] | None,
    compute: Callable[[MergeData, str], Mapping[str, Tensor]],
) -> Mapping[str, Mapping[str, Tensor]]:
    """``given`` statistics per task, or ``compute(merge_data, task)`` for each; errors name method and
    task."""
    if given is None:
        if merge_data is None:
            raise ValueError(
                f"{method}: needs per-task {what}; pass merge_data=MergeData(...) to compute them "
                f"or the {what} as {{task: {{key: tensor}}}}"
            )
        given = {t: compute(merge_data, t) for t in tasks}
    missing = [t for t in tasks if t not in given]
    if missing:
        raise KeyError(f"{method}: no {what} for task(s) {missing}; given for {list(given)}")
    return given
