"""A merge method's scale (λ, β) chosen on a labelled split: each candidate merged, evaluated and scored by
its mean normalised performance against the experts on that split; the first best wins.

The one way the demo's merged rows and ``simo-merge merge method.grid=[...]`` pick their scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.spec import MethodSpec
from simo_merge.metrics.summary import normalized_performance
from simo_merge.taskpool.probes import State, merge
from simo_merge.taskpool.taskpool import Results, TaskPool


@dataclass
class Selection:
    """The swept ``scale``, each candidate's value, score and metrics (in grid order), and the best."""

    scale: str
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
            "score": "mean normalised performance (%) against the experts on the split",
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
    baseline: Results,
    **merge_kwargs: Any,
) -> tuple[State, Selection]:
    """Merge with ``spec`` at each ``grid`` value of its scale, score each on ``val`` against the experts'
    ``baseline`` metrics there, and return the best merged state (the first, on ties) and the sweep."""
    scale = sweep_scale(spec.name)
    selection, best_state = Selection(scale), None
    for value in grid:
        state = merge(val, spec, **merge_kwargs, **{scale: value})
        metrics = val.evaluate(state, desc=f"{spec.name} {scale}={value}")
        score = float(normalized_performance(metrics, baseline)["mean"])
        selection.candidates.append({scale: value, "score": score, "metrics": metrics})
        if selection.best < 0 or score > selection.score:
            selection.best, best_state = len(selection.candidates) - 1, state
    return best_state, selection
