"""open_clip visual towers (CLIP ViT-B/32, B/16, L/14, ...) behind the Encoder seam."""

from __future__ import annotations

import os
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
        size = getattr(self.model, "image_size", pixels.shape[-2:])
        size = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
        if tuple(pixels.shape[-2:]) != size:  # no native-size (padded) forward for open_clip towers
            raise ValueError(
                f"open_clip encoder {self.name!r} takes {size[0]}x{size[1]} images, got "
                f"{pixels.shape[-2]}x{pixels.shape[-1]} (evaluation at the stored size, eval_size "
                "'native_pad', needs a timm encoder)"
            )
        out = self.model(pixels)
        return out[0] if isinstance(out, tuple) else out


def check_activation(arch: str, act: str | None, forced: bool, path: str | os.PathLike) -> None:
    """ValueError naming the architecture to build when checkpoint ``path`` says its weights use the
    activation ``arch`` (``forced``: ``force_quick_gelu``) does not; ``act`` None says nothing."""
    quick = forced or "quickgelu" in arch.lower()
    if act == "quick_gelu" and not quick:
        raise ValueError(
            f"{path}: OpenAI-derived CLIP weights, trained with QuickGELU; build the '{arch}-quickgelu' "
            f"architecture (or pass force_quick_gelu=true in encoder.kwargs), not GELU {arch!r}"
        )
    if act == "gelu" and quick:
        base = arch.removesuffix("-quickgelu")
        raise ValueError(f"{path}: these CLIP weights use GELU; build {base!r}, not QuickGELU {arch!r}")


@ENCODERS.register("open_clip")
def build_open_clip_encoder(
    arch: str, checkpoint: str | None = None, pretrained: bool | str | None = False, **kwargs: Any
) -> OpenClipViTEncoder:
    """Build ``arch``'s visual tower: random init, or weights from a file, never from a network.

    ``checkpoint``: an open_clip (whole CLIP or visual only) or HF CLIP vision state, loaded strictly into
    the visual tower, position embeddings resampled to its grid. ``pretrained``: ``true`` (open_clip's
    first tag for ``arch``), a tag (``openai``, ``laion2b_s34b_b79k``) or a Hugging Face repository,
    found in the local caches only (:mod:`simo_merge.encoders.pretrained`); a tag whose weights use
    QuickGELU is refused on a GELU architecture, and so is a checkpoint that says it was trained with
    the other activation (:func:`~simo_merge.encoders.convert_clip.clip_activation`: OpenAI's own state
    dict, a Hugging Face ``config.json``). The encoder's ``source`` records file and hash.
    """
    from simo_merge.encoders.convert_clip import clip_activation
    from simo_merge.encoders.pretrained import (
        load_open_clip_checkpoint,
        parse_pretrained,
        resolve_hf_repo,
        resolve_open_clip_pretrained,
        weight_source,
    )
    from simo_merge.io.checkpoint import load_state

    register_small_configs()
    tag = parse_pretrained(pretrained)
    if tag and checkpoint:
        raise ValueError(
            f"open_clip {arch}: give either checkpoint= ({checkpoint}) or pretrained= ({tag}), not both"
        )
    path, kind, name, cfg = checkpoint, "checkpoint", "", {}
    if tag:
        kind = "pretrained"
        if isinstance(tag, str) and "/" in tag and not Path(tag).expanduser().is_file():
            path, name = resolve_hf_repo(tag), tag
        else:
            path, name = resolve_open_clip_pretrained(arch, tag)
            cfg = open_clip.get_pretrained_cfg(arch, name) or {}
            quick = kwargs.get("force_quick_gelu") or "quickgelu" in arch.lower()
            if cfg.get("quick_gelu") and not quick:
                raise ValueError(
                    f"open_clip {arch} pretrained={name}: these weights were trained with QuickGELU; build "
                    f"the '{arch}-quickgelu' architecture (or pass force_quick_gelu=true in encoder.kwargs)"
                )
    state = None
    if path is not None and kind == "checkpoint":
        state = load_state(path)
        check_activation(arch, clip_activation(state, path), bool(kwargs.get("force_quick_gelu")), path)
    model = open_clip.create_model(arch, pretrained=None, **kwargs)
    visual = model.visual
    if cfg.get("mean") and cfg.get("std"):
        visual.image_mean, visual.image_std = tuple(cfg["mean"]), tuple(cfg["std"])
    if path is not None:
        load_open_clip_checkpoint(visual, path, arch, state)
    encoder = OpenClipViTEncoder(visual, name=arch)
    encoder.source = None if path is None else weight_source(path, kind, name)
    return encoder
