"""The shared realignment loop: any plan, either objective, cached or recomputed features.

Unsupervised (default): L1 between the adapted merged features and the expert's at the plan's loss
sites (the heads realigner distils the expert model's outputs instead). Supervised: the task losses of
the frozen heads (or re-trained heads) on a small labelled set.

Recipes (``recipe=``; a recipe field the user left unset (None) takes the recipe's value, one the user
set is never replaced, see :class:`~simo_merge.realign.config.RealignConfig`):

- ``"surgery"`` (default; Surgery / SurgeryV2 papers, no labels needed): the realigner's registered
  objective (unsupervised but for ``heads``), Adam, lr 1e-3, batch 16, 500 iterations, each iteration
  visiting every task.
- ``"simo"`` (the SIMO authors' notebooks/simo_merging.ipynb, d23845jg/simo_merging @2fcaa49; cells
  counted from 0 over all cells of the notebook's JSON, lines from 1): supervised; only the block
  adapters train, the heads stay frozen (cell 19 l.51-52 adds LoRA to the backbone blocks only, the
  decoder call commented out; cell 21 l.20-38 collects those adapters' weights, and the merging lambdas
  are fixed, cell 22); AdamW with betas (0.9, 0.999), weight decay 0.0 and lr 1e-5 (cell 24 l.23-29);
  OneCycle with ``pct_start`` 0.1 (cell 24 l.31-37); gradient-norm clipping at 35 (cell 25 l.16-18);
  one epoch (cell 24 l.5).

Schedules (``schedule=``):

- ``"reference"``: what EnnengYang/RepresentationSurgery ``src/main_*_with_surgery.py`` (commit
  c5a032d) and EnnengYang/SurgeryV2 ``src/main_tv_surgery_v1.py`` / ``main_tv_surgery_v2.py`` (commit
  230a441) run: per iteration, for each task, ``batches_per_task`` (2) batches from that task's own
  shuffled inputs, each with its own optimizer step on that task's loss, so 500 iterations give every
  per-task adapter 1000 updates. (One Adam holds all adapters; with ``zero_grad(set_to_none=True)``, the
  default since torch 2.0, a step moves only the adapters that got a gradient, i.e. that task's. Under
  torch 1.x the released code zeroed instead, and Adam's momentum also nudged the other tasks' adapters
  at every step; that side effect is not reproduced.)
- ``"joint"``: one optimizer step per iteration on the loss summed over tasks, one batch per task
  (per-task adapters then get one update per iteration).
- ``None`` (default): ``reference`` for ``surgery`` and ``deep`` on classification pools (the papers'
  setting), ``joint`` otherwise (dense SIMO pools, shared adapters, online mode).

The recorded loss curve has one value per iteration: the sum over tasks of the task loss (averaged over
its batches under ``reference``), each taken before that batch's update.

Runtime (:mod:`simo_merge.runtime`): the merged and expert encoders, the heads and the adapters run on
the current runtime's device, every forward under its autocast (``bf16-mixed``: the adapters and heads
keep fp32 master weights, autocast casts them per op; ``16-mixed`` is refused, there is no loss scaling);
cached features stay on the CPU in fp32 (:func:`~simo_merge.features.cache.stored`). :func:`realign`
hands the model back on the device the encoder was built on. Under several processes every rank computes
its share of each feature table (:meth:`~simo_merge.features.cache.FeatureCache.table`: batch ``k`` on
rank ``k % world``, broadcast to all, so each row is computed exactly as one process computes it), then
every rank runs the same (seeded, deterministic) training loop on the whole batch, and rank 0 writes.

``use_cache=False`` recomputes the expert's (and, where frozen, the merged) features at every step, as
the reference implementations do; for the same seed it sees the same batches and gives the same loss
curve up to float rounding (``benchmarks/realign_speed.py`` times both).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.features.cache import FeatureCache
from simo_merge.features.inputs import RealignInputs
from simo_merge.features.losses import distill_output_loss
from simo_merge.features.sampling import IndexSampler
from simo_merge.features.sites import Features, head_sites
from simo_merge.io.checkpoint import state_hash
from simo_merge.peers import check_peers
from simo_merge.progress import progress_bar
from simo_merge.realign import REALIGNERS
from simo_merge.realign.config import (  # noqa: F401  (re-exported: callers import them from here)
    LR_SCHEDULES,
    OBJECTIVES,
    OPTIMIZERS,
    RECIPES,
    REFERENCE_SCHEDULE_REALIGNERS,
    SCHEDULES,
    RealignConfig,
)
from simo_merge.realign.model import RealignedModel
from simo_merge.realign.plan import Plan
from simo_merge.realign.targets import LossTargets
from simo_merge.runtime import current
from simo_merge.training.losses import task_loss


def feature_l1(adapted: Tensor, target: Tensor, token_reduce: str) -> Tensor:
    """Mean L1; block tokens ``[B, N, D]`` are averaged over tokens first when ``token_reduce="mean"``
    (a target may arrive already averaged, ``[B, D]``: the feature cache stores only what the loss reads)."""
    if token_reduce == "mean":
        adapted = adapted.mean(1) if adapted.dim() == 3 else adapted
        target = target.mean(1) if target.dim() == 3 else target
    return (adapted - target).abs().mean()


def make_plan(cfg: RealignConfig, depth: int, heads: dict[str, nn.Module]) -> Plan:
    """The realigner's plan for these heads, with the config's ``token_reduce`` / ``match`` overrides."""
    plan: Plan = REALIGNERS.get(cfg.realigner)(depth, {t: head_sites(h) for t, h in heads.items()})
    if cfg.token_reduce is not None:
        plan = dataclasses.replace(plan, token_reduce=cfg.token_reduce)
    if cfg.match is not None and not plan.trains_heads:
        plan = dataclasses.replace(plan, match=cfg.match)
    return plan


def check_inputs(cfg: RealignConfig, tasks: list[str], inputs: RealignInputs) -> None:
    """Every task has inputs, and labels when the objective is supervised."""
    missing = [t for t in tasks if t not in inputs.sources]
    if missing:
        raise KeyError(f"no realignment inputs for task(s) {missing}")
    if cfg.objective == "supervised":
        absent = [t for t in tasks if not inputs.has_labels(t)]
        if absent:
            hint = " (without labels use the default recipe=surgery)" if cfg.recipe == "simo" else ""
            raise KeyError(f"objective=supervised needs labels for task(s) {absent}{hint}")


def default_schedule(cfg: RealignConfig, heads: dict[str, nn.Module]) -> str:
    """``reference`` for surgery/deep when every head is a classifier (the papers' CLIP setting)."""
    classification = all(getattr(h.task, "kind", None) == "classification" for h in heads.values())
    if cfg.realigner in REFERENCE_SCHEDULE_REALIGNERS and classification and not cfg.online:
        return "reference"
    return "joint"


def under_autocast(method: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``method`` of a :class:`Realignment` run with every forward under its runtime's autocast."""

    @functools.wraps(method)
    def wrapped(self: Realignment, *args: object) -> Tensor:
        with self.runtime.autocast():
            return method(self, *args)

    return wrapped


class RunSamplers:
    """The seeded index samplers of one run and the iterators its loop draws from.

    Joint: one sampler per distinct source (SIMO tasks share inputs and see the same batches).
    Reference: every task draws from its own shuffled inputs, as its own loader would.
    """

    def __init__(self, cfg: RealignConfig, schedule: str, inputs: RealignInputs, tasks: list[str]) -> None:
        self.schedule = schedule
        self.inputs = inputs
        self.store_of = {t: id(self.inputs.sources[t]) for t in tasks}
        self.num_inputs = {t: self.inputs.num_inputs(t) for t in tasks}
        self.joint_samplers = {}
        for offset, store in enumerate(dict.fromkeys(self.store_of.values())):
            n = self.num_inputs[next(t for t, s in self.store_of.items() if s == store)]
            self.joint_samplers[store] = IndexSampler(
                n, cfg.batch_size, cfg.seed + offset, cfg.fraction, cfg.online
            )
        self.own_samplers = {
            t: IndexSampler(self.num_inputs[t], cfg.batch_size, cfg.seed + i, cfg.fraction)
            for i, t in enumerate(tasks)
        }
        self.joint = {store: iter(s) for store, s in self.joint_samplers.items()}
        self.per_task = {t: iter(s) for t, s in self.own_samplers.items()}

    def sampler_of(self, task: str) -> IndexSampler:
        """The sampler whose pool ``task``'s batches come from under this run's schedule."""
        if self.schedule == "reference":
            return self.own_samplers[task]
        return self.joint_samplers[self.store_of[task]]


class Realignment:
    """Holds the model, loss targets and samplers of one run; :meth:`train` runs it.

    Inputs are read from ``inputs``' sources only when a batch needs them (feed-forward adapters,
    supervised labels, uncached targets); cached targets hold only the inputs each task samples from.
    """

    def __init__(
        self,
        make_encoder: Callable[[], Encoder],
        merged_state: dict[str, Tensor],
        expert_states: dict[str, dict[str, Tensor]],
        heads: dict[str, nn.Module],
        inputs: RealignInputs,
        cfg: RealignConfig,
        cache: FeatureCache | None = None,
    ) -> None:
        cfg = cfg.resolved()
        cfg.validate()
        self.cfg = cfg
        self.runtime = current()
        self.runtime.refuse_fp16_training("realignment")
        self.device = self.runtime.device
        self.inputs = inputs
        self.cache = cache or FeatureCache()
        encoder = make_encoder()
        encoder.load_model_state(merged_state)
        self.plan = make_plan(cfg, encoder.depth, heads)
        torch.manual_seed(cfg.seed)
        self.model = RealignedModel(encoder, heads, self.plan, cfg.rank, cfg.train_heads).eval()
        self.home = next(iter(encoder.parameters())).device  # where realign() hands the model back
        self.placed = place(
            [self.model, *heads.values()], self.device
        )  # expert heads too (copied if trained)
        check_inputs(cfg, list(heads), inputs)
        self.schedule = cfg.schedule or default_schedule(cfg, heads)
        self.sampling = RunSamplers(cfg, self.schedule, inputs, list(heads))
        self.store_of, self.num_inputs = self.sampling.store_of, self.sampling.num_inputs
        self.samplers, self.task_samplers = self.sampling.joint, self.sampling.per_task
        pools = {t: self.sampling.sampler_of(t).pool for t in heads}
        self.targets = LossTargets(
            make_encoder, expert_states, heads, self.model, state_hash(merged_state), inputs, pools,
            self.cache, cfg.use_cache,
        )  # fmt: skip
        self.optimizer: torch.optim.Optimizer | None = None

    default_schedule = staticmethod(default_schedule)  # kept: callers read it off the class

    # ----------------------------------------------------------------------------- feature sources
    def expert_encoder(self, task: str) -> Encoder:
        return self.targets.expert_encoder(task)

    def expert_targets(self, task: str, idx: Tensor) -> Features:
        source = self.inputs.sources[task]
        return self.targets.expert_targets(task, idx, lambda: source.images(idx).to(self.device))

    def batch(self, task: str, idx: Tensor, shared: dict) -> dict[str, Tensor]:
        """Items ``idx`` of ``task``'s source, read once per step for tasks sharing the source."""
        key = ("batch", self.store_of[task])
        if key not in shared:
            shared[key] = {k: v.to(self.device) for k, v in self.inputs.read(task, idx).items()}
        return shared[key]

    # ------------------------------------------------------------------------------------- loss
    @under_autocast
    def task_loss(self, task: str, idx: Tensor, shared: dict) -> Tensor:
        def images() -> Tensor:
            return self.batch(task, idx, shared)["image"]

        owner = self.plan.owner(task)
        if self.plan.feed_forward and owner is not None:
            key = (owner, self.store_of[task]) if owner == "shared" else None
            if key is not None and key in shared:
                adapted = shared[key]
            else:
                adapted = self.model.features(task, images=images())
                if key is not None:
                    shared[key] = adapted
        else:
            adapted = self.model.features(task, merged=self.targets.merged_features(task, idx, images))
        head = self.model.heads[task]
        if self.cfg.objective == "supervised":
            labels = self.batch(task, idx, shared)
            return task_loss(head.task, head(adapted), labels[task], labels.get(f"{task}_mask"))
        targets = self.targets.expert_targets(task, idx, images)
        sites, outputs = self.targets.target_sites(task)
        loss = sum(
            (feature_l1(adapted[s], targets[s], self.plan.token_reduce) for s in sites),
            torch.zeros((), device=self.device),
        )
        if outputs:
            loss = loss + distill_output_loss(head.task, head(adapted), targets["output"])
        return loss

    def step_loss(self) -> tuple[Tensor, dict[str, float]]:
        batches = {store: next(sampler) for store, sampler in self.samplers.items()}
        shared: dict = {}
        parts = {t: self.task_loss(t, batches[self.store_of[t]], shared) for t in self.model.tasks}
        return sum(parts.values()), {t: v.item() for t, v in parts.items()}

    def iterations(self) -> int:
        """Iterations of the loop: ``steps``, or ``epochs`` passes over the (smallest) input set."""
        n = min(self.num_inputs.values())
        if self.cfg.online:
            return n
        if self.cfg.epochs is None:
            return self.cfg.steps
        per_iteration = self.cfg.batch_size * (
            self.cfg.batches_per_task if self.schedule == "reference" else 1
        )
        return max(1, math.ceil(self.cfg.epochs * round(n * self.cfg.fraction) / per_iteration))

    def train(self) -> list[float]:
        """Train the adapters (and/or heads) with the configured schedule; returns the loss per iteration."""
        params = self.model.trainable_parameters()
        if not params:
            raise ValueError(f"realigner {self.cfg.realigner!r} has nothing to train")
        iterations = self.iterations()
        per_iteration = (
            len(self.model.tasks) * self.cfg.batches_per_task if self.schedule == "reference" else 1
        )
        self.optimizer, update = make_update(self.cfg, params, iterations * per_iteration)
        if self.model.train_heads:
            self.model.heads.train()
        curve = []
        show = self.cfg.progress and self.runtime.is_global_zero
        desc = f"realign {self.cfg.realigner} ({self.schedule})"
        bar = progress_bar(range(iterations), desc, show=show)
        unwritten = f"the {self.cfg.realigner} adapters and the run's later outputs"
        for i in bar:
            curve.append(self.iteration(update))
            bar.set_postfix(loss=f"{curve[-1]:.4f}")
            # ranks train alike and never meet otherwise: a lost peer stops every rank at this step
            check_peers(self.runtime, f"{desc}, iteration {i + 1} of {iterations}", unwritten)
        self.model.eval()
        return curve

    def iteration(self, update: Callable[[Tensor], None]) -> float:
        """One iteration of the schedule; returns its recorded loss (see the module docstring)."""
        if self.schedule == "joint":
            loss, _ = self.step_loss()
            update(loss)
            return loss.item()
        total = 0.0
        for task in self.model.tasks:
            for _ in range(self.cfg.batches_per_task):
                loss = self.task_loss(task, next(self.task_samplers[task]), {})
                update(loss)
                total += loss.item() / self.cfg.batches_per_task
        return total


def place(modules: list[nn.Module], device: torch.device) -> list[nn.Module]:
    """``modules`` moved to ``device`` (in place; a no-op where they are already)."""
    return [module.to(device) for module in modules]


def make_update(
    cfg: RealignConfig, params: list[nn.Parameter], total_steps: int
) -> tuple[torch.optim.Optimizer, Callable[[Tensor], None]]:
    """The configured optimizer (and LR schedule) and one update: zero, backward, clip, step."""
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = None
    if cfg.lr_schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=max(1, total_steps), pct_start=cfg.warmup
        )

    def update(loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)  # only tensors that got a gradient move
        loss.backward()
        if cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    return optimizer, update


def realign(
    make_encoder: Callable[[], Encoder],
    merged_state: dict[str, Tensor],
    expert_states: dict[str, dict[str, Tensor]],
    heads: dict[str, nn.Module],
    inputs: RealignInputs,
    cfg: RealignConfig,
    cache: FeatureCache | None = None,
) -> tuple[RealignedModel, list[float]]:
    """Train ``cfg.realigner`` on ``inputs`` on the current runtime; return the realigned (inference) model,
    back on the device the encoder was built on (with the heads), and the loss curve."""
    run = Realignment(make_encoder, merged_state, expert_states, heads, inputs, cfg, cache)
    try:
        curve = run.train()
    finally:
        place(run.placed, run.home)
    return run.model, curve
