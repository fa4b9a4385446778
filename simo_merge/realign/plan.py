"""What a realigner decides: adapter placement, feed-forward or not, and the loss sites.

A *site* is a block index (its output tokens ``[B, N, D]``) or ``"final"`` (the encoder's final
features ``[B, F]``). Heads declare the sites they read (``head.taps``: dense heads read block taps,
classification heads read ``"final"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simo_merge.features.sites import Site

SHARED = "shared"


@dataclass(frozen=True)
class Plan:
    """``adapters``: owner (a task, or ``"shared"``) -> sites carrying an adapter.

    ``feed_forward``: block adapters replace the block output inside the trunk (later blocks see the
    correction; SurgeryV2), otherwise adapters act on recorded features only (Surgery, taps): then the
    merged features feeding them are frozen and can be cached. ``loss_sites``: task -> sites whose
    adapted merged features are compared with that task's expert. ``trains_heads``: the heads themselves
    are re-trained (no adapters). ``match``: what the unsupervised loss compares with the expert.
    """

    adapters: dict[str, list[Site]]
    feed_forward: bool
    loss_sites: dict[str, list[Site]]
    trains_heads: bool = False
    token_reduce: str = "none"  # "none": per-token L1; "mean": L1 of token-averaged features
    match: str = "features"  # unsupervised target: expert "features", expert head "outputs", or "both"
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def owner(self, task: str) -> str | None:
        if task in self.adapters:
            return task
        return SHARED if SHARED in self.adapters else None

    @property
    def shared(self) -> bool:
        return SHARED in self.adapters
