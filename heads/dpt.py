"""DPT decoder (Ranftl et al., 2021) on the encoder's taps, built from segmentation-models-pytorch.

smp's ``DPTDecoder`` reassembles each tap to strides 4, 8, 16, 32 (times a readout of the CLS token)
and fuses them coarse-to-fine. Its reassembly needs a power-of-two patch stride; for other patch sizes
(e.g. 14 in DINOv2) the tap maps are first resized to the grid a stride-16 ViT would give, which keeps
one code path for every encoder. A small conv head then predicts the task's channels.
"""

from __future__ import annotations

import torch.nn.functional as F
from segmentation_models_pytorch.decoders.dpt.decoder import DPTDecoder
from torch import Tensor, nn

from simo_merge.heads import HEADS
from simo_merge.heads.base import EncoderLayout, TaskHead
from simo_merge.tasks import TaskSpec


def _is_power_of_two(n: int) -> bool:
    return n >= 4 and n & (n - 1) == 0


@HEADS.register("dpt")
class DPTHead(TaskHead):
    kind = "dpt"

    def __init__(
        self,
        task: TaskSpec,
        layout: EncoderLayout,
        taps: list[int],
        features: int = 64,
        intermediate: list[int] | None = None,
        readout: str = "cat",
    ) -> None:
        intermediate = list(intermediate or [features // 2, features, features * 2, features * 2])
        if len(intermediate) < len(taps):
            intermediate += [intermediate[-1]] * (len(taps) - len(intermediate))
        intermediate = intermediate[: len(taps)]
        super().__init__(task, layout, taps, features=features, intermediate=intermediate, readout=readout)
        self.stride = layout.patch_size if _is_power_of_two(layout.patch_size) else 16
        self.decoder = DPTDecoder(
            encoder_out_channels=[layout.width] * len(taps),
            encoder_output_strides=[self.stride] * len(taps),
            encoder_has_prefix_tokens=layout.num_prefix_tokens > 0,
            readout=readout if layout.num_prefix_tokens > 0 else "ignore",
            intermediate_channels=intermediate,
            fusion_channels=features,
        )
        self.head = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1, bias=False),
            nn.BatchNorm2d(features),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, task.channels, 1),
        )

    def decode(self, maps: list[Tensor], prefixes: list[Tensor | None]) -> Tensor:
        if self.stride != self.layout.patch_size:
            h, w = self.layout.image_size
            if tuple(maps[0].shape[-2:]) != tuple(self.layout.grid_size):  # another input size
                h, w = (n * self.layout.patch_size for n in maps[0].shape[-2:])
            maps = [
                F.interpolate(m, size=(h // 16, w // 16), mode="bilinear", align_corners=False) for m in maps
            ]
        return self.head(self.decoder(maps, prefixes))
