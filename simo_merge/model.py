"""The SIMO model: one encoder pass, every task head on the same taps."""

from __future__ import annotations

from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.heads import TaskHead


class MultiTaskModel(nn.Module):
    """``encoder`` + ``heads`` (task -> head); :meth:`forward` runs the encoder once for all heads."""

    def __init__(self, encoder: Encoder, heads: dict[str, TaskHead]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def taps(self, tasks: list[str] | None = None) -> list[int | str]:
        return sorted({i for t in (tasks or self.tasks) for i in self.heads[t].taps}, key=str)

    def forward(self, images: Tensor, tasks: list[str] | None = None) -> dict[str, Tensor]:
        tasks = tasks or self.tasks
        out = self.encoder(images, taps=[i for i in self.taps(tasks) if i != "final"])
        feats = {**out.taps, "final": out.features}  # dense heads read block taps, classifiers "final"
        return {t: self.heads[t](feats) for t in tasks}
