"""Dense regression metrics: depth/disparity errors and a generic per-pixel L1."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from simo_merge.metrics._common import as_bchw, as_bool_mask, check_same_shape


def _valid_pixels(
    pred: Tensor, target: Tensor, mask: Tensor | None, name: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Shared checks: return (pred [B,C,H,W], target [B,C,H,W], valid [B,H,W]) with finite targets only."""
    pred = as_bchw(pred, name, "prediction")
    target = as_bchw(target, name, "target")
    check_same_shape(pred, target, name)
    valid = torch.isfinite(target).all(dim=1)
    m = as_bool_mask(mask, (target.shape[0], target.shape[2], target.shape[3]), name)
    if m is not None:
        valid &= m
    return pred, target, valid


class DepthMetric(Metric):
    """Absolute and relative error for depth (or disparity) maps over valid pixels.

    - ``"abs_err"`` = Σ|pred − gt| / N,
    - ``"rel_err"`` = Σ(|pred − gt| / gt) / N,

    where the sums and N run over every valid pixel of the whole data set (a global mean over pixels, not a
    mean of per-image means). A pixel is valid when its mask is True, its ground truth is finite and
    gt > 0 (the relative error is undefined otherwise). States are two float64 sums and a count, summed
    across updates and processes. Values are NaN before any valid pixel has been seen.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    abs_sum: Tensor
    rel_sum: Tensor
    count: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("abs_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rel_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``preds`` and ``target`` ``[B,1,H,W]`` (or ``[B,H,W]``), ``mask`` bool ``[B,H,W]``."""
        name = type(self).__name__
        pred, gt, valid = _valid_pixels(preds, target, mask, name)
        if gt.shape[1] != 1:
            raise ValueError(f"{name}: expects one channel, got target shape {tuple(gt.shape)}")
        valid &= gt[:, 0] > 0
        p = pred[:, 0][valid].double()
        g = gt[:, 0][valid].double()
        err = (p - g).abs()
        self.abs_sum += err.sum()
        self.rel_sum += (err / g).sum()
        self.count += valid.sum()

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"abs_err", "rel_err"}`` as 0-dim float64 tensors."""
        n = self.count.double()
        if self.count == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
            return {"abs_err": nan, "rel_err": nan.clone()}
        return {"abs_err": self.abs_sum / n, "rel_err": self.rel_sum / n}


class RegressionL1Metric(Metric):
    """Mean absolute error over valid pixels and all channels (edges, keypoints, autoencoding, ...).

    ``"l1"`` = Σ_{valid pixels, channels} |pred − gt| / (N_valid_pixels × C). A pixel is valid when its
    mask is True and all its target channels are finite. NaN before any valid pixel has been seen.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    abs_sum: Tensor
    count: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("abs_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``preds`` and ``target`` ``[B,C,H,W]`` (or ``[B,H,W]``), ``mask`` bool ``[B,H,W]``."""
        pred, gt, valid = _valid_pixels(preds, target, mask, type(self).__name__)
        sel = valid.unsqueeze(1).expand_as(gt)
        self.abs_sum += (pred[sel].double() - gt[sel].double()).abs().sum()
        self.count += sel.sum()

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"l1"}`` as a 0-dim float64 tensor."""
        if self.count == 0:
            return {"l1": torch.tensor(float("nan"), dtype=torch.float64, device=self.abs_sum.device)}
        return {"l1": self.abs_sum / self.count.double()}
