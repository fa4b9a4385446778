"""The SIMO model: one encoder pass, every task head on the same taps."""

from __future__ import annotations

from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.heads import TaskHead
from simo_merge.heads.base import head_output


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
        """Every head of ``tasks`` on one encoder pass. Images of another size than the heads' (the SIMO
        protocol's native-size evaluation) are centre-padded to the patch grid by the encoder and each
        dense output is resized back to the images' size."""
        tasks = tasks or self.tasks
        out = self.encoder(images, taps=[i for i in self.taps(tasks) if i != "final"])
        feats = {**out.taps, "final": out.features}  # dense heads read block taps, classifiers "final"
        size = tuple(images.shape[-2:])
        return {t: head_output(self.heads[t], feats, size) for t in tasks}
