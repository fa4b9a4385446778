"""Surface-normal metric: angular error statistics with a fixed-size histogram for the median."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from simo_merge.metrics._common import as_bool_mask, batch_terms, check_choice, check_same_shape

#: Angle thresholds (degrees) reported as "within_<t>" percentages.
NORMAL_THRESHOLDS: tuple[float, ...] = (11.25, 22.5, 30.0)


class NormalMetric(Metric):
    """Angular error (degrees) between predicted and ground-truth normals over valid pixels.

    ``valid_pixels="masked"`` (default): both vectors are L2-normalised per pixel, the cosine of their
    angle is clamped to [-1, 1] and the angle is ``acos`` of it (computed in float64); a pixel is valid
    when its mask is True and its target is finite with non-zero norm; a zero prediction counts as 90°.
    ``"simo"``: the dot product of the vectors as given (not renormalised), clamped to [-1, 1], over the
    pixels whose target components do not sum to 0, mask unused (SIMO ``training/utils.py`` 233-241).

    ``compute()`` returns:

    - ``"mean_angle"``: the mean over every valid pixel (``aggregation="pooled"``, default) or a running
      mean of per-batch means (``"per_batch"``, SIMO's; :func:`~simo_merge.metrics._common.batch_terms`);
    - ``"median_angle"``: from a histogram of ``180 * bins_per_degree`` bins over [0°, 180°] (18000 bins,
      0.01° wide, by default). The bin where the cumulative count first reaches N/2 holds the lower median
      (the element ``torch.median`` returns); the value is interpolated linearly inside that bin assuming
      its counts are spread uniformly, so it is within one bin width (0.01° by default) of the exact
      median;
    - ``"within_11.25"``, ``"within_22.5"``, ``"within_30"``: percentage (0-100) of pixels whose angle is
      strictly below the threshold, from exact counters (not the histogram).

    The median and the within-threshold shares are always over every valid pixel. All states are
    fixed-size and summed across updates and processes. Values are NaN when nothing has been counted.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    hist: Tensor
    mean_sum: Tensor
    mean_weight: Tensor
    count: Tensor
    within: Tensor

    def __init__(
        self,
        bins_per_degree: int = 100,
        aggregation: str = "pooled",
        valid_pixels: str = "masked",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.aggregation = check_choice(aggregation, "aggregation", type(self).__name__)
        self.valid_pixels = check_choice(valid_pixels, "valid_pixels", type(self).__name__)
        if int(bins_per_degree) < 1:
            raise ValueError(f"NormalMetric: bins_per_degree must be >= 1, got {bins_per_degree}")
        self.bins_per_degree = int(bins_per_degree)
        self.num_bins = 180 * self.bins_per_degree
        self.add_state("hist", default=torch.zeros(self.num_bins, dtype=torch.long), dist_reduce_fx="sum")
        for state in ("mean_sum", "mean_weight"):
            self.add_state(state, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "within", default=torch.zeros(len(NORMAL_THRESHOLDS), dtype=torch.long), dist_reduce_fx="sum"
        )

    @staticmethod
    def angles(preds: Tensor, target: Tensor, normalise: bool = True) -> Tensor:
        """Per-pixel angle in degrees (float64) between ``[B,3,H,W]`` maps, cosine clamped to [-1, 1];
        the vectors are L2-normalised first unless ``normalise`` is False."""
        p, t = preds.double(), target.double()
        if normalise:
            p, t = F.normalize(p, dim=1, eps=1e-12), F.normalize(t, dim=1, eps=1e-12)
        cos = (p * t).sum(dim=1).clamp(-1.0, 1.0)
        return torch.rad2deg(torch.acos(cos))

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``preds`` and ``target`` ``[B,3,H,W]``, ``mask`` bool ``[B,H,W]``."""
        name = type(self).__name__
        if target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f"{name}: target must be [B,3,H,W], got shape {tuple(target.shape)}")
        check_same_shape(preds, target, name)
        simo = self.valid_pixels == "simo"
        if simo:
            valid = target.sum(dim=1) != 0
        else:
            valid = torch.isfinite(target).all(dim=1) & (target.abs().sum(dim=1) > 0)
            m = as_bool_mask(mask, (target.shape[0], target.shape[2], target.shape[3]), name)
            if m is not None:
                valid &= m
        ang = self.angles(preds, target, normalise=not simo)[valid]
        idx = (ang * self.bins_per_degree).floor().long().clamp_(0, self.num_bins - 1)
        self.hist += torch.bincount(idx, minlength=self.num_bins)
        count = torch.tensor(ang.numel(), device=ang.device)
        mean_sum, mean_weight = batch_terms(ang.sum(), count, target.shape[0], self.aggregation)
        self.mean_sum += mean_sum
        self.mean_weight += mean_weight
        self.count += count
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
            "mean_angle": self.mean_sum / self.mean_weight,
            "median_angle": torch.tensor(median, dtype=torch.float64, device=dev),
        }
        pct = self.within.double() * 100.0 / n
        for i, t in enumerate(NORMAL_THRESHOLDS):
            out[f"within_{t:g}"] = pct[i]
        return {k_: out[k_] for k_ in keys}
