"""open_clip visual towers (CLIP ViT-B/32, B/16, L/14, ...) behind the Encoder seam."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
from torch import Tensor

from simo_merge.encoders import ENCODERS
from simo_merge.encoders.base import Encoder

CONFIG_DIR = Path(__file__).resolve().parent / "open_clip_configs"
_registered = False


def register_small_configs() -> None:
    """Make the package's small open_clip configs (e.g. ``ViT-Tiny-8``) known to open_clip."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


class OpenClipViTEncoder(Encoder):
    """Wraps ``open_clip`` ``VisionTransformer``; final features are the projected CLIP embedding."""

    block_key_prefix = "transformer.resblocks."

    def __init__(self, visual: Any, name: str = "") -> None:
        if not hasattr(visual, "transformer") or not hasattr(visual.transformer, "resblocks"):
            raise TypeError(f"open_clip model {name!r} has no ViT visual tower (.transformer.resblocks)")
        mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        super().__init__(
            model=visual,
            blocks=list(visual.transformer.resblocks),
            width=visual.transformer.width,
            feature_dim=visual.output_dim,
            num_prefix_tokens=1,
            grid_size=tuple(visual.grid_size),
            mean=mean,
            std=std,
            batch_first=getattr(visual.transformer, "batch_first", True),
            name=name,
        )

    def _forward_impl(self, pixels: Tensor) -> Tensor:
        out = self.model(pixels)
        return out[0] if isinstance(out, tuple) else out


@ENCODERS.register("open_clip")
def build_open_clip_encoder(arch: str, checkpoint: str | None = None, **kwargs: Any) -> OpenClipViTEncoder:
    """Build ``arch``'s visual tower with random init (weights come from checkpoints, never a hub)."""
    register_small_configs()
    model = open_clip.create_model(arch, pretrained=None, **kwargs)
    return OpenClipViTEncoder(model.visual, name=arch)
