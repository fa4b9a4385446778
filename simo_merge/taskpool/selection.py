"""A merge method's scale (λ, β) chosen on a labelled split: each candidate merged, evaluated and scored by
the protocol's criterion (:mod:`simo_merge.metrics.selection`: NormPerf against the experts on that
split, or SIMO's val ΔMTL against its constants); the first best wins, as SIMO's ``find_optimal_coef``.

The one way the demo's merged rows and ``simo-merge merge method.grid=[...]`` pick their scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.spec import MethodSpec
from simo_merge.metrics.selection import Criterion
from simo_merge.taskpool.probes import State, merge
from simo_merge.taskpool.taskpool import TaskPool


@dataclass
class Selection:
    """The swept ``scale``, each candidate's value, score and metrics (in grid order), and the best."""

    scale: str
    criterion: Criterion
    candidates: list[dict[str, Any]] = field(default_factory=list)  # {scale: v, "score": s, "metrics": ...}
    best: int = -1  # index into candidates

    @property
    def value(self) -> float:
        return self.candidates[self.best][self.scale]

    @property
    def score(self) -> float:
        return self.candidates[self.best]["score"]

    def record(self, split: str) -> dict[str, Any]:
        """What a sidecar stores: the split, the scale, every candidate's score and the value chosen."""
        return {
            "split": split,
            "scale": self.scale,
            "score": self.criterion.label,
            "candidates": [{self.scale: c[self.scale], "score": c["score"]} for c in self.candidates],
            "chosen": {self.scale: self.value, "score": self.score},
        }


def sweep_scale(method: str) -> str:
    """The registered sweepable scale of ``method``; ValueError when it has none."""
    scale = MERGE_METHODS.facts(method)["scale"]
    if scale is None:
        raise ValueError(f"merge method {method!r} has no sweepable scale (λ, β): it takes no grid")
    return scale


def select_scale(
    val: TaskPool,
    spec: MethodSpec,
    grid: Sequence[float],
    criterion: Criterion,
    **merge_kwargs: Any,
) -> tuple[State, Selection]:
    """Merge with ``spec`` at each ``grid`` value of its scale, score each on ``val`` by ``criterion``,
    and return the best merged state (the first, on ties) and the sweep."""
    scale = sweep_scale(spec.name)
    selection, best_state = Selection(scale, criterion), None
    for value in grid:
        state = merge(val, spec, **merge_kwargs, **{scale: value})
        metrics = val.evaluate(state, desc=f"{spec.name} {scale}={value}")
        score = float(criterion.score(metrics))
        selection.candidates.append({scale: value, "score": score, "metrics": metrics})
        if selection.best < 0 or score > selection.score:
            selection.best, best_state = len(selection.candidates) - 1, state
    return best_state, selection
