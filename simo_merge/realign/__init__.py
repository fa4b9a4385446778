"""Realignment after merging: small adapters (or re-trained heads) that pull the merged encoder's
features back to what each task's frozen decoder expects. One registry; one file per realigner.

A realigner only *plans* (:class:`Plan`): where adapters sit, whether they act inside the trunk (fed
forward to later blocks) or on recorded features, and which features the loss compares. The model
wrapper, the feature cache and the training loop are shared (``model.py``, ``train.py``, and the
feature cache in ``simo_merge.features``).
"""

from simo_merge.registry import Registry

#: Every realigner declares at registration its ``label`` (for reports) and default ``objective``
#: ("unsupervised": match the experts without labels; "supervised": needs labelled inputs).
REALIGNERS: Registry = Registry("realigner", package=__name__, required_facts=("label", "objective"))

from simo_merge.features.sites import Site  # noqa: E402
from simo_merge.realign.adapter import Adapter  # noqa: E402
from simo_merge.realign.plan import Plan  # noqa: E402

__all__ = ["REALIGNERS", "Adapter", "Plan", "Site"]
