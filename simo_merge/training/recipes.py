"""The cached training stages of a run folder: θ0 (pretrained by masked reconstruction, or read from
``encoder.checkpoint`` / ``encoder.pretrained``), one fine-tuned expert per task, and the MTL baseline.

Each stage is written to the run folder with the hash of the config sections it depends on (and of the θ0
file it started from), so a rerun with the same config reuses it and a changed recipe retrains only what
depends on it. Each stage draws from its own seed (:func:`simo_merge.seeding.stage_seed`), so reusing one
stage never shifts the random draws of the next. ``simo-merge demo`` and ``train-experts`` run these.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader

from simo_merge.config import EncoderConfig
from simo_merge.data import (
    DataConfig,
    augmentation,
    build_task_splits,
    data_read,
    task_data,
    task_groups,
)
from simo_merge.encoders import Encoder, build_encoder
from simo_merge.encoders.pretrained import file_sha256
from simo_merge.heads import TaskHead, build_head
from simo_merge.io.checkpoint import header_meta, load_state, save_state
from simo_merge.io.provenance import all_verified, verified_state
from simo_merge.model import MultiTaskModel
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.pool.folder import EXPERT_ROLE, HEAD_ROLE, load_head, load_pool_dir, save_expert
from simo_merge.protocols import get_protocol
from simo_merge.runtime import current, on_rank_zero
from simo_merge.seeding import stage_seed
from simo_merge.training.finetune import FinetuneRecipe, RecipeConfig, finetune
from simo_merge.training.pretrain import pretrain_masked_reconstruction


@dataclass
class HeadConfig:
    kind: str = "linear"
    taps: list[int] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainConfig:
    """Masked-reconstruction pretraining of θ0; ``steps=0`` skips it: θ0 is then the initialised encoder
    (the seeded random init, or the weights ``encoder.kwargs`` load, e.g. a real pretrained ViT)."""

    steps: int = 200
    lr: float = 1e-3
    mask_ratio: float = 0.5


class TrainingSections(Protocol):
    """The sections of a job config (e.g. the demo's) that θ0, the experts and the MTL model depend on."""

    encoder: EncoderConfig
    data: DataConfig
    head: HeadConfig
    pretrain: PretrainConfig
    expert: RecipeConfig
    mtl: RecipeConfig
    seed: int
    progress: bool


#: the base recipe of a θ0 pretrained here (the demo's tiny ViT after a few hundred masked-reconstruction
#: steps): a larger encoder lr than a real backbone tolerates
SCRATCH_RECIPE = FinetuneRecipe(
    probe_steps=50, finetune_steps=250, probe_lr_head=3e-3, lr_head=3e-3, lr_encoder=5e-4
)
#: the base recipe of a θ0 read from ``encoder.checkpoint`` / ``encoder.pretrained``: a real backbone
REAL_BACKBONE_RECIPE = FinetuneRecipe()


def base_recipe(cfg: TrainingSections) -> tuple[FinetuneRecipe, str]:
    """The recipe a θ0 calls for before the config's own ``expert:``/``mtl:`` fields, and why."""
    weights = cfg.encoder.weights()
    if weights:
        return REAL_BACKBONE_RECIPE, f"real-backbone recipe (θ0 from encoder.{next(iter(weights))})"
    return SCRATCH_RECIPE, "recipe of a θ0 pretrained here (no encoder.checkpoint/pretrained)"


def resolved_recipe(cfg: TrainingSections, section: str) -> FinetuneRecipe:
    """The ``section`` ("expert" or "mtl") recipe: its base (:func:`base_recipe`) with the fields set."""
    return getattr(cfg, section).over(base_recipe(cfg)[0])


def describe_recipe(cfg: TrainingSections, section: str) -> str:
    """``expert recipe: probe 100 steps (head lr 0.001), ...; real-backbone recipe (...), set: ...``."""
    r, (_, why) = resolved_recipe(cfg, section), base_recipe(cfg)
    given = getattr(cfg, section).given()
    return (
        f"{section} recipe: probe {r.probe_steps} steps (head lr {r.probe_lr:g}), fine-tune "
        f"{r.finetune_steps} steps (encoder lr {r.lr_encoder:g}, head lr {r.lr_head:g}), weight decay "
        f"{r.weight_decay:g}, clip {r.clip:g}; the {why}"
        + (f", with {section}.{{{', '.join(f'{k}: {v}' for k, v in given.items())}}} set" if given else "")
    )


def loss_first_last(curve: list[float]) -> list[float]:
    """First and last loss of a training curve; empty when no step ran (e.g. ``pretrain.steps=0``)."""
    return [curve[0], curve[-1]] if curve else []


def loss_span(curve: list[float]) -> str:
    """``"0.548 -> 0.456"`` for log lines, or ``"n/a, 0 steps"`` when no step ran."""
    return f"{curve[0]:.3f} -> {curve[-1]:.3f}" if curve else "n/a, 0 steps"


def config_key(*parts: Any) -> str:
    """A short stable hash of config sections, used to decide whether a cached artefact is reusable."""
    text = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def theta0_key(cfg: TrainingSections) -> str:
    """What θ0 depends on: the given file's content, or the pretraining config."""
    weights = cfg.encoder.weights()
    if "checkpoint" in weights:
        path = Path(weights["checkpoint"])
        if not path.is_file():
            raise FileNotFoundError(f"encoder.checkpoint: file {path} not found")
        return config_key(cfg.encoder, file_sha256(path))
    if weights:  # the input normalisation is recorded in θ0's sidecar, so it is part of the key
        return config_key(cfg.encoder, get_protocol(cfg.data.protocol).normalisation)
    return config_key(cfg.encoder, cfg.pretrain, cfg.data, cfg.seed)


class DemoData:
    """Datasets of the three splits and seeded training loaders (evaluation reads the splits through the
    task pool, :mod:`simo_merge.taskpool`): one data set every task reads (SIMO), or one per task
    (``data.per_task``, SISO: each task its own data set and label space)."""

    def __init__(self, cfg: DataConfig, cache_dir: Path, seed: int) -> None:
        self.cfg = cfg
        roles = ("train", "val", "test")
        self.splits = {role: build_task_splits(cfg, cfg.tasks, role, seed, cache_dir) for role in roles}
        train = {t: dataset for dataset, tasks in self.splits["train"] for t in tasks}
        self.specs = {t: train[t].task_specs[t] for t in cfg.tasks}
        self.sections = {t: section for section, tasks in task_groups(cfg, cfg.tasks) for t in tasks}

    @property
    def sets(self) -> dict[str, Any]:
        """role -> the one data set every task reads (SIMO data only)."""
        if len(self.splits["train"]) != 1 or self.cfg.per_task:
            raise ValueError("data.per_task: each task reads its own data set; there is no shared one")
        return {role: groups[0][0] for role, groups in self.splits.items()}

    def dataset(self, role: str, task: str) -> Any:
        """The ``role`` data set ``task`` reads."""
        return next(dataset for dataset, tasks in self.splits[role] if task in tasks)

    def section(self, task: str) -> DataConfig:
        """The data section serving ``task`` (its ``per_task`` entry over the shared one)."""
        return self.sections[task]

    def augmentation(self, task: str) -> str:
        """``task``'s training augmentation in words (printed at start, recorded in its sidecar)."""
        return augmentation(self.section(task), {task: self.specs[task]})

    def provenance(self, task: str) -> dict[str, Any]:
        """What ``task``'s expert was trained on: its data set, root and split, and the augmentation."""
        return {**data_read(self.cfg, task, "train"), "augmentation": self.augmentation(task)}

    def train_loader(self, seed: int, task: str | None = None) -> DataLoader:
        """A training loader of ``task``'s data set (default: the shared one, every task) whose shuffle,
        augmentation and global torch draws all restart from ``seed``."""
        torch.manual_seed(seed)
        dataset = self.sets["train"] if task is None else self.dataset("train", task)
        batch_size = (self.cfg if task is None else self.section(task)).batch_size
        transform = getattr(dataset, "transform", None)
        if hasattr(transform, "reseed"):
            transform.reseed(seed)
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size, shuffle=True, drop_last=True, generator=gen)


class ModelFactory:
    """Fresh, seeded encoders and heads of a config: every one starts from the same draws, whatever ran
    before; weights (θ0, an expert, a merge) are loaded by the caller."""

    def __init__(self, cfg: TrainingSections, data: DemoData) -> None:
        self.cfg = cfg
        self.data = data
        self.image_size = tuple(cfg.data.size)

    def recipe(self, section: str) -> FinetuneRecipe:
        """The resolved ``section`` ("expert" or "mtl") recipe (:func:`resolved_recipe`)."""
        return resolved_recipe(self.cfg, section)

    @property
    def arch(self) -> str:
        """The architecture name to build: a timm ``pretrained`` tag becomes ``arch.tag`` (its mean/std)."""
        e = self.cfg.encoder
        tag = e.weights().get("pretrained")
        if e.library == "timm" and isinstance(tag, str) and "/" not in tag:
            return f"{e.arch.split('.')[0]}.{tag}"
        return e.arch

    @property
    def normalisation(self) -> str:
        """How the encoders of this run map [0, 1] images to their input (the data protocol's choice)."""
        return get_protocol(self.cfg.data.protocol).normalisation

    def encoder_record(self) -> dict[str, Any]:
        """The encoder config written to θ0's sidecar: what rebuilds the bare architecture, + weights
        and the input normalisation the pool's models were trained with."""
        e = self.cfg.encoder
        return {
            "library": e.library,
            "arch": self.arch,
            "kwargs": e.architecture_kwargs(),
            "checkpoint": e.checkpoint,
            "pretrained": e.pretrained,
            "normalisation": self.normalisation,
        }

    def new_encoder(self) -> Encoder:
        """The bare architecture (random init, seeded); weights are loaded by the caller."""
        torch.manual_seed(self.cfg.seed)
        e = self.cfg.encoder
        return build_encoder(e.library, self.arch, self.normalisation, **e.architecture_kwargs())

    def new_head(self, task: str, seed_offset: int = 0) -> TaskHead:
        """A fresh head of ``task`` (seeded by the run seed and ``seed_offset``) on a fresh encoder."""
        torch.manual_seed(self.cfg.seed + 1000 + seed_offset)
        h = self.cfg.head
        return build_head(
            h.kind, self.data.specs[task], self.new_encoder(), self.image_size, h.taps, **h.options
        )


def save_mtl(mtl_dir: Path, model: MultiTaskModel, key: str) -> None:
    """The MTL baseline's heads, then its encoder (written last, it commits the stage; every file is
    verified on reuse anyway), each with its config ``key`` and role."""
    for t, head in model.heads.items():
        meta = {"head": head.config(), "key": key, "role": f"MTL head {t}"}
        save_state(mtl_dir / f"{t}_head.safetensors", head.state_dict(), meta, on_rank_zero())
    meta = {"key": key, "role": "MTL encoder"}
    save_state(mtl_dir / "encoder.safetensors", model.encoder.model_state(), meta, on_rank_zero())


def pretraining_curve(cfg: TrainingSections, data: DemoData, encoder: Encoder) -> list[float]:
    """Pretrain ``encoder`` by masked reconstruction as ``cfg.pretrain`` says (nothing at ``steps=0``);
    the loss per step."""
    p = cfg.pretrain
    if p.steps <= 0:
        return []
    loader = data.train_loader(stage_seed(cfg.seed, "theta0"))
    seed, progress = cfg.seed, cfg.progress
    return pretrain_masked_reconstruction(encoder, loader, p.steps, p.lr, p.mask_ratio, seed, progress)


class CachedTraining(ModelFactory):
    """θ0, the experts (``<out>/experts``: a pool folder) and the MTL model (``<out>/mtl``), each trained
    once and reused while its config key matches; log lines and stage timings are kept for the report.
    Under several processes all ranks decide each reuse together (a file one rank cannot verify is
    retrained by every rank), so no rank enters a DDP training alone."""

    def __init__(self, cfg: TrainingSections, out: Path) -> None:
        super().__init__(cfg, DemoData(cfg.data, out / "cache", cfg.seed))
        self.out = out
        self.pool_dir = out / "experts"
        self.log: list[str] = []
        self.timings: dict[str, float] = {}

    def say(self, text: str) -> None:
        """Print ``text`` now and keep it for the report."""
        print(text, flush=True)
        self.log.append(text)

    @functools.cache  # noqa: B019  (one per run: the instance lives as long as the run)
    def theta0_key(self) -> str:
        """What θ0 depends on (:func:`theta0_key`), computed once."""
        return theta0_key(self.cfg)

    def theta0(self) -> dict[str, torch.Tensor]:
        """θ0: from ``encoder.checkpoint``/``encoder.pretrained`` when given, else pretrained here."""
        path = self.pool_dir / "theta0.safetensors"
        key = self.theta0_key()
        cached = verified_state(path, key, self.theta0_role())
        if current().everywhere(cached is not None):  # decided together: no rank trains θ0 alone
            return cached
        weights = self.cfg.encoder.weights()
        if weights:
            return self.given_theta0(path, key, weights)
        return self.pretrained_theta0(path, key)

    def theta0_role(self) -> str:
        """The role θ0's file records: where its weights came from."""
        if self.cfg.encoder.weights() or self.cfg.pretrain.steps > 0:
            return "pretrained θ0"
        return "initialised θ0 (pretrain.steps=0)"

    def pretrained_theta0(self, path: Path, key: str) -> dict[str, torch.Tensor]:
        """θ0 pretrained here by masked reconstruction (or, with ``pretrain.steps=0``, the initialised
        encoder), written to ``path`` with its loss curve's ends."""
        start = time.perf_counter()
        encoder = self.new_encoder()
        p = self.cfg.pretrain
        curve = pretraining_curve(self.cfg, self.data, encoder)
        state = encoder.model_state()
        source = {"kind": "masked reconstruction", "steps": p.steps}
        meta = {"key": key, "role": self.theta0_role(), "encoder": self.encoder_record(), "source": source}
        save_state(path, state, {**meta, "loss_first_last": loss_first_last(curve)}, on_rank_zero())
        self.timings["pretrain"] = time.perf_counter() - start
        seconds, encoder_cfg = self.timings["pretrain"], self.cfg.encoder
        trained = f"pretrained θ0 (masked reconstruction L1 {loss_span(curve)}) in {seconds:.0f}s"
        kept = f"θ0 = the initialised encoder {encoder_cfg.arch} {encoder_cfg.kwargs} (pretrain.steps=0)"
        self.say(trained if p.steps > 0 else kept)
        return state

    def given_theta0(self, path: Path, key: str, weights: dict[str, Any]) -> dict[str, torch.Tensor]:
        """θ0 read from a checkpoint or published weights (no masked pretraining); the sidecar records
        the source file and its SHA-256."""
        e = self.cfg.encoder
        torch.manual_seed(self.cfg.seed)
        encoder = build_encoder(
            e.library, self.arch, self.normalisation, **weights, **e.architecture_kwargs()
        )
        source = encoder.source.as_dict()
        state = encoder.model_state()
        meta = {"key": key, "role": self.theta0_role(), "encoder": self.encoder_record(), "source": source}
        save_state(path, state, meta, on_rank_zero())
        self.say(
            f"θ0 from {source['kind']} {source['file']} (sha256 {source['sha256'][:12]}); "
            "masked pretraining skipped"
        )
        return state

    def theta0_hash(self) -> str:
        """Content hash of the θ0 file, as :func:`save_state` recorded it in the file's own header (and
        :meth:`theta0` verified it): read, not recomputed over every tensor."""
        return header_meta(self.pool_dir / "theta0.safetensors")["content_hash"]

    def experts(self) -> ExpertPool:
        """The pool of θ0 and one expert per task, fine-tuning only the experts not cached for this θ0."""
        self.say(describe_recipe(self.cfg, "expert"))
        for task in self.data.specs:
            self.say(f"{task}: training augmentation {self.data.augmentation(task)}")
        base = self.theta0()
        current().barrier()  # several processes: rank 0 has published θ0 before any rank reads it
        base_hash = self.theta0_hash()  # an expert is reused only if it was trained from this very θ0
        c, recipe = self.cfg, self.recipe("expert")
        for i, task in enumerate(self.data.specs):
            files = {
                self.pool_dir / f"{task}.safetensors": EXPERT_ROLE,
                self.pool_dir / f"{task}_head.safetensors": HEAD_ROLE,
            }
            data = task_data(c.data, task) if task in c.data.per_task else c.data  # what it reads
            key = config_key(self.theta0_key(), data, c.head, recipe, c.seed, task, base_hash)
            if not current().everywhere(all_verified(files, key)):  # every rank trains, or none
                self.train_expert(base, task, i, key)
        current().barrier()  # ... and every expert before any rank lists the pool
        return load_pool_dir(self.pool_dir, list(self.data.specs))

    def train_expert(self, base: dict[str, torch.Tensor], task: str, index: int, key: str) -> None:
        """Fine-tune the ``task`` expert (the ``index``-th task's head seed) from θ0 into the pool folder."""
        start = time.perf_counter()
        encoder = self.new_encoder()
        encoder.load_model_state(base)
        model, curve = finetune(
            encoder,
            {task: self.new_head(task, index)},
            self.data.train_loader(stage_seed(self.cfg.seed, "expert", task), task),
            self.recipe("expert"),
            desc=f"expert {task}",
            progress=self.cfg.progress,
        )
        meta = {"key": key, "trained_on": self.data.provenance(task), "recipe": asdict(self.recipe("expert"))}
        save_expert(self.pool_dir, task, encoder.model_state(), model.heads[task], meta)
        self.timings[f"expert {task}"] = time.perf_counter() - start
        self.say(
            f"fine-tuned the {task} expert (loss {loss_span(curve)}) in {self.timings[f'expert {task}']:.0f}s"
        )

    def mtl(self, base: dict[str, torch.Tensor]) -> MultiTaskModel:
        """The multi-task baseline: one encoder fine-tuned from θ0 with every task's head, cached."""
        mtl_dir = self.out / "mtl"
        c = self.cfg
        recipe = self.recipe("mtl")
        key = config_key(self.theta0_key(), c.data, c.head, recipe, c.seed, self.theta0_hash())
        enc_path = mtl_dir / "encoder.safetensors"
        encoder = self.new_encoder()
        files = {
            **{mtl_dir / f"{t}_head.safetensors": f"MTL head {t}" for t in self.data.specs},
            enc_path: "MTL encoder",
        }
        if current().everywhere(all_verified(files, key)):
            encoder.load_model_state(load_state(enc_path))
            heads = {t: load_head(mtl_dir / f"{t}_head.safetensors") for t in self.data.specs}
            return MultiTaskModel(encoder, heads).eval()
        start = time.perf_counter()
        encoder.load_model_state(base)
        heads = {t: self.new_head(t, i) for i, t in enumerate(self.data.specs)}
        loader = self.data.train_loader(stage_seed(c.seed, "mtl"))
        self.say(describe_recipe(c, "mtl"))
        model, curve = finetune(encoder, heads, loader, recipe, desc="MTL", progress=c.progress)
        save_mtl(mtl_dir, model, key)
        self.timings["mtl"] = time.perf_counter() - start
        self.say(f"trained the MTL baseline (loss {loss_span(curve)}) in {self.timings['mtl']:.0f}s")
        return model
