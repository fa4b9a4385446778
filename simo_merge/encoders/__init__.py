"""Encoders: one interface (:class:`Encoder`) over timm and open_clip ViTs, built by name."""

from __future__ import annotations

from typing import Any

from simo_merge.registry import Registry

ENCODERS: Registry = Registry("encoder", package=__name__)

from simo_merge.encoders.base import Encoder, EncoderOutput  # noqa: E402
from simo_merge.encoders.hooks import HookHandle  # noqa: E402
from simo_merge.encoders.input_range import InputRangeWarning, check_normalisation  # noqa: E402


def build_encoder(library: str, arch: str, normalisation: str = "encoder", **kwargs: Any) -> Encoder:
    """Build an encoder: ``library`` is a registry name ("timm", "open_clip"), ``arch`` its model name,
    ``normalisation`` how it maps [0, 1] images to its input (``Protocol.normalisation``: "encoder" for
    its own mean/std, "two_x_minus_one" for SIMO's ``2x - 1``)."""
    check_normalisation(normalisation, f"{library}:{arch}")
    encoder = ENCODERS.get(library)(arch, **kwargs)
    encoder.normalisation = normalisation
    return encoder


__all__ = ["ENCODERS", "Encoder", "EncoderOutput", "HookHandle", "InputRangeWarning", "build_encoder"]
