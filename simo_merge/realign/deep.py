"""Deep representation surgery (SurgeryV2, Yang et al. 2024): per task, an adapter after every block.

Adapters sit on the residual stream (all tokens) and are fed forward to the next block, plus one on the
final features where the heads read them. The loss sums, over blocks, the L1 between the adapted merged
block output and the expert's, on token-averaged features by default (``token_reduce="none"`` compares
every token), plus the final-feature term. Depth and width come from the encoder (ViT-L/14: 24 x 1024).
With per-task adapters a SIMO model runs the trunk once per task at inference.
"""

from __future__ import annotations

from simo_merge.features.sites import Site
from simo_merge.realign import REALIGNERS
from simo_merge.realign.plan import Plan


@REALIGNERS.register("deep", label="Deep surgery (SurgeryV2)", objective="unsupervised")
def plan_deep(depth: int, head_sites: dict[str, list[Site]]) -> Plan:
    sites: dict[str, list[Site]] = {}
    for task, read in head_sites.items():
        sites[task] = list(range(depth)) + (["final"] if "final" in read else [])
    return Plan(adapters=sites, feed_forward=True, loss_sites=sites, token_reduce="mean")
