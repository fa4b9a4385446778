"""AdaMerging (Yang et al., ICLR 2024): merge coefficients learned on unlabelled inputs.

Task-wise (``"adamerging"``): θ = θ0 + Σ_t λ_t τ_t, one λ per task.
Layer-wise (``"adamerging_layerwise"``): θ^g = θ0^g + Σ_t λ_t^g τ_t^g, one λ per (task, group). With
``granularity="tensor"`` (the default) every parameter tensor is its own group, as the reference code
does (EnnengYang/AdaMerging ``src/main_layer_wise_adamerging.py``: ``lambdas_raw`` has one row per
state-dict entry; FusionBench ``fusion_bench/method/adamerging/layer_wise_adamerging.py``:
``num_layers`` = number of trainable parameter tensors). ``granularity="block"`` groups the tensors by
transformer block (``"block 0"``, ...; from ``merge_data.encoder.block_of_key``) plus one group
``"non-block"`` for every other parameter (patch / position embeddings, CLS token, final norm,
projection), so a depth-D ViT has T × (D + 1) coefficients (the behaviour of this package before).

λ starts at ``init`` (0.3, the paper's choice) and is learned with Adam (lr 1e-3). Each step sums, over
tasks and over ``batches_per_task`` batches per task (2, as the reference loop does: it breaks out of
each task's shuffled loader after its second batch), an unsupervised objective, then takes one Adam
step. As in the reference, λ is clamped to [0, 1] in the forward pass (``clamp(λ_raw, 0, 1)``; the raw
parameter itself is not clipped), and the merged state uses the clamped values. Objectives
(:mod:`simo_merge.merging.data.entropy`): Shannon entropy of the softmax predictions for logit tasks
(segmentation, per pixel; classification), as in the paper; regression and normals have no predictive
entropy, so by default they distil the expert model's outputs instead (L1 / 1 − cos). ``objectives``
overrides the choice per task.

Several processes: every rank draws the same index batches and takes rows ``rank, rank + world, ...`` of
each; its objective is its share of the batch means, and λ's gradient and the objective are summed over
ranks before each step (the same λ everywhere; equal to one process up to float summation order).

At each step the merged parameters are built as tensors from λ (differentiable, no model copy) and run
through ``merge_data.functional_outputs``; tasks sharing one input tensor and batch (SIMO) share one encoder
pass. Memory: every τ_t is read once from the lazy task vectors and kept, stacked per key as [T, N]
(T models' worth of float32), which AdaMerging needs since every step touches every τ_t.

The learned coefficients come back through the optional ``record`` dict: ``record["lambdas"]`` [T][G]
(nested list, clamped), ``record["groups"]`` (G names: tensor keys, or block names),
``record["tasks"]``, ``record["objectives"]`` (task -> objective), ``record["objective_curve"]`` (the
summed objective at each step, before its update).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.data.entropy import resolve_objectives, task_objective
from simo_merge.progress import progress_bar

NON_BLOCK = "non-block"
ALL = "all"
GRANULARITIES = ("tensor", "block")


def lambda_groups(
    keys: list[str], block_of: Callable[[str], int | None] | None, granularity: str = "block"
) -> tuple[list[str], dict[str, int]]:
    """Group names and key -> group index. ``granularity="tensor"``: one group per key (named by it).
    ``"block"``: one group per block present in ``keys`` (in block order) then ``"non-block"`` (if any
    key has no block). ``block_of=None`` gives the single task-wise group."""
    if block_of is None:
        return [ALL], dict.fromkeys(keys, 0)
    if granularity == "tensor":
        return list(keys), {key: i for i, key in enumerate(keys)}
    blocks = {key: block_of(key) for key in keys}
    indices = sorted({b for b in blocks.values() if b is not None})
    names = [f"block {b}" for b in indices]
    position = {b: i for i, b in enumerate(indices)}
    if any(b is None for b in blocks.values()):
        names.append(NON_BLOCK)
    return names, {key: (len(indices) if b is None else position[b]) for key, b in blocks.items()}


class AdaMergingProblem:
    """θ0, the stacked task vectors, the λ grouping and the per-task objectives of one AdaMerging run.

    :meth:`params` builds the merged parameters from λ (differentiable); :meth:`objective` evaluates the
    summed objective of λ on given per-task index batches; :meth:`merged_state` is the final state.
    """

    def __init__(
        self,
        base: Mapping[str, Tensor],
        task_vectors: Mapping[str, Mapping[str, Tensor]],
        merge_data: Any,
        layerwise: bool,
        objectives: Mapping[str, str] | None = None,
        granularity: str = "tensor",
    ) -> None:
        method = "adamerging_layerwise" if layerwise else "adamerging"
        if granularity not in GRANULARITIES:
            raise ValueError(f"{method}: granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if merge_data is None:
            raise ValueError(
                f"{method} is data-dependent and needs merge_data: merge(pool, {method!r}, "
                "merge_data=MergeData(...)) with the pool's encoder, frozen heads, expert states and "
                "unlabelled inputs"
            )
        if not task_vectors:
            raise ValueError(f"{method}: no task vectors to merge")
        self.merge_data = merge_data
        self.tasks = list(task_vectors)
        missing = [t for t in self.tasks if t not in merge_data.heads or t not in merge_data.inputs.sources]
        if missing:
            raise ValueError(
                f"{method}: the merge_data has no head or inputs for task(s) {missing}; merge_data tasks: "
                f"{list(merge_data.heads)}"
            )
        self.objectives = resolve_objectives({t: merge_data.heads[t].task for t in self.tasks}, objectives)
        self.keys = list(base)
        block_of = merge_data.encoder.block_of_key if layerwise else None
        self.groups, self.group_of = lambda_groups(self.keys, block_of, granularity)
        self.device = (
            merge_data.device
        )  # θ0, every τ_t and λ live there; the merged state comes back on the CPU
        self.theta0 = {k: base[k].float().to(self.device) for k in self.keys}
        self.taus: dict[str, Tensor] = {}  # key -> [T, numel]
        for key, theta0 in self.theta0.items():
            rows = []
            for task, tv in task_vectors.items():
                try:
                    tau = tv[key]
                except KeyError:
                    raise ValueError(f"{method}: task vector {task!r} has no key {key!r}") from None
                if tau.shape != theta0.shape:
                    raise ValueError(
                        f"{method}: task vector {task!r} key {key!r} has shape {tuple(tau.shape)}, "
                        f"θ0 has {tuple(theta0.shape)}"
                    )
                rows.append(tau.float().reshape(-1))
            self.taus[key] = torch.stack(rows).to(self.device)

    @property
    def shape(self) -> tuple[int, int]:
        """(tasks, groups): the shape of λ."""
        return len(self.tasks), len(self.groups)

    def params(self, lam: Tensor) -> dict[str, Tensor]:
        """θ0 + Σ_t λ[t, g(key)] τ_t[key] for every key, differentiable in ``lam`` [T, G]."""
        return {
            key: theta0 + (lam[:, self.group_of[key]] @ self.taus[key]).view_as(theta0)
            for key, theta0 in self.theta0.items()
        }

    @torch.no_grad()
    def merged_state(self, lam: Tensor) -> dict[str, Tensor]:
        """The merged float32 state for ``lam``, accumulated as task arithmetic does (θ0, then + λ τ_t)."""
        values = lam.detach().cpu().tolist()
        merged = {}
        for key, theta0 in self.theta0.items():
            acc = theta0.clone()
            g = self.group_of[key]
            for t in range(len(self.tasks)):
                acc.add_(self.taus[key][t].view_as(theta0), alpha=values[t][g])
            merged[key] = acc.cpu()
        return merged

    def batch_iterators(self, seed: int = 0) -> dict[str, Iterator[Tensor]]:
        """One endless seeded index-batch iterator per task (``merge_data.batches(task, seed)``)."""
        return {t: self.merge_data.batches(t, seed) for t in self.tasks}

    def objective(self, lam: Tensor, idx: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Summed objective of ``lam`` on per-task index batches ``idx``, and each task's value.

        Tasks whose inputs are the same tensor and whose batches are equal share one encoder pass.
        """
        params = self.params(lam)
        passes: list[tuple[Any, Tensor, list[str]]] = []
        for task in self.tasks:
            source = self.merge_data.source(task)  # tasks sharing inputs and a batch share one pass
            for entry in passes:
                if entry[0] is source and torch.equal(entry[1], idx[task]):
                    entry[2].append(task)
                    break
            else:
                passes.append((source, idx[task], [task]))
        total = lam.new_zeros(())
        parts: dict[str, float] = {}
        runtime = self.merge_data.runtime
        for _source, whole, tasks in passes:
            batch = whole[runtime.rank :: runtime.world_size].contiguous()  # this rank's rows (all on one)
            if len(batch) == 0:
                raise ValueError(
                    f"adamerging: a batch of {len(whole)} inputs over {runtime.world_size} ranks"
                )
            images = self.merge_data.read(tasks[0], batch)  # on the runtime's device
            outputs = self.merge_data.functional_outputs(params, images, tasks)
            for task in tasks:
                value = task_objective(self.merge_data, task, self.objectives[task], outputs[task], batch)
                if runtime.world_size > 1:  # the rank's share of the batch mean; ranks' shares are summed
                    value = value * (len(batch) / len(whole))
                parts[task] = value.item()
                total = total + value
        return total, parts


def sum_over_ranks(runtime: Any, lam: Tensor, loss: Tensor) -> None:
    """Several processes: each rank's loss is its share of the batch means, so the gradient of the global
    objective (and the objective itself) is the sum over ranks; summed in place before the step."""
    lam.grad.copy_(runtime.fabric.all_reduce(lam.grad, reduce_op="sum"))
    loss.data.copy_(runtime.fabric.all_reduce(loss.detach(), reduce_op="sum"))


def adamerge(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    merge_data: Any,
    layerwise: bool,
    steps: int = 500,
    lr: float = 1e-3,
    init: float = 0.3,
    objectives: Mapping[str, str] | None = None,
    granularity: str = "tensor",
    batches_per_task: int = 2,
    seed: int = 0,
    progress: bool = True,
    record: dict | None = None,
) -> dict[str, Tensor]:
    """Learn λ (task-wise or layer-wise) with Adam on the merge_data's inputs; return the merged state."""
    method = "adamerging_layerwise" if layerwise else "adamerging"
    if steps < 0:
        raise ValueError(f"{method}: steps must be >= 0, got {steps}")
    if batches_per_task < 1:
        raise ValueError(f"{method}: batches_per_task must be >= 1, got {batches_per_task}")
    if not lr > 0:
        raise ValueError(f"{method}: lr must be > 0, got {lr}")
    if not 0.0 <= init <= 1.0:
        raise ValueError(f"{method}: init must be in [0, 1] (λ is clipped there), got {init}")
    if record is not None and not isinstance(record, dict):
        raise ValueError(f"{method}: record must be a dict to fill (or None), got {type(record).__name__}")
    problem = AdaMergingProblem(base, task_vectors, merge_data, layerwise, objectives, granularity)
    merge_data.runtime.refuse_fp16_training(method)
    lam = torch.full(problem.shape, float(init), device=problem.device, requires_grad=True)
    optimizer = torch.optim.Adam([lam], lr=lr)
    iterators = problem.batch_iterators(seed)
    curve: list[float] = []
    bar = progress_bar(range(steps), method, show=progress and merge_data.runtime.is_global_zero)
    for _ in bar:
        loss = lam.new_zeros(())
        for _ in range(batches_per_task):
            idx = {t: next(it) for t, it in iterators.items()}
            loss = loss + problem.objective(lam.clamp(0.0, 1.0), idx)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if merge_data.runtime.world_size > 1:
            sum_over_ranks(merge_data.runtime, lam, loss)
        optimizer.step()
        curve.append(loss.item())
        bar.set_postfix(objective=f"{curve[-1]:.4f}")
    lam = lam.detach().clamp(0.0, 1.0)
    if record is not None:
        record.update(
            method=method,
            lambdas=lam.cpu().tolist(),
            groups=list(problem.groups),
            tasks=list(problem.tasks),
            objectives=dict(problem.objectives),
            objective_curve=curve,
        )
    return problem.merged_state(lam)


@MERGE_METHODS.register("adamerging", label="AdaMerging", scale=None)
def adamerging(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    merge_data: Any = None,
    steps: int = 500,
    lr: float = 1e-3,
    init: float = 0.3,
    objectives: Mapping[str, str] | None = None,
    batches_per_task: int = 2,
    seed: int = 0,
    progress: bool = True,
    record: dict | None = None,
) -> dict[str, Tensor]:
    """Task-wise AdaMerging: one λ per task (see the module docstring)."""
    return adamerge(
        base, task_vectors, merge_data=merge_data, layerwise=False, steps=steps, lr=lr, init=init,
        objectives=objectives, batches_per_task=batches_per_task, seed=seed, progress=progress,
        record=record,
    )  # fmt: skip


@MERGE_METHODS.register("adamerging_layerwise", label="AdaMerging-LW", scale=None)
def adamerging_layerwise(
    base: Mapping[str, Tensor],
    task_vectors: Mapping[str, Mapping[str, Tensor]],
    *,
    merge_data: Any = None,
    steps: int = 500,
    lr: float = 1e-3,
    init: float = 0.3,
    objectives: Mapping[str, str] | None = None,
    granularity: str = "tensor",
    batches_per_task: int = 2,
    seed: int = 0,
    progress: bool = True,
    record: dict | None = None,
) -> dict[str, Tensor]:
    """Layer-wise AdaMerging: one λ per (task, parameter tensor), or per (task, block) + non-block."""
    return adamerge(
        base, task_vectors, merge_data=merge_data, layerwise=True, steps=steps, lr=lr, init=init,
        objectives=objectives, granularity=granularity, batches_per_task=batches_per_task, seed=seed,
        progress=progress, record=record,
    )  # fmt: skip
