"""The data side of data-dependent merging (AdaMerging, Fisher, RegMean).

A data-dependent merge method stays a function over state dicts; it receives ``merge_data`` (a
:class:`MergeData`) that knows how to run the pool's encoder and heads on unlabelled inputs and yields
what the method needs (a differentiable objective of a candidate state, per-task Fisher diagonals,
per-layer Gram matrices). Tests can pass a hand-made merge_data; :class:`MergeData` is the real one for
any pool.
"""

from simo_merge.merging.data.base import MergeData
from simo_merge.merging.data.fisher import diagonal_fisher
from simo_merge.merging.data.gram import gram_matrices

__all__ = ["MergeData", "diagonal_fisher", "gram_matrices"]
