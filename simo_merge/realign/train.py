"""The shared realignment loop: any plan, either objective, cached or recomputed features.

Unsupervised (default): L1 between the adapted merged features and the expert's at the plan's loss
sites (the heads realigner distils the expert model's outputs instead). Supervised: the task losses of
the frozen heads (or re-trained heads) on a small labelled set.

Recipes (``recipe=``; fields the user left at their defaults take the recipe's values):

- ``"surgery"`` (default; Surgery / SurgeryV2 papers, no labels needed): unsupervised, Adam, lr 1e-3,
  batch 16, 500 iterations, each iteration visiting every task.
- ``"simo"`` (the SIMO paper, arXiv 2504.11268, needs labels): supervised, the adapters *and* the heads
  trained (``train_heads``), AdamW (torch's weight decay 0.01; the paper names none), lr 1e-5, OneCycle
  with 10% warm-up, gradient-norm clipping at 35, one epoch over the labelled inputs.

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

``use_cache=False`` recomputes the expert's (and, where frozen, the merged) features at every step, as
the reference implementations do; for the same seed it sees the same batches and gives the same loss
curve up to float rounding (``benchmarks/realign_speed.py`` times both).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from simo_merge.checkpoint import state_hash
from simo_merge.encoders import Encoder
from simo_merge.features.cache import FeatureCache, compute_in_batches, tensor_hash
from simo_merge.features.inputs import RealignInputs
from simo_merge.features.losses import distill_output_loss
from simo_merge.features.sampling import IndexSampler
from simo_merge.features.sites import Features, Site, head_sites, run_encoder
from simo_merge.realign import REALIGNERS
from simo_merge.realign.model import RealignedModel
from simo_merge.realign.plan import Plan
from simo_merge.training.losses import task_loss

OBJECTIVES = ("unsupervised", "supervised")
SCHEDULES = ("reference", "joint")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "onecycle")
#: per recipe, the values it gives to fields left at their defaults (see the module docstring)
RECIPES: dict[str, dict] = {
    "surgery": {},
    "simo": {
        "objective": "supervised",
        "train_heads": True,
        "optimizer": "adamw",
        "weight_decay": 0.01,
        "lr": 1e-5,
        "lr_schedule": "onecycle",
        "warmup": 0.1,
        "clip_grad": 35.0,
        "epochs": 1.0,
        "schedule": "joint",
    },
}
#: the realigners whose papers train per task with the reference schedule
REFERENCE_SCHEDULE_REALIGNERS = ("surgery", "deep")


@dataclass
class RealignConfig:
    """One realignment run (the CLI's ``realigner=deep objective=unsupervised rank=16`` etc.)."""

    realigner: str = "surgery"
    objective: str = "unsupervised"
    rank: int = 16
    steps: int = 500
    lr: float = 1e-3
    batch_size: int = 16
    token_reduce: str | None = None  # None: the realigner's default ("mean" for deep, else per token)
    match: str | None = None  # expert "features", expert head "outputs", "both"; None: realigner default
    fraction: float = 1.0  # use this fraction of the inputs (a seeded subset)
    online: bool = False  # batch size 1, one pass, each sample used once
    use_cache: bool = True
    seed: int = 0
    progress: bool = True
    recipe: str = "surgery"  # "surgery" (unsupervised papers' recipe) or "simo" (supervised SIMO recipe)
    schedule: str | None = None  # "reference" | "joint"; None: reference for surgery/deep on classification
    batches_per_task: int = 2  # reference schedule: batches per task per iteration, one step each
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # "constant" | "onecycle" (max lr = lr, warm-up fraction = warmup)
    warmup: float = 0.1
    clip_grad: float | None = None  # clip the global gradient norm of the trained tensors at this value
    epochs: float | None = None  # if set, replaces steps: this many passes over the inputs
    train_heads: bool = False  # also train (copies of) the heads, next to the adapters

    def resolved(self) -> RealignConfig:
        """The config with the recipe's values filled into every field still at its default."""
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(RealignConfig)}
        updates = {
            name: value
            for name, value in RECIPES[self.recipe].items()
            if getattr(self, name) == defaults[name]
        }
        return dataclasses.replace(self, **updates)

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        if self.schedule not in (None, *SCHEDULES):
            raise ValueError(f"schedule must be 'reference', 'joint' or None, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1) (a fraction of the steps), got {self.warmup}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be > 0 or None, got {self.clip_grad}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0 or None, got {self.epochs}")
        if self.batches_per_task < 1:
            raise ValueError(f"batches_per_task must be >= 1, got {self.batches_per_task}")
        if self.online and self.schedule == "reference":
            raise ValueError("online=true draws each input once in one joint pass; use schedule=joint")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.match not in (None, "features", "outputs", "both"):
            raise ValueError(f"match must be 'features', 'outputs' or 'both', got {self.match!r}")
        if self.token_reduce not in (None, "none", "mean"):
            raise ValueError(f"token_reduce must be 'none' or 'mean', got {self.token_reduce!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.rank < 1 or self.steps < 0 or self.batch_size < 1:
            raise ValueError(
                f"rank, batch_size must be >= 1 and steps >= 0 (got {self.rank}, {self.batch_size}, "
                f"{self.steps})"
            )


def feature_l1(adapted: Tensor, target: Tensor, token_reduce: str) -> Tensor:
    """Mean L1; block tokens ``[B, N, D]`` are averaged over tokens first when ``token_reduce="mean"``
    (a target may arrive already averaged, ``[B, D]``: the feature cache stores only what the loss reads)."""
    if token_reduce == "mean":
        adapted = adapted.mean(1) if adapted.dim() == 3 else adapted
        target = target.mean(1) if target.dim() == 3 else target
    return (adapted - target).abs().mean()


class Realignment:
    """Holds the model, caches and samplers of one run; :meth:`train` runs it."""

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
        self.make_encoder = make_encoder
        self.inputs = inputs
        self.cache = cache or FeatureCache()
        encoder = make_encoder()
        encoder.load_model_state(merged_state)
        self.merged_hash = state_hash(merged_state)
        tasks = list(heads)
        plan: Plan = REALIGNERS.get(cfg.realigner)(encoder.depth, {t: head_sites(heads[t]) for t in tasks})
        if cfg.token_reduce is not None:
            plan = dataclasses.replace(plan, token_reduce=cfg.token_reduce)
        if cfg.match is not None and not plan.trains_heads:
            plan = dataclasses.replace(plan, match=cfg.match)
        self.plan = plan
        torch.manual_seed(cfg.seed)
        self.model = RealignedModel(encoder, heads, plan, cfg.rank, cfg.train_heads).eval()
        self.expert_heads = heads
        self.expert_states = expert_states
        self._experts: dict[str, Encoder] = {}
        self._hashes: dict = {}
        missing = [t for t in tasks if t not in inputs.images]
        if missing:
            raise KeyError(f"no realignment inputs for task(s) {missing}")
        if cfg.objective == "supervised":
            absent = [t for t in tasks if t not in inputs.labels]
            if absent:
                hint = " (without labels use the default recipe=surgery)" if cfg.recipe == "simo" else ""
                raise KeyError(f"objective=supervised needs labels for task(s) {absent}{hint}")
        self.schedule = cfg.schedule or self.default_schedule(cfg, heads)
        # one sampler per distinct input tensor: SIMO tasks share inputs and see the same batches
        self.store_of = {t: id(inputs.images[t]) for t in tasks}
        self.samplers = {}
        for offset, store in enumerate(dict.fromkeys(self.store_of.values())):
            task = next(t for t, s in self.store_of.items() if s == store)
            n = inputs.images[task].shape[0]
            self.samplers[store] = iter(
                IndexSampler(n, cfg.batch_size, cfg.seed + offset, cfg.fraction, cfg.online)
            )
        self.num_inputs = {t: inputs.images[t].shape[0] for t in tasks}
        # reference schedule: every task draws from its own shuffled inputs, as its own loader would
        self.task_samplers = {
            t: iter(IndexSampler(self.num_inputs[t], cfg.batch_size, cfg.seed + i, cfg.fraction))
            for i, t in enumerate(tasks)
        }
        self.optimizer: torch.optim.Optimizer | None = None

    @staticmethod
    def default_schedule(cfg: RealignConfig, heads: dict[str, nn.Module]) -> str:
        """``reference`` for surgery/deep when every head is a classifier (the papers' CLIP setting)."""
        classification = all(getattr(h.task, "kind", None) == "classification" for h in heads.values())
        if cfg.realigner in REFERENCE_SCHEDULE_REALIGNERS and classification and not cfg.online:
            return "reference"
        return "joint"

    # ----------------------------------------------------------------------------- feature sources
    def expert_encoder(self, task: str) -> Encoder:
        if task not in self._experts:
            enc = self.make_encoder()
            enc.load_model_state(self.expert_states[task])
            self._experts[task] = enc.eval().requires_grad_(False)
        return self._experts[task]

    def _target_sites(self, task: str) -> tuple[list[Site], bool]:
        """Expert feature sites the loss compares, and whether it also needs the expert's head outputs."""
        if self.plan.trains_heads:
            return [], True
        sites = [] if self.plan.match == "outputs" else list(self.plan.loss_sites[task])
        return sites, self.plan.match in ("outputs", "both")

    def _reduces_tokens(self) -> bool:
        """The loss reads token means of block features (deep's default): targets are stored reduced."""
        return self.plan.token_reduce == "mean"

    def _expert_targets_fn(self, task: str) -> Callable[[Tensor], Features]:
        encoder = self.expert_encoder(task)
        head = self.expert_heads[task]
        sites, outputs = self._target_sites(task)
        reduce = self._reduces_tokens()

        def targets(x: Tensor) -> Features:
            feats = run_encoder(encoder, x, sites + (head_sites(head) if outputs else []))
            # keep only what the loss reads: [B, D] token means instead of [B, N, D] maps when it reads means
            found = {s: feats[s].mean(1) if reduce and feats[s].dim() == 3 else feats[s] for s in sites}
            if outputs:
                found["output"] = head(feats)
            return found

        return targets

    def _cache_key(self, task: str, state: dict[str, Tensor] | None, what: str) -> str:
        """(inputs name, input hash, checkpoint hash, what); hashes are computed once per run."""
        store = self.store_of[task]
        if store not in self._hashes:
            self._hashes[store] = tensor_hash(self.inputs.images[task])
        if state is None:
            checkpoint = self.merged_hash
        else:
            if task not in self._hashes:
                self._hashes[task] = state_hash(state)
            checkpoint = self._hashes[task]
        return f"{self.inputs.name.replace('/', '_')}-{self._hashes[store]}-{checkpoint}-{what}"

    def _merged_sites(self) -> list[Site]:
        return sorted({s for t in self.model.tasks for s in self.model.sites_needed(t)}, key=str)

    def expert_targets(self, task: str, idx: Tensor) -> Features:
        images = self.inputs.images[task]
        if not self.cfg.use_cache:
            with torch.no_grad():
                return self._expert_targets_fn(task)(images[idx])
        sites, outputs = self._target_sites(task)
        reduced = "-tokenmean" if self._reduces_tokens() else ""
        key = self._cache_key(
            task, self.expert_states[task], f"{'_'.join(map(str, sites))}-{int(outputs)}-{task}{reduced}"
        )
        feats = self.cache.get(key, lambda: compute_in_batches(self._expert_targets_fn(task), images))
        return {s: v[idx] for s, v in feats.items()}

    def merged_features(self, task: str, idx: Tensor) -> Features | None:
        """Frozen merged features (post-hoc plans only), cached unless ``use_cache=False``."""
        if self.plan.feed_forward and self.plan.owner(task) is not None:
            return None
        images = self.inputs.images[task]
        sites = self._merged_sites()
        if not self.cfg.use_cache:
            with torch.no_grad():
                return run_encoder(self.model.encoder, images[idx], sites)
        key = self._cache_key(task, None, f"{'_'.join(map(str, sites))}-merged")
        feats = self.cache.get(
            key, lambda: compute_in_batches(lambda x: run_encoder(self.model.encoder, x, sites), images)
        )
        return {s: v[idx] for s, v in feats.items()}

    # ------------------------------------------------------------------------------------- loss
    def task_loss(self, task: str, idx: Tensor, shared: dict) -> Tensor:
        images = self.inputs.images[task]
        owner = self.plan.owner(task)
        if self.plan.feed_forward and owner is not None:
            key = (owner, self.store_of[task]) if owner == "shared" else None
            if key is not None and key in shared:
                adapted = shared[key]
            else:
                adapted = self.model.features(task, images=images[idx])
                if key is not None:
                    shared[key] = adapted
        else:
            adapted = self.model.features(task, merged=self.merged_features(task, idx))
        head = self.model.heads[task]
        if self.cfg.objective == "supervised":
            labels = self.inputs.labels[task]
            mask = labels.get(f"{task}_mask")
            return task_loss(head.task, head(adapted), labels[task][idx], None if mask is None else mask[idx])
        targets = self.expert_targets(task, idx)
        sites, outputs = self._target_sites(task)
        loss = sum(
            (feature_l1(adapted[s], targets[s], self.plan.token_reduce) for s in sites), torch.zeros(())
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

    def optimizer_steps(self, iterations: int) -> int:
        """Optimizer steps ``iterations`` iterations take (all tasks together)."""
        if self.schedule == "reference":
            return iterations * len(self.model.tasks) * self.cfg.batches_per_task
        return iterations

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        kind = torch.optim.AdamW if self.cfg.optimizer == "adamw" else torch.optim.Adam
        return kind(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def train(self) -> list[float]:
        """Train the adapters (and/or heads) with the configured schedule; returns the loss per iteration."""
        params = self.model.trainable_parameters()
        if not params:
            raise ValueError(f"realigner {self.cfg.realigner!r} has nothing to train")
        iterations = self.iterations()
        optimizer = self.optimizer = self._optimizer(params)
        scheduler = None
        if self.cfg.lr_schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=self.cfg.lr,
                total_steps=max(1, self.optimizer_steps(iterations)),
                pct_start=self.cfg.warmup,
            )

        def update(loss: Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)  # only tensors that got a gradient move
            loss.backward()
            if self.cfg.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()

        if self.model.train_heads:
            self.model.heads.train()
        curve = []
        bar = tqdm(
            range(iterations),
            desc=f"realign {self.cfg.realigner} ({self.schedule})",
            disable=not self.cfg.progress,
            leave=False,
            dynamic_ncols=True,
        )
        for _ in bar:
            if self.schedule == "joint":
                loss, _ = self.step_loss()
                update(loss)
                curve.append(loss.item())
            else:
                total = 0.0
                for task in self.model.tasks:
                    for _ in range(self.cfg.batches_per_task):
                        loss = self.task_loss(task, next(self.task_samplers[task]), {})
                        update(loss)
                        total += loss.item() / self.cfg.batches_per_task
                curve.append(total)
            bar.set_postfix(loss=f"{curve[-1]:.4f}")
        self.model.eval()
        return curve


def realign(
    make_encoder: Callable[[], Encoder],
    merged_state: dict[str, Tensor],
    expert_states: dict[str, dict[str, Tensor]],
    heads: dict[str, nn.Module],
    inputs: RealignInputs,
    cfg: RealignConfig,
    cache: FeatureCache | None = None,
) -> tuple[RealignedModel, list[float]]:
    """Train ``cfg.realigner`` on ``inputs``; return the realigned (inference) model and the loss curve."""
    run = Realignment(make_encoder, merged_state, expert_states, heads, inputs, cfg, cache)
    return run.model, run.train()
