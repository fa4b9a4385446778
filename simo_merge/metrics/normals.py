"""Surface-normal metric: angular error statistics with a fixed-size histogram for the median."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from simo_merge.metrics._common import as_bool_mask, check_same_shape

#: Angle thresholds (degrees) reported as "within_<t>" percentages.
NORMAL_THRESHOLDS: tuple[float, ...] = (11.25, 22.5, 30.0)


class NormalMetric(Metric):
    """Angular error (degrees) between predicted and ground-truth normals over valid pixels.

    Both vectors are L2-normalised per pixel, the cosine of their angle is clamped to [-1, 1] and the
    angle is ``acos`` of it (computed in float64). A pixel is valid when its mask is True and its target
    is finite with non-zero norm; a zero prediction counts as 90°.

    ``compute()`` returns:

    - ``"mean_angle"``: exact mean (float64 running sum / count);
    - ``"median_angle"``: from a histogram of ``180 * bins_per_degree`` bins over [0°, 180°] (18000 bins,
      0.01° wide, by default). The bin where the cumulative count first reaches N/2 holds the lower median
      (the element ``torch.median`` returns); the value is interpolated linearly inside that bin assuming
      its counts are spread uniformly, so it is within one bin width (0.01° by default) of the exact
      median;
    - ``"within_11.25"``, ``"within_22.5"``, ``"within_30"``: percentage (0-100) of pixels whose angle is
      strictly below the threshold, from exact counters (not the histogram).

    All states are fixed-size and summed across updates and processes. Values are NaN when nothing has
    been counted.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    hist: Tensor
    angle_sum: Tensor
    count: Tensor
    within: Tensor

    def __init__(self, bins_per_degree: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(bins_per_degree) < 1:
            raise ValueError(f"NormalMetric: bins_per_degree must be >= 1, got {bins_per_degree}")
        self.bins_per_degree = int(bins_per_degree)
        self.num_bins = 180 * self.bins_per_degree
        self.add_state("hist", default=torch.zeros(self.num_bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("angle_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "within", default=torch.zeros(len(NORMAL_THRESHOLDS), dtype=torch.long), dist_reduce_fx="sum"
        )

    @staticmethod
    def angles(preds: Tensor, target: Tensor) -> Tensor:
        """Per-pixel angle in degrees (float64) between ``[B,3,H,W]`` maps, cosine clamped to [-1, 1]."""
        p = F.normalize(preds.double(), dim=1, eps=1e-12)
        t = F.normalize(target.double(), dim=1, eps=1e-12)
        cos = (p * t).sum(dim=1).clamp(-1.0, 1.0)
        return torch.rad2deg(torch.acos(cos))

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``preds`` and ``target`` ``[B,3,H,W]``, ``mask`` bool ``[B,H,W]``."""
        name = type(self).__name__
        if target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f"{name}: target must be [B,3,H,W], got shape {tuple(target.shape)}")
        check_same_shape(preds, target, name)
        valid = torch.isfinite(target).all(dim=1) & (target.abs().sum(dim=1) > 0)
        m = as_bool_mask(mask, (target.shape[0], target.shape[2], target.shape[3]), name)
        if m is not None:
            valid &= m
        ang = self.angles(preds, target)[valid]
        idx = (ang * self.bins_per_degree).floor().long().clamp_(0, self.num_bins - 1)
        self.hist += torch.bincount(idx, minlength=self.num_bins)
        self.angle_sum += ang.sum()
        self.count += ang.numel()
        self.within += torch.stack([(ang < t).sum() for t in NORMAL_THRESHOLDS])

    def compute(self) -> dict[str, Tensor]:
        """Return mean/median angle (degrees) and the within-threshold percentages as float64 tensors."""
        dev = self.hist.device
        n = int(self.count)
        keys = ["mean_angle", "median_angle"] + [f"within_{t:g}" for t in NORMAL_THRESHOLDS]
        if n == 0:
            return {k: torch.tensor(float("nan"), dtype=torch.float64, device=dev) for k in keys}
        cum = self.hist.cumsum(0)
        half = n / 2.0
        k = int(torch.searchsorted(cum.double(), torch.tensor([half], dtype=torch.float64, device=dev))[0])
        before = float(cum[k - 1]) if k > 0 else 0.0
        in_bin = float(self.hist[k])
        width = 1.0 / self.bins_per_degree
        median = (k + (half - before) / in_bin) * width
        out = {
            "mean_angle": self.angle_sum / n,
            "median_angle": torch.tensor(median, dtype=torch.float64, device=dev),
        }
        pct = self.within.double() * 100.0 / n
        for i, t in enumerate(NORMAL_THRESHOLDS):
            out[f"within_{t:g}"] = pct[i]
        return {k_: out[k_] for k_ in keys}
