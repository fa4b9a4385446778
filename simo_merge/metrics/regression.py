"""Dense regression metrics: depth/disparity errors and a generic per-pixel L1."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from simo_merge.metrics._common import as_bchw, as_bool_mask, batch_terms, check_choice, check_same_shape


def _valid_pixels(
    pred: Tensor, target: Tensor, mask: Tensor | None, name: str, valid_pixels: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Shared checks: return (pred [B,C,H,W], target [B,C,H,W], valid [B,H,W]).

    ``"masked"``: finite targets where ``mask`` is True. ``"simo"``: where the target's channels do not sum
    to 0, ``mask`` unused (SIMO ``training/utils.py`` lines 218-225; its ``img_metas["mask"]`` is
    Taskonomy's ``mask_valid``, not read here).
    """
    pred = as_bchw(pred, name, "prediction")
    target = as_bchw(target, name, "target")
    check_same_shape(pred, target, name)
    if valid_pixels == "simo":
        return pred, target, target.sum(dim=1) != 0
    valid = torch.isfinite(target).all(dim=1)
    m = as_bool_mask(mask, (target.shape[0], target.shape[2], target.shape[3]), name)
    if m is not None:
        valid &= m
    return pred, target, valid


class DepthMetric(Metric):
    """Absolute and relative error for depth (or disparity) maps over valid pixels.

    - ``"abs_err"`` = mean |pred − gt|,
    - ``"rel_err"`` = mean |pred − gt| / |gt|,

    ``aggregation="pooled"`` (default): means over every valid pixel of the whole data set;
    ``"per_batch"``: a running mean of per-batch means (SIMO's; :func:`batch_terms`).
    ``valid_pixels="masked"`` (default): a pixel is valid when its mask is True, its ground truth is
    finite and gt > 0; ``"simo"``: when gt ≠ 0 (SIMO's ``sum(gt) != 0``, mask unused). States are float64
    sums and a weight, summed across updates and processes. NaN before any valid pixel has been seen.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    abs_sum: Tensor
    rel_sum: Tensor
    weight: Tensor

    def __init__(self, aggregation: str = "pooled", valid_pixels: str = "masked", **kwargs) -> None:
        super().__init__(**kwargs)
        self.aggregation = check_choice(aggregation, "aggregation", type(self).__name__)
        self.valid_pixels = check_choice(valid_pixels, "valid_pixels", type(self).__name__)
        for state in ("abs_sum", "rel_sum", "weight"):
            self.add_state(state, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``preds`` and ``target`` ``[B,1,H,W]`` (or ``[B,H,W]``), ``mask`` bool ``[B,H,W]``."""
        name = type(self).__name__
        pred, gt, valid = _valid_pixels(preds, target, mask, name, self.valid_pixels)
        if gt.shape[1] != 1:
            raise ValueError(f"{name}: expects one channel, got target shape {tuple(gt.shape)}")
        if self.valid_pixels == "masked":
            valid &= gt[:, 0] > 0
        p = pred[:, 0][valid].double()
        g = gt[:, 0][valid].double()
        err = (p - g).abs()
        count, images = valid.sum(), gt.shape[0]
        abs_sum, weight = batch_terms(err.sum(), count, images, self.aggregation)
        rel_sum, _ = batch_terms((err / g.abs()).sum(), count, images, self.aggregation)
        self.abs_sum += abs_sum
        self.rel_sum += rel_sum
        self.weight += weight

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"abs_err", "rel_err"}`` as 0-dim float64 tensors."""
        if self.weight == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.weight.device)
            return {"abs_err": nan, "rel_err": nan.clone()}
        return {"abs_err": self.abs_sum / self.weight, "rel_err": self.rel_sum / self.weight}


class RegressionL1Metric(Metric):
    """Mean absolute error over valid pixels and all channels (edges, keypoints, autoencoding, ...).

    ``"l1"`` = mean over valid pixels and channels of |pred − gt|, pooled over the data set or a running
    mean of per-batch means (``aggregation``, as :class:`DepthMetric`). A pixel is valid when its mask is
    True and all its target channels are finite (``valid_pixels="masked"``) or when its target channels
    do not sum to 0 (``"simo"``). NaN before any valid pixel has been seen.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    abs_sum: Tensor
    weight: Tensor

    def __init__(self, aggregation: str = "pooled", valid_pixels: str = "masked", **kwargs) -> None:
        super().__init__(**kwargs)
        self.aggregation = check_choice(aggregation, "aggregation", type(self).__name__)
        self.valid_pixels = check_choice(valid_pixels, "valid_pixels", type(self).__name__)
        self.add_state("abs_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``preds`` and ``target`` ``[B,C,H,W]`` (or ``[B,H,W]``), ``mask`` bool ``[B,H,W]``."""
        pred, gt, valid = _valid_pixels(preds, target, mask, type(self).__name__, self.valid_pixels)
        sel = valid.unsqueeze(1).expand_as(gt)
        total = (pred[sel].double() - gt[sel].double()).abs().sum()
        abs_sum, weight = batch_terms(total, sel.sum(), gt.shape[0], self.aggregation)
        self.abs_sum += abs_sum
        self.weight += weight

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"l1"}`` as a 0-dim float64 tensor."""
        if self.weight == 0:
            return {"l1": torch.tensor(float("nan"), dtype=torch.float64, device=self.abs_sum.device)}
        return {"l1": self.abs_sum / self.weight}
