"""timm VisionTransformer (incl. DINOv2-style register/prefix tokens) behind the Encoder seam."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import timm
import torch.nn.functional as F
from timm.layers import Format
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
        """The model on ``pixels``; an input of another size than the model's is centre-padded with zeros
        (normalised space) to the patch grid and run with position embeddings resampled to its grid, as
        the SIMO model evaluates at native size (:func:`centre_pad`)."""
        embed = self.model.patch_embed
        if embed.img_size is None or tuple(pixels.shape[-2:]) == tuple(embed.img_size):
            return self.model(pixels)
        with _dynamic_size(self.model):
            return self.model(centre_pad(pixels, embed.patch_size))


def centre_pad(x: Tensor, patch: tuple[int, int]) -> Tensor:
    """``x`` zero-padded on both sides up to multiples of ``patch`` (left / top get the smaller half), as
    the SIMO backbone's ``CenterPadding`` pre-hook (d23845jg/simo_merging ``models/dinov2/utils.py``
    lines 24-42, ``models/dinov2/mtl/multitasker.py`` lines 92-94)."""
    pads: list[int] = []
    for size, multiple in ((x.shape[-1], patch[1]), (x.shape[-2], patch[0])):
        extra = math.ceil(size / multiple) * multiple - size
        pads += [extra // 2, extra - extra // 2]
    return F.pad(x, pads) if any(pads) else x


@contextmanager
def _dynamic_size(model: Any) -> Iterator[None]:
    """Run a timm VisionTransformer built for one size on another: token grid as NHWC from the patch
    embedding, position embeddings resampled to it (timm's ``dynamic_img_size``), restored afterwards."""
    embed = model.patch_embed
    saved = (model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt)
    if saved[0]:  # built dynamic already
        yield
        return
    model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt = (
        True,
        False,
        False,
        Format.NHWC,
    )
    try:
        yield
    finally:
        model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt = saved


@ENCODERS.register("timm")
def build_timm_encoder(
    arch: str, pretrained: bool | str | None = False, checkpoint: str | None = None, **kwargs: Any
) -> TimmViTEncoder:
    """``timm.create_model(arch, num_classes=0, **kwargs)`` with optional weights, never from a network.

    ``checkpoint``: a file (timm, original DINOv2 or HF Dinov2 layout) loaded strictly, position
    embeddings resampled to ``img_size``. ``pretrained``: ``true`` (timm's default tag), a tag
    (``lvd142m``) or a Hugging Face repository (``org/name``), found in the local caches only
    (:mod:`simo_merge.encoders.pretrained`); timm tags load through timm's own filter
    (``pretrained_cfg_overlay=dict(file=...)``). The encoder's ``source`` records file and hash.
    """
    from simo_merge.encoders.pretrained import (
        load_timm_checkpoint,
        parse_pretrained,
        resolve_hf_repo,
        resolve_timm_pretrained,
        weight_source,
    )

    kwargs.setdefault("num_classes", 0)
    tag = parse_pretrained(pretrained)
    if tag and checkpoint:
        raise ValueError(
            f"timm {arch}: give either checkpoint= ({checkpoint}) or pretrained= ({tag}), not both"
        )
    source = None
    if isinstance(tag, str) and "/" in tag:  # a Hugging Face model repository (e.g. facebook/dinov2-small)
        checkpoint = str(resolve_hf_repo(tag))
        kind, name = "pretrained", tag
    else:
        kind, name = "checkpoint", ""
    if tag and checkpoint is None:
        path, full = resolve_timm_pretrained(arch, tag)
        model = timm.create_model(full, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        source = weight_source(path, "pretrained", full)
    else:
        model = timm.create_model(arch, pretrained=False, **kwargs)
        if checkpoint is not None:
            load_timm_checkpoint(model, checkpoint, arch)
            source = weight_source(checkpoint, kind, name)
    encoder = TimmViTEncoder(model, name=arch)
    encoder.source = source
    return encoder
