"""Shared deep realignment (SIMO): one set of per-block adapters shared by all tasks, fed forward.

One trunk pass serves every head. The loss sums over tasks the L1 between the adapted merged features
and that task's expert at the layers the task's head reads (per token: dense heads read every token),
plus, by default (``match="both"``), the distance between each frozen head's output on the adapted
features and the expert model's output. One shared representation cannot equal three experts' features
at once; the feature term alone pulls it to a per-coordinate compromise that can hurt a task (measured
on the synthetic demo: depth fell from 60% to 47% of the expert), while each decoder only reads some
directions, which the output term targets. The price: the mean representation bias need not fall
(features move towards some experts and away from others); ``match="features"`` minimises it.
"""

from __future__ import annotations

from simo_merge.features.sites import Site
from simo_merge.realign import REALIGNERS
from simo_merge.realign.plan import SHARED, Plan


@REALIGNERS.register("shared-deep", label="Shared deep surgery", objective="unsupervised")
def plan_shared_deep(depth: int, head_sites: dict[str, list[Site]]) -> Plan:
    uses_final = any("final" in s for s in head_sites.values())
    adapters = {SHARED: list(range(depth)) + (["final"] if uses_final else [])}
    loss_sites = {t: list(s) for t, s in head_sites.items()}
    return Plan(adapters=adapters, feed_forward=True, loss_sites=loss_sites, match="both")
