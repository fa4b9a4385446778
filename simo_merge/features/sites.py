"""Sites (a block index or ``"final"``) and one encoder pass that returns the requested ones.

A *site* is a block index (its output tokens ``[B, N, D]``) or ``"final"`` (the encoder's final
features ``[B, F]``). Heads declare the sites they read (``head.taps``).
"""

from __future__ import annotations

from torch import Tensor, nn

from simo_merge.encoders import Encoder

Site = int | str

Features = dict[Site, Tensor]


def site_name(site: Site) -> str:
    """A site's name in adapters and caches: ``"final"`` or ``"block<i>"``."""
    return "final" if site == "final" else f"block{int(site)}"


def head_sites(head: nn.Module) -> list[Site]:
    """The sites a head reads (``head.taps``: block indices and/or ``"final"``)."""
    return list(head.taps)


def run_encoder(encoder: Encoder, images: Tensor, sites: list[Site]) -> Features:
    """One encoder pass returning the requested sites (block outputs and/or final features)."""
    out = encoder(images, taps=sorted({s for s in sites if s != "final"}))
    feats: Features = dict(out.taps)
    feats["final"] = out.features
    return feats
