"""Semantic segmentation metric: mean IoU and pixel accuracy from a whole-set confusion matrix."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from simo_merge.metrics._common import as_bool_mask, check_choice
from simo_merge.tasks import IGNORE_INDEX


class SegmentationMetric(Metric):
    """Mean IoU and pixel accuracy over a whole data set.

    The only state is a ``num_classes x num_classes`` confusion matrix (rows = ground truth, columns =
    prediction) summed across updates and processes, so memory does not grow with the data set.

    ``compute()`` returns percentages (0-100), the unit of every rate in this package:

    - ``"miou"``: mean over classes whose union (gt or predicted pixels) is non-empty of
      ``TP / (TP + FP + FN)``; a class absent from both the predictions and the labels is left out;
    - ``"pixel_acc"``: correctly labelled pixels / labelled pixels.

    ``valid_pixels="masked"`` (default): pixels whose target is ``ignore_index`` or whose mask is False
    are not counted, and any other label outside [0, num_classes) is an error. ``"simo"``: every pixel
    whose label is in [0, num_classes) counts, mask unused (SIMO ``training/utils.py`` line 123; so
    Taskonomy's class 0, masked from its loss, is scored). Both values are NaN when no pixel has been
    counted.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, valid_pixels: str = "masked", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.valid_pixels = check_choice(valid_pixels, "valid_pixels", type(self).__name__)
        if int(num_classes) < 1:
            raise ValueError(f"SegmentationMetric: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.add_state(
            "confmat",
            default=torch.zeros(self.num_classes, self.num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            preds: logits/scores ``[B,C,H,W]`` (argmax over C, C must equal ``num_classes``) or integer
                labels ``[B,H,W]``.
            target: integer labels ``[B,H,W]``; ``ignore_index`` marks unlabelled pixels.
            mask: optional bool ``[B,H,W]``, True where the pixel counts.
        """
        name = type(self).__name__
        if target.dim() != 3:
            raise ValueError(f"{name}: target must be [B,H,W], got shape {tuple(target.shape)}")
        if preds.dim() == 4:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"{name}: logits have {preds.shape[1]} channels but num_classes={self.num_classes}"
                )
            labels = preds.argmax(dim=1)
        elif preds.dim() == 3:
            if preds.is_floating_point():
                raise ValueError(f"{name}: [B,H,W] predictions must be integer labels, got {preds.dtype}")
            labels = preds
        else:
            raise ValueError(
                f"{name}: preds must be [B,C,H,W] logits or [B,H,W] labels, got {tuple(preds.shape)}"
            )
        if labels.shape != target.shape:
            raise ValueError(
                f"{name}: prediction shape {tuple(labels.shape)} does not match target {tuple(target.shape)}"
            )
        if self.valid_pixels == "simo":
            valid = (target >= 0) & (target < self.num_classes)
        else:
            valid = target != self.ignore_index
            m = as_bool_mask(mask, tuple(target.shape), name)
            if m is not None:
                valid &= m
        t = target[valid].long()
        p = labels[valid].long()
        if t.numel():
            bad = (t < 0) | (t >= self.num_classes)
            if bad.any():
                raise ValueError(
                    f"{name}: target label {int(t[bad][0])} outside [0, {self.num_classes}) "
                    f"and not ignore_index={self.ignore_index}"
                )
            bad = (p < 0) | (p >= self.num_classes)
            if bad.any():
                raise ValueError(f"{name}: predicted label {int(p[bad][0])} outside [0, {self.num_classes})")
        counts = torch.bincount(t * self.num_classes + p, minlength=self.num_classes**2)
        self.confmat += counts.view(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"miou", "pixel_acc"}`` as 0-dim float64 tensors in % (NaN if nothing counted)."""
        cm = self.confmat.double()
        tp = cm.diagonal()
        total = cm.sum()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=cm.device)
        miou = (tp[present] / union[present]).mean() if present.any() else nan
        pixel_acc = tp.sum() / total if total > 0 else nan
        return {"miou": 100.0 * miou, "pixel_acc": 100.0 * pixel_acc}
