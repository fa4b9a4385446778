"""What one realignment run is configured with: the realigner, objective, recipe, schedule and optimizer.

The recipes and schedules are described in :mod:`simo_merge.realign.train`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simo_merge.config import check_numbers

OBJECTIVES = ("unsupervised", "supervised")
SCHEDULES = ("reference", "joint")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "onecycle")
#: realignment length when neither the user (``steps`` / ``epochs``) nor the recipe (``epochs``) sets one
DEFAULT_STEPS = 500
#: the RealignConfig fields a recipe gives a value to; left None (unset) they take the recipe's
RECIPE_FIELDS = (
    "objective", "train_heads", "optimizer", "weight_decay", "lr", "lr_schedule", "warmup", "clip_grad",
    "epochs", "schedule",
)  # fmt: skip
#: per recipe, the value of every recipe field (surgery leaves ``objective`` to the caller: a job's
#: settings give the realigner's registered one, else it is unsupervised). ``simo``: the authors'
#: notebooks/simo_merging.ipynb (d23845jg/simo_merging @2fcaa49), cited in :mod:`simo_merge.realign.train`.
RECIPES: dict[str, dict[str, Any]] = {
    "surgery": {
        "train_heads": False,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "lr": 1e-3,
        "lr_schedule": "constant",
        "warmup": 0.1,
        "clip_grad": None,
        "epochs": None,
        "schedule": None,
    },
    "simo": {
        "objective": "supervised",
        "train_heads": False,
        "optimizer": "adamw",
        "weight_decay": 0.0,
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
    """One realignment run: a realigner and its settings (what a job's ``realign`` section, a
    :class:`RealignSettings`, gives it: the shared ``params`` and its own entry's).

    The :data:`RECIPE_FIELDS` default to None, meaning unset: :meth:`resolved` gives them the recipe's
    value, and a value the user set (even one equal to the other recipe's) is never replaced. A field
    whose resolved value may itself be None (``clip_grad``: no clipping, ``epochs``: count ``steps``,
    ``schedule``: chosen per pool) can therefore be changed under a recipe but not switched back off."""

    realigner: str = "surgery"
    objective: str | None = None  # None: the recipe's, else "unsupervised"
    rank: int = 16
    steps: int | None = None  # None: the recipe's length (its epochs), else DEFAULT_STEPS
    lr: float | None = None
    batch_size: int = 16
    token_reduce: str | None = None  # None: the realigner's default ("mean" for deep, else per token)
    match: str | None = None  # expert "features", expert head "outputs", "both"; None: realigner default
    fraction: float = 1.0  # use this fraction of the inputs (a seeded subset)
    online: bool = False  # batch size 1, one pass, each sample used once
    use_cache: bool = True
    seed: int = 0
    progress: bool = True
    recipe: str = "surgery"  # "surgery" (unsupervised papers' recipe) or "simo" (supervised SIMO recipe)
    schedule: str | None = None  # "reference" | "joint"; resolved None: see realign.train
    batches_per_task: int = 2  # reference schedule: batches per task per iteration, one step each
    optimizer: str | None = None  # "adam" | "adamw"
    weight_decay: float | None = None
    lr_schedule: str | None = None  # "constant" | "onecycle" (max lr = lr, warm-up fraction = warmup)
    warmup: float | None = None
    clip_grad: float | None = None  # clip the global gradient norm of the trained tensors at this value
    epochs: float | None = None  # if set, replaces steps: this many passes over the inputs
    train_heads: bool | None = None  # also train (copies of) the heads, next to the adapters

    def resolved(self) -> RealignConfig:
        """The config with every unset (None) recipe field given the recipe's value (``objective``
        given by no recipe: unsupervised). Idempotent."""
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        recipe = {"objective": "unsupervised", **RECIPES[self.recipe]}
        if self.steps is not None:  # a length the user gave in steps: the recipe's epochs do not replace it
            recipe.pop("epochs")
        updates = {name: value for name, value in recipe.items() if getattr(self, name) is None}
        if self.steps is None:
            updates["steps"] = DEFAULT_STEPS
        return dataclasses.replace(self, **updates)

    def validate(self) -> None:
        """Checks a :meth:`resolved` config (ValueError naming the field and value)."""
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        optional = ("clip_grad", "epochs", "schedule")  # None is a value of these once resolved
        unset = [n for n in RECIPE_FIELDS if getattr(self, n) is None and n not in optional]
        if unset:
            raise ValueError(f"{unset} unset: validate the resolved() config")
        if self.schedule not in (None, *SCHEDULES):
            raise ValueError(f"schedule must be 'reference', 'joint' or None, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        check_numbers(self)  # finite, in the range NUMBER_RULES gives each field (warmup, lr, rank, ...)
        if self.online and self.schedule == "reference":
            raise ValueError("online=true draws each input once in one joint pass; use schedule=joint")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.match not in (None, "features", "outputs", "both"):
            raise ValueError(f"match must be 'features', 'outputs' or 'both', got {self.match!r}")
        if self.token_reduce not in (None, "none", "mean"):
            raise ValueError(f"token_reduce must be 'none' or 'mean', got {self.token_reduce!r}")


#: RealignConfig fields a job sets itself (per run), never from a config's realignment settings
JOB_SET_FIELDS = ("realigner", "seed", "progress")


def check_realign_params(params: Mapping[str, Any], key: str) -> None:
    """Keys are RealignConfig fields (else ValueError naming the key and listing the accepted ones), each
    value of its field's type."""
    accepted = [f.name for f in dataclasses.fields(RealignConfig) if f.name not in JOB_SET_FIELDS]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise ValueError(f"{key}: unknown realignment setting(s) {unknown}; accepted: {accepted}")
    kinds = field_kinds()
    for name, value in params.items():
        if value is None:
            continue  # None: unset (the recipe's or the realigner's value)
        kind = kinds[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {bool: isinstance(value, bool), str: isinstance(value, str), float: number}.get(
            kind, number and isinstance(value, int)
        )
        if not ok:
            raise ValueError(f"{key}.{name}={value!r}: must be a {kind.__name__}")


def field_kinds() -> dict[str, type]:
    """Each RealignConfig field's value type (``float`` for ``float | None``)."""
    hints = typing.get_type_hints(RealignConfig)
    return {
        name: next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
        for name, hint in hints.items()
    }


@dataclass
class RealignerSpec:
    """One realigner and its own RealignConfig settings (over the settings shared by a job's realigners)."""

    name: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, entry: Any, key: str) -> RealignerSpec:
        """A spec from a realigner name or ``{name: ..., params: {...}}`` (``key`` names it in errors)."""
        if isinstance(entry, RealignerSpec):
            return entry
        if isinstance(entry, str):
            return cls(entry)
        if not isinstance(entry, Mapping) or "name" not in entry or set(entry) - {"name", "params"}:
            raise ValueError(f"{key}: a realigner is a name or {{name: ..., params: {{...}}}}, got {entry!r}")
        return cls(entry["name"], dict(entry.get("params") or {}))

    def compact(self) -> str | dict[str, Any]:
        """The shortest YAML entry for this spec: its name alone when it sets nothing."""
        return {"name": self.name, "params": dict(self.params)} if self.params else self.name


@dataclass
class RealignSettings:
    """The one shape of a job's realignment settings: the realigners to train (names, or
    ``{name: ..., params: {...}}`` for settings of that realigner alone) and the RealignConfig fields
    ``params`` they share (``steps``, ``rank``, ``lr``, ``objective``, ``recipe``, ...)."""

    realigners: list[Any] = dataclasses.field(default_factory=list)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def specs(self) -> list[RealignerSpec]:
        """The realigners as specs."""
        return [RealignerSpec.parse(e, f"realigners[{i}]") for i, e in enumerate(self.realigners)]

    def names(self) -> list[str]:
        return [spec.name for spec in self.specs()]

    def settings(self, realigner: str) -> dict[str, Any]:
        """The shared settings updated with ``realigner``'s own."""
        own = next((s.params for s in self.specs() if s.name == realigner), {})
        return {**self.params, **own}

    def config(
        self, realigner: str, defaults: Mapping[str, Any] | None = None, **fixed: Any
    ) -> RealignConfig:
        """``realigner``'s resolved RealignConfig: its settings and ``fixed`` (seed, progress), then the
        recipe's values, then ``defaults`` (a job's) for what neither gives, then the ``objective`` the
        realigner registered (see :meth:`RealignConfig.resolved`). A setting given as None is unset."""
        from simo_merge.realign import REALIGNERS

        given = {k: v for k, v in {**self.settings(realigner), **fixed}.items() if v is not None}
        recipe = RECIPES.get(given.get("recipe", "surgery"), {})
        below = {"objective": REALIGNERS.facts(realigner)["objective"], **(defaults or {})}
        job = {k: v for k, v in below.items() if k not in recipe and k not in given}
        if recipe.get("epochs") is not None:  # a recipe that counts epochs: a job's default steps yield
            job.pop("steps", None)
        return RealignConfig(realigner=realigner, **job, **given).resolved()

    def check(self, key: str, realigners_key: str | None = None, params_key: str | None = None) -> None:
        """Raise ValueError naming the key of an unknown realigner (listing the known ones) or setting
        (the keys: ``realigners_key``/``params_key``, default ``key.realigners``/``key.params``)."""
        from simo_merge.realign import REALIGNERS

        where = realigners_key or f"{key}.realigners"
        check_realign_params(self.params, params_key or f"{key}.params")
        specs = [RealignerSpec.parse(e, f"{where}[{i}]") for i, e in enumerate(self.realigners)]
        for i, spec in enumerate(specs):
            if spec.name not in REALIGNERS:
                known = ", ".join(REALIGNERS.names())
                raise ValueError(f"{where}: unknown realigner {spec.name!r}; known: {known}")
            check_realign_params(spec.params, f"{where}[{i}].params")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: {names} names a realigner more than once")
        for name in names:
            try:
                self.config(name).validate()
            except ValueError as err:
                raise ValueError(f"{key}: {err} (realigner {name})") from err
