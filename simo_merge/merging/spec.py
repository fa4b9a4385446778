"""The one config shape of "which merge method, with which parameters": :class:`MethodSpec`.

Every job reads it: ``merge``/``realign``'s ``method:`` section is one spec; the demo's and ``bench clip``'s
method lists are lists of them, where a bare name stands for ``{name: <name>}``::

    methods: [weight_average, {name: ties, params: {k: 20}}, {name: lines, grid: [0.5, 1.0]}]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class MethodSpec:
    """A registered merge method, its hyper-parameters, task-vector transforms (e.g. ``dare``) and, for
    jobs that choose the method's scale on val, the grid swept (None: the job's default)."""

    name: str = "task_arithmetic"
    params: dict[str, Any] = field(default_factory=dict)
    transforms: dict[str, Any] = field(default_factory=dict)
    grid: list[float] | None = None

    @classmethod
    def parse(cls, entry: Any, key: str) -> MethodSpec:
        """A spec from a name, a mapping with :class:`MethodSpec`'s keys, or a spec (``key`` names it)."""
        if isinstance(entry, MethodSpec):
            return entry
        if isinstance(entry, str):
            return cls(entry)
        if not isinstance(entry, Mapping):
            raise ValueError(f"{key}: a method is a name or {{name: ..., params: {{...}}}}, got {entry!r}")
        allowed = [f.name for f in fields(cls)]
        unknown = [k for k in entry if k not in allowed]
        if unknown or "name" not in entry:
            problem = f"unknown key(s) {unknown}" if unknown else "no 'name'"
            raise ValueError(f"{key}: {problem} in {dict(entry)!r}; a method takes the keys {allowed}")
        spec = cls(**{k: v for k, v in entry.items()})
        spec.params, spec.transforms = dict(spec.params or {}), dict(spec.transforms or {})
        spec.grid = None if spec.grid is None else list(spec.grid)
        return spec

    def compact(self) -> str | dict[str, Any]:
        """The shortest YAML entry for this spec: its name alone when it sets nothing else."""
        if not (self.params or self.transforms or self.grid is not None):
            return self.name
        entry: dict[str, Any] = {"name": self.name, "params": dict(self.params)}
        if self.transforms:
            entry["transforms"] = dict(self.transforms)
        if self.grid is not None:
            entry["grid"] = list(self.grid)
        return entry

    def check(self, key: str = "method", name_key: str | None = None) -> None:
        """Raise ValueError naming ``key`` for an unknown method (``name_key``, default ``key.name``,
        listing the known ones), transform, parameter (listing the method's keywords) or value, or a
        non-finite grid."""
        from simo_merge.merging import MERGE_METHODS, TV_TRANSFORMS
        from simo_merge.merging._hyperparams import check_values

        if self.name not in MERGE_METHODS:
            known = ", ".join(MERGE_METHODS.names())
            where = name_key or f"{key}.name"
            raise ValueError(f"{where}: unknown merge method {self.name!r}; known: {known}")
        check_values(MERGE_METHODS.get(self.name), self.params, f"{key}.params.{self.name}")
        for name, args in self.transforms.items():
            if name not in TV_TRANSFORMS:
                known = ", ".join(TV_TRANSFORMS.names())
                raise ValueError(f"{key}.transforms: unknown transform {name!r}; known: {known}")
            if args is not None and not isinstance(args, Mapping):
                raise ValueError(
                    f"{key}.transforms.{name}={args!r}: a transform takes a mapping of its parameters "
                    f"({key}.transforms.{name}={{...}}) or null"
                )
            check_values(TV_TRANSFORMS.get(name), dict(args or {}), f"{key}.transforms.{name}")
        if self.grid is not None:
            bad = [v for v in self.grid if not isinstance(v, (int, float)) or not math.isfinite(v)]
            if bad or not self.grid:
                raise ValueError(f"{key}.grid: {self.grid!r} must be a non-empty list of finite numbers")


def method_specs(entries: Iterable[Any], key: str) -> list[MethodSpec]:
    """``entries`` (names, mappings or specs) as specs; entries are named ``key[i]`` in errors, and a
    method given twice is refused (each method is one row)."""
    specs = [MethodSpec.parse(entry, f"{key}[{i}]") for i, entry in enumerate(entries)]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{key}: {repeated} given more than once; each method is one row")
    return specs


def check_specs(specs: list[MethodSpec], key: str) -> None:
    """:meth:`MethodSpec.check` on each of a job's list ``key``; names the entry ``key[i]``."""
    for i, spec in enumerate(specs):
        spec.check(f"{key}[{i}]", name_key=key)
