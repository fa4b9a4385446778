"""Probes: the data side of data-dependent merging (AdaMerging, Fisher, RegMean).

A data-dependent merge method stays a function over state dicts; it receives a probe that knows how
to run the pool's encoder and heads on unlabelled inputs and yields what the method needs (a
differentiable objective of a candidate state, per-task Fisher diagonals, per-layer Gram matrices).
Tests can pass a hand-made probe; :class:`ModelProbe` is the real one for any pool.
"""

from simo_merge.probes.base import ModelProbe
from simo_merge.probes.fisher import diagonal_fisher
from simo_merge.probes.gram import gram_matrices

__all__ = ["ModelProbe", "diagonal_fisher", "gram_matrices"]
