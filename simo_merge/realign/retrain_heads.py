"""Head realignment (SIMO): keep the merged encoder frozen and re-train each task's head on its taps.

Supervised (the SIMO paper's recipe, few labels) or unsupervised (distil the expert model's outputs).
The heads start from the experts' heads; the merged taps are frozen, so they are cached.
"""

from __future__ import annotations

from simo_merge.features.sites import Site
from simo_merge.realign import REALIGNERS
from simo_merge.realign.plan import Plan


@REALIGNERS.register("heads", label="Head re-training", objective="supervised")
def plan_heads(depth: int, head_sites: dict[str, list[Site]]) -> Plan:
    loss_sites: dict[str, list[Site]] = {t: [] for t in head_sites}
    return Plan(adapters={}, feed_forward=False, loss_sites=loss_sites, trains_heads=True, match="outputs")
