"""timm VisionTransformer (incl. DINOv2-style register/prefix tokens) behind the Encoder seam."""

from __future__ import annotations

from typing import Any

import timm
from torch import Tensor

from simo_merge.encoders import ENCODERS
from simo_merge.encoders.base import Encoder


class TimmViTEncoder(Encoder):
    """Wraps a ``timm`` VisionTransformer created with ``num_classes=0`` (pooled pre-logit features)."""

    block_key_prefix = "blocks."

    def __init__(self, model: Any, name: str = "") -> None:
        if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
            raise TypeError(f"timm model {name!r} is not a VisionTransformer (no .blocks/.patch_embed)")
        cfg = getattr(model, "pretrained_cfg", None) or {}
        super().__init__(
            model=model,
            blocks=list(model.blocks),
            width=model.embed_dim,
            feature_dim=model.num_features,
            num_prefix_tokens=model.num_prefix_tokens,
            grid_size=tuple(model.patch_embed.grid_size),
            mean=cfg.get("mean", (0.485, 0.456, 0.406)),
            std=cfg.get("std", (0.229, 0.224, 0.225)),
            name=name,
        )

    def _forward_impl(self, pixels: Tensor) -> Tensor:
        return self.model(pixels)


@ENCODERS.register("timm")
def build_timm_encoder(arch: str, pretrained: bool = False, **kwargs: Any) -> TimmViTEncoder:
    """``timm.create_model(arch, num_classes=0, **kwargs)``; ``pretrained`` uses timm's cache only."""
    kwargs.setdefault("num_classes", 0)
    model = timm.create_model(arch, pretrained=pretrained, **kwargs)
    return TimmViTEncoder(model, name=arch)
