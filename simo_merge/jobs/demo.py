"""The built-in dense SIMO demo: pretrain θ0 (or read it from ``encoder.checkpoint`` /
``encoder.pretrained``), fine-tune one expert per task, train the MTL baseline,
merge the experts (WA, TA, TIES with λ chosen on val) and evaluate every model on test.

Everything lands in one run folder; trained θ0, experts and MTL model are cached there (keyed by the
config sections that produced them), so a rerun with the same config only re-evaluates.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from simo_merge.atomic import write_json, write_text
from simo_merge.checkpoint import header_meta, load_state, save_state
from simo_merge.config import EncoderConfig, to_yaml
from simo_merge.data import DataConfig, build_split
from simo_merge.encoders import Encoder, build_encoder
from simo_merge.encoders.pretrained import file_sha256
from simo_merge.heads import TaskHead, build_head
from simo_merge.merging import MERGE_METHODS, merge
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.pool.folder import load_head, load_pool_dir, pool_heads, save_expert
from simo_merge.pool.model import MultiTaskModel
from simo_merge.provenance import all_verified, verified_state
from simo_merge.realign.inputs import InputsChoice, choose_inputs, describe, inputs_dataset
from simo_merge.report import bar_chart, markdown_table, result_units, summarize
from simo_merge.runtime import RuntimeConfig
from simo_merge.seeding import stage_seed
from simo_merge.training.evaluate import evaluate
from simo_merge.training.finetune import FinetuneRecipe, finetune
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


@dataclass
class MergeSweepConfig:
    """Merge methods to run; λ of the methods that take one is chosen on val from ``lam_grid``."""

    methods: list[str] = field(default_factory=lambda: ["weight_average", "task_arithmetic", "ties"])
    lam_grid: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])
    params: dict[str, dict[str, Any]] = field(default_factory=lambda: {"ties": {"k": 20}})


@dataclass
class DemoRealignConfig:
    """Realigners stacked on merged rows of the table. Unsupervised ones train on ``split``'s unlabelled
    inputs, held out from the test split unless ``test_time`` asks for the papers' setting (test inputs;
    ``configs/demo.yaml`` does, to reproduce the papers' tables); supervised ones on ``label_split``."""

    realigners: list[str] = field(default_factory=lambda: ["surgery", "deep", "shared-deep", "taps", "heads"])
    apply_to: list[str] = field(default_factory=lambda: ["TA", "TIES"])
    steps: int = 100
    rank: int = 16
    batch_size: int = 16
    lr: float = 1e-3
    objectives: dict[str, str] = field(default_factory=dict)  # realigner -> objective (default: its own)
    # realigner -> recipe ("surgery": the papers' unsupervised recipe, the default; "simo": the SIMO
    # paper's supervised recipe on label_split); each row's params name the recipe that produced it
    recipes: dict[str, str] = field(default_factory=dict)
    split: str = "val"
    test_time: bool = False  # unsupervised realigners train on the unlabelled test inputs (the papers)
    augment: bool = False  # training augmentation on split=train inputs; never unless asked
    label_split: str = "val"

    def objective(self, realigner: str) -> str:
        """``objectives[realigner]``, else the objective the realigner registered as its default."""
        from simo_merge.realign import REALIGNERS

        return self.objectives.get(realigner) or REALIGNERS.facts(realigner)["objective"]

    def inputs(self, data: DataConfig, supervised: bool) -> InputsChoice:
        """The checked training split of the (un)supervised realigners; the demo evaluates on test."""
        if supervised:
            return choose_inputs(data, self.label_split, "test", labelled=True, augment=self.augment)
        return choose_inputs(data, self.split, "test", self.test_time, augment=self.augment)


@dataclass
class DataDependentConfig:
    """``full=true`` rows: data-dependent merges on unlabelled inputs, then realigners on ``realign_on``."""

    methods: list[str] = field(
        default_factory=lambda: ["adamerging", "adamerging_layerwise", "fisher", "regmean"]
    )
    params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "adamerging": {"steps": 100},
            "adamerging_layerwise": {"steps": 100},
            "fisher": {"num_batches": 8},
            "regmean": {"alpha": 0.9, "num_batches": 8},
        }
    )
    realign_on: list[str] = field(default_factory=lambda: ["AdaMerging-LW"])
    split: str = "test"
    batch_size: int = 16


@dataclass
class DataFreeConfig:
    """``full=true`` rows: the newer data-free merges (LiNeS, Consensus, Iso-C, Iso-CTS, TSV-M), their
    scale (λ, or β for LiNeS) chosen on val from the registered grid (or ``grids[method]``), then each
    of ``realigners`` on every one of them; TALL masks (one model per task) is a row without realigners."""

    methods: list[str] = field(
        default_factory=lambda: ["lines", "consensus", "tall_masks", "iso_c", "iso_cts", "tsv_m"]
    )
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    grids: dict[str, list[float]] = field(default_factory=dict)
    realigners: list[str] = field(default_factory=lambda: ["deep", "taps"])


@dataclass
class DemoConfig:
    """The demo / ``train-experts`` job. The fine-tuning recipes (``expert``, ``mtl``) default to
    :class:`FinetuneRecipe`'s, meant for real pretrained backbones (a config for one needs no recipe
    section to get a sane encoder lr); the demo's own recipe for its tiny ViT lives with it in
    ``configs/demo.yaml``, which ``simo-merge demo`` / ``train-experts`` and :func:`run` reads."""

    encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(
            "timm",
            "vit_tiny_patch16_224",
            {"img_size": 64, "patch_size": 8, "depth": 6, "embed_dim": 96, "num_heads": 3},
        )
    )
    data: DataConfig = field(default_factory=DataConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    expert: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    mtl: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    merge: MergeSweepConfig = field(default_factory=MergeSweepConfig)
    realign: DemoRealignConfig = field(default_factory=DemoRealignConfig)
    full: bool = False  # also the data-dependent and newer data-free merges, and realigners on them
    data_dependent: DataDependentConfig = field(default_factory=DataDependentConfig)
    data_free: DataFreeConfig = field(default_factory=DataFreeConfig)
    output_dir: str = "runs/demo"
    seed: int = 0
    threads: int = 2
    progress: bool = True
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def validate(self) -> None:
        """Names, values and combinations that cannot work fail here, before any training."""
        from simo_merge.jobs._checks import check_demo_config

        check_demo_config(self)
        objectives = {self.realign.objective(r) for r in self.realign.realigners}
        for objective in objectives:
            self.realign.inputs(self.data, objective == "supervised")


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


class DemoData:
    """Datasets and loaders of the three splits."""

    def __init__(self, cfg: DataConfig, cache_dir: Path, seed: int) -> None:
        self.sets = {role: build_split(cfg, role, seed, cache_dir) for role in ("train", "val", "test")}
        self.specs = {t: self.sets["train"].task_specs[t] for t in cfg.tasks}
        gen = torch.Generator().manual_seed(seed)
        self.train = DataLoader(
            self.sets["train"], cfg.batch_size, shuffle=True, drop_last=True, generator=gen
        )
        self.val = DataLoader(self.sets["val"], 64)
        self.test = DataLoader(self.sets["test"], 64)
        self.batch_size = cfg.batch_size

    def train_loader(self, seed: int) -> DataLoader:
        """A training loader whose shuffle, augmentation and global torch draws all restart from ``seed``."""
        torch.manual_seed(seed)
        transform = getattr(self.sets["train"], "transform", None)
        if hasattr(transform, "reseed"):
            transform.reseed(seed)
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(self.sets["train"], self.batch_size, shuffle=True, drop_last=True, generator=gen)


class Demo:
    """Runs the demo step by step; each step can be called on its own (e.g. from a notebook)."""

    def __init__(self, cfg: DemoConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.pool_dir = self.out / "experts"
        torch.set_num_threads(cfg.threads)
        self.data = DemoData(cfg.data, self.out / "cache", cfg.seed)
        self.image_size = tuple(cfg.data.size)
        self.log: list[str] = []
        self.timings: dict[str, float] = {}
        self._theta0_key: str | None = None
        self.realign_trained_on: dict[str, dict[str, Any]] = {}  # objective -> training inputs

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.append(text)

    @property
    def arch(self) -> str:
        """The architecture name to build: a timm ``pretrained`` tag becomes ``arch.tag`` (its mean/std)."""
        e = self.cfg.encoder
        tag = e.weights().get("pretrained")
        if e.library == "timm" and isinstance(tag, str) and "/" not in tag:
            return f"{e.arch.split('.')[0]}.{tag}"
        return e.arch

    def encoder_record(self) -> dict[str, Any]:
        """The encoder config written to θ0's sidecar: what rebuilds the bare architecture, + weights."""
        e = self.cfg.encoder
        return {
            "library": e.library,
            "arch": self.arch,
            "kwargs": e.architecture_kwargs(),
            "checkpoint": e.checkpoint,
            "pretrained": e.pretrained,
        }

    def new_encoder(self) -> Encoder:
        """The bare architecture (random init, seeded); weights are loaded by the caller."""
        torch.manual_seed(self.cfg.seed)
        e = self.cfg.encoder
        return build_encoder(e.library, self.arch, **e.architecture_kwargs())

    def theta0_key(self) -> str:
        """What θ0 depends on: the given file's content, or the pretraining config."""
        if self._theta0_key is None:
            weights = self.cfg.encoder.weights()
            if "checkpoint" in weights:
                path = Path(weights["checkpoint"])
                if not path.is_file():
                    raise FileNotFoundError(f"encoder.checkpoint: file {path} not found")
                self._theta0_key = config_key(self.cfg.encoder, file_sha256(path))
            elif weights:
                self._theta0_key = config_key(self.cfg.encoder)
            else:
                self._theta0_key = config_key(
                    self.cfg.encoder, self.cfg.pretrain, self.cfg.data, self.cfg.seed
                )
        return self._theta0_key

    def new_head(self, task: str, seed_offset: int = 0) -> TaskHead:
        torch.manual_seed(self.cfg.seed + 1000 + seed_offset)
        h = self.cfg.head
        return build_head(
            h.kind, self.data.specs[task], self.new_encoder(), self.image_size, h.taps, **h.options
        )

    # ----------------------------------------------------------------------------------- training
    def theta0(self) -> dict[str, torch.Tensor]:
        """θ0: from ``encoder.checkpoint``/``encoder.pretrained`` when given, else pretrained here."""
        path = self.pool_dir / "theta0.safetensors"
        key = self.theta0_key()
        cached = verified_state(path, key)
        if cached is not None:
            return cached
        weights = self.cfg.encoder.weights()
        if weights:
            return self.given_theta0(path, key, weights)
        start = time.perf_counter()
        encoder = self.new_encoder()
        steps = self.cfg.pretrain.steps
        curve = (
            pretrain_masked_reconstruction(
                encoder,
                self.data.train_loader(stage_seed(self.cfg.seed, "theta0")),
                steps,
                self.cfg.pretrain.lr,
                self.cfg.pretrain.mask_ratio,
                self.cfg.seed,
                self.cfg.progress,
            )
            if steps > 0
            else []
        )
        state = encoder.model_state()
        save_state(
            path,
            state,
            {
                "key": key,
                "role": "pretrained θ0" if steps > 0 else "initialised θ0 (pretrain.steps=0)",
                "encoder": self.encoder_record(),
                "source": {"kind": "masked reconstruction", "steps": steps},
                "loss_first_last": loss_first_last(curve),
            },
        )
        self.timings["pretrain"] = time.perf_counter() - start
        if steps > 0:
            self.say(
                f"pretrained θ0 (masked reconstruction L1 {loss_span(curve)}) "
                f"in {self.timings['pretrain']:.0f}s"
            )
        else:
            self.say(
                f"θ0 = the initialised encoder {self.cfg.encoder.arch} {self.cfg.encoder.kwargs} "
                "(pretrain.steps=0: no pretraining)"
            )
        return state

    def given_theta0(self, path: Path, key: str, weights: dict[str, Any]) -> dict[str, torch.Tensor]:
        """θ0 read from a checkpoint or published weights (no masked pretraining); the sidecar records
        the source file and its SHA-256."""
        e = self.cfg.encoder
        torch.manual_seed(self.cfg.seed)
        encoder = build_encoder(e.library, self.arch, **weights, **e.architecture_kwargs())
        source = encoder.source.as_dict()
        state = encoder.model_state()
        save_state(
            path,
            state,
            {"key": key, "role": "pretrained θ0", "encoder": self.encoder_record(), "source": source},
        )
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
        base = self.theta0()
        base_hash = self.theta0_hash()  # an expert is reused only if it was trained from this very θ0
        for i, task in enumerate(self.data.specs):
            files = [self.pool_dir / f"{task}.safetensors", self.pool_dir / f"{task}_head.safetensors"]
            key = config_key(
                self.theta0_key(),
                self.cfg.data,
                self.cfg.head,
                self.cfg.expert,
                self.cfg.seed,
                task,
                base_hash,
            )
            if all_verified(files, key):
                continue
            start = time.perf_counter()
            encoder = self.new_encoder()
            encoder.load_model_state(base)
            model, curve = finetune(
                encoder,
                {task: self.new_head(task, i)},
                self.data.train_loader(stage_seed(self.cfg.seed, "expert", task)),
                self.cfg.expert,
                desc=f"expert {task}",
                progress=self.cfg.progress,
            )
            save_expert(self.pool_dir, task, encoder.model_state(), model.heads[task], {"key": key})
            self.timings[f"expert {task}"] = time.perf_counter() - start
            self.say(
                f"fine-tuned the {task} expert (loss {loss_span(curve)}) "
                f"in {self.timings[f'expert {task}']:.0f}s"
            )
        return load_pool_dir(self.pool_dir, list(self.data.specs))

    def mtl(self, base: dict[str, torch.Tensor]) -> MultiTaskModel:
        mtl_dir = self.out / "mtl"
        key = config_key(
            self.theta0_key(), self.cfg.data, self.cfg.head, self.cfg.mtl, self.cfg.seed, self.theta0_hash()
        )
        enc_path = mtl_dir / "encoder.safetensors"
        head_paths = [mtl_dir / f"{t}_head.safetensors" for t in self.data.specs]
        encoder = self.new_encoder()
        if all_verified([*head_paths, enc_path], key):
            encoder.load_model_state(load_state(enc_path))
            heads = {t: load_head(mtl_dir / f"{t}_head.safetensors") for t in self.data.specs}
            return MultiTaskModel(encoder, heads).eval()
        start = time.perf_counter()
        encoder.load_model_state(base)
        heads = {t: self.new_head(t, i) for i, t in enumerate(self.data.specs)}
        loader = self.data.train_loader(stage_seed(self.cfg.seed, "mtl"))
        model, curve = finetune(encoder, heads, loader, self.cfg.mtl, desc="MTL", progress=self.cfg.progress)
        for t, head in model.heads.items():
            save_state(
                mtl_dir / f"{t}_head.safetensors",
                head.state_dict(),
                {"head": head.config(), "key": key, "role": f"MTL head {t}"},
            )
        # the encoder, written last, commits the stage (every file is verified on reuse anyway)
        save_state(enc_path, encoder.model_state(), {"key": key, "role": "MTL encoder"})
        self.timings["mtl"] = time.perf_counter() - start
        self.say(f"trained the MTL baseline (loss {loss_span(curve)}) in {self.timings['mtl']:.0f}s")
        return model

    # ------------------------------------------------------------------------------------ merging
    def merged_model(self, pool: ExpertPool, state: dict[str, torch.Tensor]) -> MultiTaskModel:
        encoder = self.new_encoder()
        encoder.load_model_state(state)
        return MultiTaskModel(encoder, pool_heads(pool)).eval()

    def individual(self, pool: ExpertPool, loader: DataLoader, desc: str) -> dict[str, dict[str, float]]:
        """Each expert evaluated on its own task (its own encoder + head)."""
        results = {}
        for task in pool.tasks:
            model = self.merged_model(pool.subset([task]), pool.experts[task])
            results[task] = evaluate(
                model,
                loader,
                {task: self.data.specs[task]},
                desc=f"{desc} {task}",
                progress=self.cfg.progress,
            )[task]
        return results

    def merge_with_selection(
        self,
        pool: ExpertPool,
        method: str,
        val_baseline: dict[str, dict[str, float]],
        params: dict[str, Any] | None = None,
        grid: list[float] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Merge with ``method``; where it has a sweepable scale (its registered ``scale`` fact), pick
        the value of ``grid`` (default: the registered grid, else ``merge.lam_grid``) with the best val
        NormPerf."""
        from simo_merge.metrics.summary import normalized_performance

        params = dict(self.cfg.merge.params.get(method, {}) if params is None else params)
        facts = MERGE_METHODS.facts(method)
        scale = facts["scale"]
        if scale is None or scale in params:
            return merge(pool, method, **params), params
        best = None
        for value in grid or facts.get("grid") or self.cfg.merge.lam_grid:
            state = merge(pool, method, **{scale: value}, **params)
            val = evaluate(
                self.merged_model(pool, state),
                self.data.val,
                self.data.specs,
                desc=f"{method} {scale}={value}",
                progress=self.cfg.progress,
            )
            score = normalized_performance(val, val_baseline)["mean"]
            if best is None or score > best[0]:
                best = (score, value, state)
        return best[2], {**params, scale: best[1], "val_norm_perf": round(best[0], 2)}

    def per_task_row(
        self, pool: ExpertPool, method: str, params: dict[str, Any], rows: dict, info: dict
    ) -> None:
        """A method that rebuilds one model per task (TALL masks): each task evaluated on its own model."""
        name = MERGE_METHODS.facts(method)["label"]
        t0 = time.perf_counter()
        rows[name] = {}
        for task in pool.tasks:
            state = merge(pool, method, task=task, **params)
            rows[name][task] = evaluate(
                self.merged_model(pool.subset([task]), state),
                self.data.test,
                {task: self.data.specs[task]},
                desc=f"test {name} {task}",
                progress=self.cfg.progress,
            )[task]
        info[name] = {"params": ", ".join(f"{k}={v}" for k, v in params.items()) or "one model per task"}
        self.timings[f"merge {name}"] = time.perf_counter() - t0

    def data_free_rows(
        self,
        pool: ExpertPool,
        states: dict[str, dict[str, torch.Tensor]],
        rows: dict,
        info: dict,
        chosen: dict,
        val_baseline: dict[str, dict[str, float]],
    ) -> list[str]:
        """LiNeS, Consensus, Iso-C, Iso-CTS, TSV-M rows (scale chosen on val); returns their row names."""
        df = self.cfg.data_free
        names = []
        for method in df.methods:
            t0 = time.perf_counter()
            if MERGE_METHODS.facts(method).get("per_task"):
                self.per_task_row(pool, method, dict(df.params.get(method, {})), rows, info)
                continue
            state, params = self.merge_with_selection(
                pool, method, val_baseline, dict(df.params.get(method, {})), df.grids.get(method)
            )
            name = MERGE_METHODS.facts(method)["label"]
            rows[name] = evaluate(
                self.merged_model(pool, state),
                self.data.test,
                self.data.specs,
                desc=f"test {name}",
                progress=self.cfg.progress,
            )
            states[name] = state
            chosen[name] = params
            info[name] = {"params": ", ".join(f"{k}={v}" for k, v in params.items() if k != "val_norm_perf")}
            self.timings[f"merge {name}"] = time.perf_counter() - t0
            self.say(f"{name}: {info[name]['params']} (val NormPerf {params.get('val_norm_perf', '–')})")
            names.append(name)
        return names

    def realign_rows(
        self,
        pool: ExpertPool,
        states: dict[str, dict[str, torch.Tensor]],
        rows: dict,
        info: dict,
        apply_to: list[str],
        realigners: list[str],
    ) -> dict[str, Any]:
        """Add a ``<merge>+<realigner>`` row per pair; return representation-bias numbers."""
        from simo_merge.features.inputs import dataset_inputs
        from simo_merge.realign.diagnostics import mean_bias, representation_bias
        from simo_merge.realign.train import RealignConfig, realign

        rc = self.cfg.realign
        if not realigners or not apply_to:
            return {}
        specs = self.data.specs
        inputs_of, self.realign_trained_on = {}, {}

        def inputs_for(objective: str) -> Any:
            """The (checked) training inputs of an objective, built once."""
            if objective not in inputs_of:
                choice = rc.inputs(self.cfg.data, objective == "supervised")
                dataset = (
                    self.data.sets[choice.split]
                    if choice.split != "train"
                    else inputs_dataset(self.cfg.data, choice, self.cfg.seed, self.out / "cache")
                )
                name = f"{self.cfg.data.name}-{choice.split}" + ("-augmented" if choice.augmented else "")
                inputs_of[objective] = dataset_inputs(dataset, list(specs), name, with_labels=choice.labelled)
                self.realign_trained_on[objective] = choice.record(len(dataset), self.cfg.data.name)
            return inputs_of[objective]

        experts = pool.expert_encoders()
        test_images = dataset_inputs(self.data.sets["test"], list(specs), "test").images
        heads = pool_heads(pool)
        bias: dict[str, Any] = {}
        for name in apply_to:
            if name not in states:
                raise KeyError(
                    f"realign.apply_to names {name!r}, which is not a merged row: {sorted(states)}"
                )
            merged = self.new_encoder()
            merged.load_model_state(states[name])
            before = representation_bias(merged, experts, test_images)
            bias[name] = {"before": mean_bias(before), "per_layer_before": before}
            info[name]["bias"] = f"{mean_bias(before):.4f}"
            for realigner in realigners:
                t0 = time.perf_counter()
                recipe = rc.recipes.get(realigner, "surgery")
                cfg = RealignConfig(
                    realigner=realigner,
                    objective=rc.objective(realigner),
                    rank=rc.rank,
                    steps=rc.steps,
                    lr=rc.lr,
                    batch_size=rc.batch_size,
                    seed=stage_seed(self.cfg.seed, "realign", f"{name}+{realigner}") % (2**31),
                    progress=self.cfg.progress,
                    recipe=recipe,
                ).resolved()
                objective = cfg.objective
                inputs = inputs_for(objective)
                model, curve = realign(self.new_encoder, states[name], pool.experts, heads, inputs, cfg)
                row = f"{name}+{realigner}"
                rows[row] = evaluate(
                    model, self.data.test, specs, desc=f"test {row}", progress=self.cfg.progress
                )
                after = representation_bias(model, experts, test_images)
                bias[row] = {"after": mean_bias(after), "per_layer_after": after}
                info[row] = {
                    "trained params": f"{model.num_trainable():,}",
                    "bias": f"{mean_bias(after):.4f}",
                    "params": f"{recipe} recipe, "
                    + (objective if objective == "supervised" else f"{objective}, {model.plan.match}"),
                }
                self.timings[f"realign {row}"] = time.perf_counter() - t0
                self.say(
                    f"{row}: {len(curve)} iterations {info[row]['params']}, loss {loss_span(curve)}, "
                    f"bias {mean_bias(before):.4f} -> {mean_bias(after):.4f}, "
                    f"{self.timings[f'realign {row}']:.0f}s"
                )
        return bias

    def data_dependent_rows(
        self, pool: ExpertPool, states: dict[str, dict[str, torch.Tensor]], rows: dict, info: dict
    ) -> None:
        """AdaMerging (task-/layer-wise), Fisher and RegMean rows, on unlabelled test inputs."""
        from simo_merge.features.cache import FeatureCache
        from simo_merge.features.inputs import dataset_inputs
        from simo_merge.merging.data import MergeData
        from simo_merge.merging.data.plots import lambda_heatmap

        dd = self.cfg.data_dependent
        specs = self.data.specs
        inputs = dataset_inputs(self.data.sets[dd.split], list(specs), f"{self.cfg.data.name}-{dd.split}")
        merge_data = MergeData(
            self.new_encoder,
            pool_heads(pool),
            pool.experts,
            inputs.images,
            name=inputs.name,
            batch_size=dd.batch_size,
            seed=self.cfg.seed,
            cache=FeatureCache(self.out / "stats"),
            progress=self.cfg.progress,
        )
        for method in dd.methods:
            t0 = time.perf_counter()
            params: dict[str, Any] = dict(dd.params.get(method, {}))
            record: dict[str, Any] = {}
            facts = MERGE_METHODS.facts(method)
            if facts.get("records"):
                params["record"] = record
            if facts["progress"]:
                params["progress"] = self.cfg.progress
            state = merge(pool, method, merge_data=merge_data, **params)
            name = facts["label"]
            rows[name] = self.test_row(pool, state, name)
            states[name] = state
            shown = {k: v for k, v in params.items() if k not in ("record", "progress")}
            info[name] = {"params": ", ".join(f"{k}={v}" for k, v in shown.items())}
            if record:
                lambda_heatmap(record, self.out / f"lambdas_{method}.png")
            self.timings[f"merge {name}"] = time.perf_counter() - t0
            self.say(f"{name}: merged in {self.timings[f'merge {name}']:.0f}s")

    def test_row(
        self, pool: ExpertPool, state: dict[str, torch.Tensor], name: str
    ) -> dict[str, dict[str, float]]:
        """Test metrics of the merged ``state`` under the experts' heads, as the row ``name``."""
        return evaluate(
            self.merged_model(pool, state),
            self.data.test,
            self.data.specs,
            desc=f"test {name}",
            progress=self.cfg.progress,
        )

    # ------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        write_text(self.out / "config.yaml", to_yaml(self.cfg))
        pool = self.experts()
        mtl = self.mtl(pool.base)
        specs = self.data.specs
        rows: dict[str, dict[str, dict[str, float]]] = {}
        info: dict[str, dict[str, str]] = {}
        val_individual = self.individual(pool, self.data.val, "val")
        rows["Individual"] = self.individual(pool, self.data.test, "test")
        rows["MTL"] = evaluate(mtl, self.data.test, specs, desc="test MTL", progress=self.cfg.progress)
        rows["Pretrained θ0 + expert heads"] = evaluate(
            self.merged_model(pool, pool.base),
            self.data.test,
            specs,
            desc="test θ0",
            progress=self.cfg.progress,
        )
        chosen: dict[str, dict[str, Any]] = {}
        states: dict[str, dict[str, torch.Tensor]] = {}
        for method in self.cfg.merge.methods:
            t0 = time.perf_counter()
            state, params = self.merge_with_selection(pool, method, val_individual)
            name = MERGE_METHODS.facts(method)["label"]
            rows[name] = self.test_row(pool, state, name)
            chosen[name] = params
            info[name] = {"params": ", ".join(f"{k}={v}" for k, v in params.items() if k != "val_norm_perf")}
            self.timings[f"merge {name}"] = time.perf_counter() - t0
            states[name] = state
        data_free: list[str] = []
        if self.cfg.full:
            self.data_dependent_rows(pool, states, rows, info)
            data_free = self.data_free_rows(pool, states, rows, info, chosen, val_individual)
        rc = self.cfg.realign
        apply_to = rc.apply_to + (self.cfg.data_dependent.realign_on if self.cfg.full else [])
        bias = self.realign_rows(pool, states, rows, info, apply_to, rc.realigners)
        bias.update(self.realign_rows(pool, states, rows, info, data_free, self.cfg.data_free.realigners))
        summary = summarize(rows, "Individual")
        table = markdown_table(rows, summary, info)
        self.timings["total"] = time.perf_counter() - start
        result = {
            "rows": rows,
            "summary": summary,
            "units": result_units(rows),
            "merge_params": chosen,
            "representation_bias": bias,
            "realign_trained_on": self.realign_trained_on,
            "timings": self.timings,
            "tasks": list(specs),
        }
        write_json(self.out / "metrics.json", result)
        bar_chart(
            summary, list(specs), self.out / "results.png", title="Dense SIMO demo: normalised performance"
        )
        report = (
            "# simo_merge dense demo\n\n"
            f"Dataset {self.cfg.data.name} {self.cfg.data.size}, tasks {', '.join(specs)}; encoder "
            f"{self.cfg.encoder.arch} {self.cfg.encoder.kwargs}; head {self.cfg.head.kind}.\n"
            "Every rate in % (segmentation mIoU / pixel accuracy, normals within t°); depth errors in metres "
            "(rel_err a ratio), normal angles in degrees. "
            "NormPerf and ΔMTL against the individual experts; λ chosen on val.\n"
            + "".join(
                f"Realigners ({objective}): {describe(info)}\n"
                for objective, info in self.realign_trained_on.items()
            )
            + "\n"
            + table
            + "\n"
            + "\n".join(self.log)
            + "\n"
        )
        write_text(self.out / "report.md", report)
        print("\n" + table)
        print(f"wrote {self.out}/report.md, metrics.json, results.png ({self.timings['total']:.0f}s)")
        return result


Config = DemoConfig
DEFAULT_CONFIG = "demo"  # configs/demo.yaml


def output_folder(cfg: DemoConfig) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Train (or reuse) θ0, experts and MTL, merge, realign, evaluate and report into ``output_dir``."""
    return Demo(cfg).run()
