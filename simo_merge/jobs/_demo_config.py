"""The config of ``simo-merge demo`` and ``train-experts`` (one YAML, ``configs/demo.yaml``, serves both):
shared by the two jobs, which may not import each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simo_merge.config import EncoderConfig
from simo_merge.data import DataConfig
from simo_merge.merging.spec import MethodSpec, method_specs
from simo_merge.realign.config import RealignSettings
from simo_merge.realign.inputs import InputsChoice, choose_inputs
from simo_merge.runtime import RuntimeConfig
from simo_merge.training.finetune import FinetuneRecipe
from simo_merge.training.recipes import HeadConfig, PretrainConfig


@dataclass
class MergeSweepConfig:
    """Merge methods to run (:class:`MethodSpec` entries: a name, or ``{name, params, transforms, grid}``);
    the scale (λ) of the methods that take one is chosen on val from the entry's ``grid``, else
    ``lam_grid``. ``params`` (method -> params) is the older shape, folded into ``methods``."""

    methods: list[Any] = field(
        default_factory=lambda: ["weight_average", "task_arithmetic", {"name": "ties", "params": {"k": 20}}]
    )
    lam_grid: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # deprecated: params in ``methods``

    def specs(self) -> list[MethodSpec]:
        return method_specs(self.methods, "merge.methods", self.params)


@dataclass
class DemoRealignConfig:
    """Realigners (the keys of :class:`RealignSettings`: ``realigners`` + shared ``params``) stacked on
    merged rows of the table. Unsupervised ones train on ``split``'s unlabelled inputs, held out from the
    test split unless ``test_time`` asks for the papers' setting (test inputs; ``configs/demo.yaml``
    does, to reproduce the papers' tables); supervised ones on ``label_split``. A realigner's objective
    defaults to the one it registered; ``recipe`` is "surgery" (the papers' unsupervised recipe) or
    "simo" (the SIMO paper's supervised recipe on label_split). ``steps``/``rank``/``batch_size``/``lr``/
    ``objectives``/``recipes`` are the older shape, folded into the settings by :meth:`current`."""

    realigners: list[Any] = field(default_factory=lambda: ["surgery", "deep", "shared-deep", "taps", "heads"])
    params: dict[str, Any] = field(default_factory=lambda: {"steps": 100, "rank": 16})
    apply_to: list[str] = field(default_factory=lambda: ["TA", "TIES"])
    split: str = "val"
    test_time: bool = False  # unsupervised realigners train on the unlabelled test inputs (the papers)
    augment: bool = False  # training augmentation on split=train inputs; never unless asked
    label_split: str = "val"
    # deprecated (older shape): shared settings and per-realigner objective / recipe
    steps: int | None = None
    rank: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    objectives: dict[str, str] = field(default_factory=dict)
    recipes: dict[str, str] = field(default_factory=dict)

    def current(self, realigners: list[Any] | None = None) -> RealignSettings:
        """The settings in the one shape, the older keys folded in (theirs win), for ``realigners``
        (default: ``self.realigners``; the data-free rows' own list gets the same settings)."""
        old = {"steps": self.steps, "rank": self.rank, "batch_size": self.batch_size, "lr": self.lr}
        shared = {**self.params, **{k: v for k, v in old.items() if v is not None}}
        own = {s.name: s.params for s in RealignSettings(self.realigners).specs()}
        specs = RealignSettings(self.realigners if realigners is None else realigners).specs()
        for spec in specs:
            per = {"objective": self.objectives.get(spec.name), "recipe": self.recipes.get(spec.name)}
            old_own = {k: v for k, v in per.items() if v}
            spec.params = {**own.get(spec.name, {}), **spec.params, **old_own}
        return RealignSettings([s.compact() for s in specs], shared)

    def objective(self, realigner: str) -> str:
        """The realigner's objective: as set, else the one it registered."""
        return self.current().config(realigner).objective

    def inputs(self, data: DataConfig, supervised: bool) -> InputsChoice:
        """The checked training split of the (un)supervised realigners; the demo evaluates on test."""
        if supervised:
            return choose_inputs(data, self.label_split, "test", labelled=True, augment=self.augment)
        return choose_inputs(data, self.split, "test", self.test_time, augment=self.augment)


@dataclass
class DataDependentConfig:
    """``full=true`` rows: data-dependent merges on unlabelled inputs, then realigners on ``realign_on``."""

    methods: list[Any] = field(
        default_factory=lambda: [
            {"name": "adamerging", "params": {"steps": 100}},
            {"name": "adamerging_layerwise", "params": {"steps": 100}},
            {"name": "fisher", "params": {"num_batches": 8}},
            {"name": "regmean", "params": {"alpha": 0.9, "num_batches": 8}},
        ]
    )
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # deprecated: params in ``methods``
    realign_on: list[str] = field(default_factory=lambda: ["AdaMerging-LW"])
    split: str = "test"
    batch_size: int = 16

    def specs(self) -> list[MethodSpec]:
        return method_specs(self.methods, "data_dependent.methods", self.params)


@dataclass
class DataFreeConfig:
    """``full=true`` rows: the newer data-free merges (LiNeS, Consensus, Iso-C, Iso-CTS, TSV-M), their
    scale (λ, or β for LiNeS) chosen on val from the entry's ``grid``, else the registered grid, then each
    of ``realigners`` on every one of them (with ``realign``'s settings); TALL masks (one model per task)
    is a row without realigners. ``params``/``grids`` (per method) are the older shape."""

    methods: list[Any] = field(
        default_factory=lambda: ["lines", "consensus", "tall_masks", "iso_c", "iso_cts", "tsv_m"]
    )
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # deprecated: params in ``methods``
    grids: dict[str, list[float]] = field(default_factory=dict)  # deprecated: grid in ``methods``
    realigners: list[Any] = field(default_factory=lambda: ["deep", "taps"])

    def specs(self) -> list[MethodSpec]:
        return method_specs(self.methods, "data_free.methods", self.params, self.grids)


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
        objectives = {self.realign.objective(r) for r in self.realign.current().names()}
        for objective in objectives:
            self.realign.inputs(self.data, objective == "supervised")
