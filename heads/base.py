"""What every task head shares: the encoder layout it reads, tap selection and the output activation.

A head maps the encoder's taps ``{block: [B, N, D] tokens}`` to a dense prediction ``[B, C, H, W]`` at
the input resolution. Heads are rebuilt from a plain config dict (:meth:`TaskHead.config`), so a saved
expert is its encoder state, its head state and that dict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simo_merge.tasks import TASK_KINDS, TaskSpec

#: Task kinds a head with a dense ``[B, C, H, W]`` output can serve (classification wants ``[B, C]``).
DENSE_KINDS: tuple[str, ...] = tuple(k for k in TASK_KINDS if k != "classification")


@dataclass(frozen=True)
class EncoderLayout:
    """The facts about an encoder a head needs (kept separate so heads never hold the encoder)."""

    width: int
    num_prefix_tokens: int
    grid_size: tuple[int, int]
    patch_size: int
    image_size: tuple[int, int]
    feature_dim: int | None = None  # width of the final (pooled, projected) features: site "final"

    @classmethod
    def of(cls, encoder: Any, image_size: tuple[int, int]) -> EncoderLayout:
        h, w = encoder.grid_size
        feature_dim = getattr(encoder, "feature_dim", None)
        return cls(
            encoder.width,
            encoder.num_prefix_tokens,
            (h, w),
            image_size[0] // h,
            tuple(image_size),
            None if feature_dim is None else int(feature_dim),
        )


def unit_channels(x: Tensor, eps: float = 1e-6) -> Tensor:
    """``x / ‖x‖`` over dim 1. Same as ``F.normalize(x, dim=1)`` but with a sum of squares, which is ~10x
    faster on CPU for the 3-channel normal maps (vector_norm over a short dim is slow there)."""
    return x * torch.rsqrt((x * x).sum(1, keepdim=True).clamp_min(eps * eps))


def activate(spec: TaskSpec, raw: Tensor) -> Tensor:
    """Per-task output activation: logits for segmentation, positive depth/disparity, unit normals."""
    if spec.kind == "segmentation":
        return raw
    if spec.kind == "normals":
        return unit_channels(raw)
    if spec.name in ("depth", "disparity"):
        return F.softplus(raw) + 1e-4
    return raw


class TaskHead(nn.Module):
    """Base class: splits taps into patch maps + CLS tokens, calls :meth:`decode`, resizes, activates.

    ``task_kinds`` lists the task kinds a head can serve; construction refuses any other (a dense head
    built for a classification task would otherwise fail only later, in the loss).
    """

    kind = ""
    task_kinds: tuple[str, ...] = DENSE_KINDS

    def __init__(self, task: TaskSpec, layout: EncoderLayout, taps: list[int], **options: Any) -> None:
        super().__init__()
        if task.kind not in self.task_kinds:
            raise ValueError(
                f"a {self.kind or type(self).__name__!r} head serves task kinds {list(self.task_kinds)}; "
                f"task {task.name!r} is {task.kind!r}"
                + (
                    " (its output is a dense [B, C, H, W] map; use a classification head, e.g. 'zeroshot')"
                    if task.kind == "classification"
                    else ""
                )
            )
        if not taps:
            raise ValueError(f"head for task {task.name!r}: needs at least one tap")
        self.task = task
        self.layout = layout
        self.taps = list(taps)
        self.options = dict(options)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this head (see :func:`simo_merge.heads.head_from_config`)."""
        return {
            "kind": self.kind,
            "task": asdict(self.task),
            "layout": {
                **asdict(self.layout),
                "grid_size": list(self.layout.grid_size),
                "image_size": list(self.layout.image_size),
            },
            "taps": self.taps,
            "options": self.options,
        }

    def split(
        self, taps: dict[int, Tensor], grid: tuple[int, int] | None = None
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Turn each read tap ``[B, N, D]`` into a ``[B, D, h, w]`` map and its prefix tokens (or None);
        ``grid`` is the token grid (default: the layout's)."""
        missing = [i for i in self.taps if i not in taps]
        if missing:
            raise KeyError(f"head {self.task.name!r} reads taps {self.taps}; missing {missing}")
        h, w = grid or self.layout.grid_size
        p = self.layout.num_prefix_tokens
        maps, prefixes = [], []
        for i in self.taps:
            tokens = taps[i]
            b, n, d = tokens.shape
            if n != p + h * w:
                raise ValueError(f"head {self.task.name!r}: tap {i} has {n} tokens, expected {p}+{h}x{w}")
            maps.append(tokens[:, p:].transpose(1, 2).reshape(b, d, h, w))
            prefixes.append(tokens[:, :p] if p else None)
        return maps, prefixes

    def decode(self, maps: list[Tensor], prefixes: list[Tensor | None]) -> Tensor:
        raise NotImplementedError

    def forward(self, taps: dict[int, Tensor], size: tuple[int, int] | None = None) -> Tensor:
        """The task output at the layout's image size, or at ``size`` for an input of that size (which
        the encoder centre-padded to its patch grid): the whole output, padding included, is resized to
        ``size`` bilinearly, as the SIMO decode heads resize their output to the target's size
        (``models/dinov2/tasks/depth/decode_heads.py`` lines 193-199)."""
        size = tuple(self.layout.image_size) if size is None else tuple(size)
        grid = None
        if size != tuple(self.layout.image_size):
            p = self.layout.patch_size
            grid = (math.ceil(size[0] / p), math.ceil(size[1] / p))
        raw = self.decode(*self.split(taps, grid))
        if tuple(raw.shape[-2:]) != size:
            raw = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
        return activate(self.task, raw)


def head_output(head: nn.Module, feats: dict, size: tuple[int, int]) -> Tensor:
    """``head`` on the encoder's ``feats`` of images of ``size`` (H, W): a dense head decodes the token
    grid of that size (the SIMO protocol's native-size evaluation: the encoder centre-padded the images to
    its patch grid) and resizes its output to ``size``; at the head's own size, and for classifiers, it
    is a plain call."""
    layout = getattr(head, "layout", None)
    if layout is None or head.task.kind == "classification" or tuple(size) == tuple(layout.image_size):
        return head(feats)
    return head(feats, size=tuple(size))
