"""The config of ``simo-merge demo`` and ``train-experts`` (one YAML, ``configs/demo.yaml``, serves both):
shared by the two jobs, which may not import each other."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simo_merge.config import EncoderConfig
from simo_merge.data import DataConfig
from simo_merge.merging.spec import MethodSpec, method_specs
from simo_merge.realign.config import RealignerSpec, RealignSettings
from simo_merge.realign.inputs import InputsChoice, choose_inputs
from simo_merge.runtime import RuntimeConfig
from simo_merge.training.finetune import FinetuneRecipe, RecipeConfig
from simo_merge.training.recipes import HeadConfig, PretrainConfig

#: what a null ``merge.methods`` / ``realign.apply_to`` stands for: ``full=false``'s, then ``full=true``'s
BASIC_METHODS: list[Any] = ["weight_average", "task_arithmetic", {"name": "ties", "params": {"k": 20}}]
FULL_METHODS: list[Any] = [
    *BASIC_METHODS,
    {"name": "adamerging", "params": {"steps": 100}},
    {"name": "adamerging_layerwise", "params": {"steps": 100}},
    {"name": "fisher", "params": {"num_batches": 8}},
    {"name": "regmean", "params": {"alpha": 0.9, "num_batches": 8}},
    *["lines", "consensus", "tall_masks", "iso_c", "iso_cts", "tsv_m"],
]
BASIC_APPLY_TO: list[Any] = ["TA", "TIES"]
FULL_APPLY_TO: list[Any] = [
    *BASIC_APPLY_TO,
    "AdaMerging-LW",
    *(
        {"row": row, "realigners": ["deep", "taps"]}
        for row in ("LiNeS", "Consensus", "Iso-C", "Iso-CTS", "TSV-M")
    ),
]


@dataclass
class MergeSweepConfig:
    """The merged rows: one per ``methods`` entry (:class:`MethodSpec`: a name, or ``{name, params,
    transforms, grid}``; null: the preset of ``full``, :data:`BASIC_METHODS` or :data:`FULL_METHODS`),
    made as the method's registered facts say: a ``scale`` (λ, β) is chosen on val from the entry's
    ``grid``, else the registered grid, else ``lam_grid``; a ``per_task`` method (TALL masks) rebuilds one
    model per task; a ``needs_data`` method (AdaMerging, Fisher, RegMean) merges on the unlabelled
    ``split`` inputs, read in batches of ``batch_size``."""

    methods: list[Any] | None = None
    lam_grid: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])
    split: str = "test"  # the unlabelled inputs of the data-dependent methods
    batch_size: int = 16

    def entries(self, full: bool) -> list[Any]:
        """``methods`` as given, else the preset of ``full``."""
        if self.methods is not None:
            return list(self.methods)
        return copy.deepcopy(FULL_METHODS if full else BASIC_METHODS)

    def specs(self, full: bool) -> list[MethodSpec]:
        return method_specs(self.entries(full), "merge.methods")


#: realignment steps of a demo row when neither ``realign.params`` nor the recipe (its epochs) sets a length
DEMO_REALIGN_STEPS = 100


@dataclass
class DemoRealignConfig:
    """Realigners (the keys of :class:`RealignSettings`: ``realigners`` + shared ``params``) stacked on
    merged rows of the table: each ``apply_to`` entry is a row name (trained with every one of
    ``realigners``) or ``{row: NAME, realigners: [...]}`` (those realigners, each with its own params
    in ``realigners`` if it is there too, and the shared ``params``); null: the preset of ``full``
    (:data:`BASIC_APPLY_TO` or :data:`FULL_APPLY_TO`). Unsupervised realigners train on ``split``'s
    unlabelled inputs, held out from the test split unless ``test_time`` asks for the papers' setting
    (test inputs; ``configs/demo.yaml`` does, to reproduce the papers' tables); supervised ones on
    ``label_split``. A realigner's objective defaults to the one it registered; ``recipe`` is "surgery"
    (the papers' unsupervised recipe) or "simo" (the SIMO paper's supervised recipe on label_split)."""

    realigners: list[Any] = field(default_factory=lambda: ["surgery", "deep", "shared-deep", "taps", "heads"])
    params: dict[str, Any] = field(default_factory=lambda: {"rank": 16})  # length: DEMO_REALIGN_STEPS
    apply_to: list[Any] | None = None
    split: str = "val"
    test_time: bool = False  # unsupervised realigners train on the unlabelled test inputs (the papers)
    augment: bool = False  # training augmentation on split=train inputs; never unless asked
    label_split: str = "val"

    def settings(self, realigners: list[Any] | None = None) -> RealignSettings:
        """The settings of ``realigners`` (default: ``self.realigners``) with the shared ``params``; one
        also in ``self.realigners`` starts from its params there (the entry's own win)."""
        own = {s.name: s.params for s in RealignSettings(self.realigners).specs()}
        specs = RealignSettings(self.realigners if realigners is None else realigners).specs()
        merged = [RealignerSpec(s.name, {**own.get(s.name, {}), **s.params}) for s in specs]
        return RealignSettings([s.compact() for s in merged], dict(self.params))

    def entries(self, full: bool) -> list[Any]:
        """``apply_to`` as given, else the preset of ``full``."""
        if self.apply_to is not None:
            return list(self.apply_to)
        return copy.deepcopy(FULL_APPLY_TO if full else BASIC_APPLY_TO)

    def targets(self, full: bool) -> list[tuple[str, RealignSettings]]:
        """Each ``apply_to`` entry (null: the preset of ``full``) as (merged row, its realigners'
        settings); ValueError names a malformed entry."""
        targets = []
        for i, entry in enumerate(self.entries(full)):
            if isinstance(entry, str):
                targets.append((entry, self.settings()))
            elif isinstance(entry, Mapping) and set(entry) == {"row", "realigners"}:
                targets.append((str(entry["row"]), self.settings(list(entry["realigners"] or []))))
            else:
                raise ValueError(
                    f"realign.apply_to[{i}]: a row name or {{row: NAME, realigners: [...]}}, got {entry!r}"
                )
        return targets

    def inputs(self, data: DataConfig, supervised: bool) -> InputsChoice:
        """The checked training split of the (un)supervised realigners; the demo evaluates on test."""
        if supervised:
            return choose_inputs(data, self.label_split, "test", labelled=True, augment=self.augment)
        return choose_inputs(data, self.split, "test", self.test_time, augment=self.augment)


@dataclass
class DemoConfig:
    """The demo / ``train-experts`` job. The fine-tuning recipes (``expert``, ``mtl``) set only what they
    name; the rest comes from the base recipe the θ0 calls for (:func:`~simo_merge.training.recipes.
    base_recipe`): the real-backbone recipe (encoder lr 3e-5) when θ0 comes from ``encoder.checkpoint`` /
    ``encoder.pretrained``, the scratch recipe (encoder lr 5e-4) when θ0 is pretrained here. ``data.
    per_task`` (one data set per task) serves ``train-experts``; the demo itself runs SIMO data."""

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
    expert: RecipeConfig = field(default_factory=RecipeConfig)
    mtl: RecipeConfig = field(default_factory=RecipeConfig)
    merge: MergeSweepConfig = field(default_factory=MergeSweepConfig)
    realign: DemoRealignConfig = field(default_factory=DemoRealignConfig)
    # the preset of a null merge.methods / realign.apply_to: true also the data-dependent and the newer
    # data-free merges, and realigners on AdaMerging-LW and (deep, taps) on the data-free rows
    full: bool = False
    allow_large_lambda: bool = (
        False  # a merge coefficient |λ| > 10 is refused unless set (config.check_numbers)
    )
    output_dir: str = "runs/demo"
    seed: int = 0
    threads: int = 2
    progress: bool = True
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def validate(self) -> None:
        """Names, values and combinations that cannot work fail here, before any training."""
        from simo_merge.config import ConfigError
        from simo_merge.jobs._checks import check_demo_config

        for section in ("expert", "mtl"):  # a recipe's values fail here, whatever its base
            try:
                getattr(self, section).over(FinetuneRecipe())
            except ValueError as err:
                raise ConfigError(f"{section}: {err}") from err
        for objective in check_demo_config(self):
            self.realign.inputs(self.data, objective == "supervised")
