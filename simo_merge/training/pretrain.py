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
from simo_merge.runtime import current, placed
from simo_merge.training.loop import fit


def _unpatchify(tokens: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    b = tokens.shape[0]
    h, w = grid
    x = tokens.reshape(b, h, w, 3, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, 3, h * patch, w * patch)


class MaskedReconstruction(nn.Module):
    """The pretraining objective as a module (so DDP can wrap its forward): L1 error on hidden patches.

    The patch masks come from one seeded generator drawn for the whole global batch, each rank taking the
    rows of its samples (``rank::world``), so a several-process run hides the one-process run's patches
    and, normalised by the global batch's hidden pixels, averages to the one-process loss."""

    def __init__(self, encoder: Encoder, patch: int, mask_ratio: float, seed: int) -> None:
        super().__init__()
        self.encoder, self.patch, self.mask_ratio = encoder, patch, mask_ratio
        self.decoder = nn.Linear(encoder.width, 3 * patch * patch)
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        images, encoder, patch = batch["image"], self.encoder, self.patch
        h, w = encoder.grid_size
        rank, world = current().rank, current().world_size
        hidden_global = torch.rand(images.shape[0] * world, 1, h, w, generator=self.gen) < self.mask_ratio
        hidden = hidden_global[rank::world].float().to(images.device)
        # the global batch's mean hidden pixels per rank: the ranks' mean loss is then the global batch's
        per_rank = hidden_global.sum().item() * patch * patch / world
        pixel_mask = hidden.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        masked = images * (1 - pixel_mask) + 0.5 * pixel_mask
        last = encoder.depth - 1
        tokens = encoder(masked, taps=[last]).taps[last][:, encoder.num_prefix_tokens :]
        recon = _unpatchify(self.decoder(tokens), (h, w), patch)
        err = (recon - images).abs().mean(1, keepdim=True)
        return (err * pixel_mask).sum() / max(per_rank, 1.0), {}


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
    patch = next(iter(loader))["image"].shape[-2] // encoder.grid_size[0]
    objective = MaskedReconstruction(encoder, patch, mask_ratio, seed)
    params = [
        {"params": list(encoder.parameters()), "lr": lr},
        {"params": list(objective.decoder.parameters()), "lr": lr},
    ]
    with placed(objective.train()):  # trained on the run's device, handed back where it came from
        return fit(objective, params, loader, steps, desc="pretrain θ0", progress=progress)
