"""The config of ``simo-merge demo`` and ``train-experts`` (one YAML, ``configs/demo.yaml``, serves both):
shared by the two jobs, which may not import each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simo_merge.config import EncoderConfig
from simo_merge.data import DataConfig
from simo_merge.realign.inputs import InputsChoice, choose_inputs
from simo_merge.runtime import RuntimeConfig
from simo_merge.training.finetune import FinetuneRecipe
from simo_merge.training.recipes import HeadConfig, PretrainConfig


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
