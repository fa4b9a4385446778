"""The encoder's input path: catching images that are not [0, 1] images, and normalising them.

Every dataset yields [0, 1] images and every Encoder normalises them itself, in :func:`normalise_input`
(the one place that decides how): ``"encoder"`` applies the encoder's own mean/std, ``"two_x_minus_one"``
maps [0, 1] to [-1, 1] as the SIMO code feeds its images (d23845jg/simo_merging
``training/create_dataset.py`` line 154, ``im = 2.0 * data_dict.pop("im") - 1.0``); the run's
``data.protocol`` picks one (:mod:`simo_merge.protocols`). A batch normalised beforehand (the usual
DINOv2/CLIP recipe) would be normalised twice and silently degrade every number, hence the range check.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

#: How far outside [0, 1] a batch may reach before it counts as "not [0, 1] images". Resampling can
#: overshoot a little; an already mean/std-normalised image spans about [-2.1, 2.6] (ImageNet/CLIP stats).
INPUT_RANGE_TOLERANCE = 0.5
INPUT_CHECKS = ("warn", "error", "off")
#: how an encoder maps [0, 1] images to its input (``Protocol.normalisation``'s choices)
INPUT_NORMALISATIONS = ("encoder", "two_x_minus_one")


class InputRangeWarning(UserWarning):
    """Images handed to an :class:`~simo_merge.encoders.base.Encoder` are clearly outside [0, 1]
    (normalised twice?)."""


def check_input_policy(policy: str, name: str) -> None:
    """Raise ValueError unless ``policy`` (an encoder's ``input_check``) is one of :data:`INPUT_CHECKS`."""
    if policy not in INPUT_CHECKS:
        raise ValueError(f"{name}: input_check must be one of {INPUT_CHECKS}, got {policy!r}")


def out_of_range_message(images: Tensor, name: str, pixel_mean: Tensor) -> str | None:
    """Why ``images`` are clearly not [0, 1] images (for encoder ``name``), or None when they may be."""
    if images.numel() == 0:
        return None
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if lo >= -INPUT_RANGE_TOLERANCE and hi <= 1 + INPUT_RANGE_TOLERANCE:
        return None
    return (
        f"encoder {name!r}: input images span [{lo:.2f}, {hi:.2f}], clearly outside [0, 1]. The "
        "encoder expects [0, 1] images and applies its own mean/std normalisation "
        f"(mean {[round(v, 3) for v in pixel_mean.flatten().tolist()]}); images normalised "
        "beforehand get normalised twice. Pass [0, 1] images (or set encoder.input_check = 'off')."
    )


def check_input_range(images: Tensor, policy: str, name: str, pixel_mean: Tensor, warned: bool) -> bool:
    """Apply encoder ``name``'s ``input_check`` ``policy`` to ``images``: "off" does nothing, "error"
    raises ValueError for images clearly outside [0, 1], "warn" warns (:class:`InputRangeWarning`) unless
    ``warned`` already. Returns whether the encoder has warned now."""
    check_input_policy(policy, name)
    if policy == "off":
        return warned
    message = out_of_range_message(images, name, pixel_mean)
    if message is None:
        return warned
    if policy == "error":
        raise ValueError(message)
    if not warned:  # once per encoder: not once per batch
        # stacklevel: this function, Encoder.check_input_range, Encoder.forward, then nn.Module's call
        warnings.warn(message, InputRangeWarning, stacklevel=4)
    return True


def check_normalisation(normalisation: str, name: str) -> str:
    """``normalisation`` if it is one of :data:`INPUT_NORMALISATIONS`; ValueError naming encoder ``name``."""
    if normalisation not in INPUT_NORMALISATIONS:
        raise ValueError(
            f"{name}: input normalisation must be one of {INPUT_NORMALISATIONS}, got {normalisation!r}"
        )
    return normalisation


def normalise_input(images: Tensor, normalisation: str, mean: Tensor, std: Tensor) -> Tensor:
    """[0, 1] ``images`` as the encoder reads them: ``(x - mean) / std`` (``"encoder"``) or ``2x - 1``
    (``"two_x_minus_one"``, SIMO)."""
    if normalisation == "two_x_minus_one":
        return 2.0 * images - 1.0
    check_normalisation(normalisation, "encoder")
    return (images - mean.to(images.dtype)) / std.to(images.dtype)
