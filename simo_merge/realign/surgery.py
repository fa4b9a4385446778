"""Surgery (Yang et al., ICML 2024): one adapter per task on the encoder's final features.

For heads that read the pooled/projected features (classification) the site is ``"final"``; for dense
heads the encoder's final features are the last block's tokens. The adapter acts after everything
else, so the merged features feeding it are frozen: training can run from cached features alone.
"""

from __future__ import annotations

from simo_merge.features.sites import Site
from simo_merge.realign import REALIGNERS
from simo_merge.realign.plan import Plan


def final_site(depth: int, head_sites: list[Site]) -> Site:
    return "final" if "final" in head_sites else depth - 1


@REALIGNERS.register("surgery", label="Surgery", objective="unsupervised")
def plan_surgery(depth: int, head_sites: dict[str, list[Site]]) -> Plan:
    sites = {t: [final_site(depth, s)] for t, s in head_sites.items()}
    return Plan(adapters=sites, feed_forward=False, loss_sites=sites)
