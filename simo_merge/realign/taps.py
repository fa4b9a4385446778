"""Tap realignment (SIMO): per-task adapters on exactly the features each head reads, not fed forward.

The trunk runs once; each head gets its own corrected copy of its taps. The unsupervised loss compares
the corrected taps with the expert's and, by default (``match="both"``), the frozen head's output with
the expert model's, since what matters is what the decoder reads. Like Surgery, the merged
features feeding the adapters are frozen, so training needs no encoder forward once they are cached.
"""

from __future__ import annotations

from simo_merge.features.sites import Site
from simo_merge.realign import REALIGNERS
from simo_merge.realign.plan import Plan


@REALIGNERS.register("taps", label="Decoder-tap surgery", objective="unsupervised")
def plan_taps(depth: int, head_sites: dict[str, list[Site]]) -> Plan:
    sites = {t: list(s) for t, s in head_sites.items()}
    return Plan(adapters=sites, feed_forward=False, loss_sites=sites, match="both")
