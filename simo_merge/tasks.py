"""The task vocabulary shared by datasets, heads, losses and metrics.

A dataset sample is a dict
``{"image": FloatTensor[3,H,W] in [0,1], task: target, f"{task}_mask": BoolTensor[H,W]}``.
Targets by kind:

- ``segmentation``: LongTensor[H,W] class ids, ``ignore_index`` (255) where unlabelled;
- ``regression``: FloatTensor[C,H,W] (depth/disparity C=1, edges/keypoints C=1, autoencoding C=3);
- ``normals``: FloatTensor[3,H,W] unit vectors in the camera frame (x right, y down, z forward);
- ``classification``: an image-level class id (LongTensor[] per sample, LongTensor[B] batched); no mask.

The mask is True where the target is valid (labelled pixel, depth > 0, non-zero normal).
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = 255
TASK_KINDS: tuple[str, ...] = ("segmentation", "regression", "normals", "classification")


@dataclass(frozen=True)
class TaskSpec:
    """What a task's target looks like and how it is judged."""

    name: str
    kind: str  # one of TASK_KINDS
    channels: int  # output channels a head must produce (number of classes for segmentation/classification)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}")
        if self.channels < 1:
            raise ValueError(f"task {self.name!r}: channels must be >= 1, got {self.channels}")


def segmentation(name: str, num_classes: int) -> TaskSpec:
    return TaskSpec(name, "segmentation", num_classes)


def regression(name: str, channels: int = 1) -> TaskSpec:
    return TaskSpec(name, "regression", channels)


def normals(name: str = "normal") -> TaskSpec:
    return TaskSpec(name, "normals", 3)


def classification(name: str, num_classes: int) -> TaskSpec:
    """An image-level classification task with ``num_classes`` classes (heads output logits [B, C])."""
    return TaskSpec(name, "classification", num_classes)
