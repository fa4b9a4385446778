"""A brief generic pretraining of θ0 (masked-patch reconstruction), so experts share a real start.

Half of the patches of each image are replaced by grey; a throw-away linear decoder maps every final
patch token back to its pixels; the loss is the L1 error on the hidden patches (MAE-like, but with the
mask applied in pixel space so the encoder needs no special input path). None of the downstream tasks
is used.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.runtime import current
from simo_merge.training.loop import fit


def _unpatchify(tokens: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    b = tokens.shape[0]
    h, w = grid
    x = tokens.reshape(b, h, w, 3, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, 3, h * patch, w * patch)


def pretrain_masked_reconstruction(
    encoder: Encoder,
    loader: Iterable,
    steps: int,
    lr: float = 1e-3,
    mask_ratio: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``encoder`` in place for ``steps`` steps; return the loss curve."""
    h, w = encoder.grid_size
    patch = next(iter(loader))["image"].shape[-2] // h
    decoder = nn.Linear(encoder.width, 3 * patch * patch)
    gen = torch.Generator().manual_seed(seed)
    last = encoder.depth - 1

    def step(batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        images = batch["image"]
        hidden = (torch.rand(images.shape[0], 1, h, w, generator=gen) < mask_ratio).float().to(images.device)
        pixel_mask = hidden.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        masked = images * (1 - pixel_mask) + 0.5 * pixel_mask
        tokens = encoder(masked, taps=[last]).taps[last][:, encoder.num_prefix_tokens :]
        recon = _unpatchify(decoder(tokens), (h, w), patch)
        err = (recon - images).abs().mean(1, keepdim=True)
        return (err * pixel_mask).sum() / pixel_mask.sum().clamp(min=1), {}

    home = next(encoder.parameters()).device
    encoder.train().to(current().device)  # trained on the run's device, handed back where it came from
    decoder.to(current().device)
    params = [
        {"params": list(encoder.parameters()), "lr": lr},
        {"params": list(decoder.parameters()), "lr": lr},
    ]
    curve = fit(step, params, loader, steps, desc="pretrain θ0", progress=progress)
    encoder.to(home)
    return curve
