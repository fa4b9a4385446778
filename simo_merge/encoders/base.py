"""The Encoder seam: one interface over timm ViTs and open_clip visual towers.

Everything later (merging, realignment adapters, Fisher/RegMean statistics, feature caches, t-SNE) goes
through this class and never reaches into timm/open_clip internals.

Hooks: each transformer block gets exactly one torch forward hook, installed at construction, that
dispatches to the Encoder's own ordered hook lists (:mod:`simo_merge.encoders.hooks` keeps them). A hook
``fn(block_index, tokens) -> tokens | None`` sees the block output as ``[B, N, D]`` (batch first, prefix
tokens first, whatever layout the library uses internally); returning a tensor replaces the block output
(that is how adapters are inserted and fed forward to the next block), returning None only observes it.
``"adapt"`` hooks run before ``"record"`` hooks, so recorders see adapted features. Final-feature hooks
work the same on the encoder's final features ``[B, F]``. Every ``add_*`` returns a handle with
``remove()``; handles are also context managers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from simo_merge.encoders.hooks import BlockHook, FeatureHook, HookHandle, HookLists
from simo_merge.encoders.input_range import check_input_range, normalise_input


@dataclass
class EncoderOutput:
    """What one forward pass returns: the final features and the requested block outputs."""

    features: Tensor  # [B, F] pooled (and projected, for CLIP) final features
    taps: dict[int, Tensor] = field(default_factory=dict)  # block index -> [B, N, D] tokens


class Encoder(nn.Module):
    """A ViT image encoder with ordered blocks, taps and block/feature hooks.

    Subclasses wrap one library's model and implement ``_forward_impl`` (run the model, return final
    features) plus the layout facts: ``blocks``, ``width``, ``num_prefix_tokens``, ``grid_size``.

    Input contract: ``[B, 3, H, W]`` floats in [0, 1] (what every dataset yields), normalised here as
    ``normalisation`` says (:func:`~simo_merge.encoders.input_range.normalise_input`: the encoder's own
    mean/std, or SIMO's ``2x - 1``). A batch clearly outside [0, 1] (normalised twice?) triggers
    ``input_check``: ``"warn"`` (default, once per encoder), ``"error"`` or ``"off"``.
    """

    #: prefix of the block parameters in :meth:`model_state` keys, e.g. ``"blocks."``
    block_key_prefix: str = ""
    #: where the weights came from when built from a checkpoint or published weights
    #: (:class:`simo_merge.encoders.pretrained.WeightSource`), else None (random init)
    source: Any = None
    #: what a batch clearly outside [0, 1] does: "warn", "error" or "off" (set per instance)
    input_check: str = "warn"
    #: how [0, 1] images become the model's input: "encoder" (mean/std) or "two_x_minus_one" (SIMO)
    normalisation: str = "encoder"

    def __init__(
        self,
        model: nn.Module,
        blocks: Sequence[nn.Module],
        width: int,
        feature_dim: int,
        num_prefix_tokens: int,
        grid_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        batch_first: bool = True,
        name: str = "",
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.width = int(width)
        self.feature_dim = int(feature_dim)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self._batch_first = batch_first
        self._blocks = list(blocks)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)
        self._hooks = HookLists()
        self._input_warned = False
        for block in self._blocks:
            # a bound method (not a closure) so that copy.deepcopy(encoder) re-binds it to the copy
            block.register_forward_hook(self._dispatch_block)

    # ----------------------------------------------------------------------------------- layout facts
    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks in execution order."""
        return list(self._blocks)

    @property
    def depth(self) -> int:
        return len(self._blocks)

    @property
    def has_cls_token(self) -> bool:
        return self.num_prefix_tokens > 0

    def default_taps(self) -> list[int]:
        """Block indices ending the 1st..4th quarter of the trunk (0-based): 12 blocks -> [2, 5, 8, 11]."""
        d = self.depth
        return sorted({max(0, math.ceil(d * f) - 1) for f in (0.25, 0.5, 0.75, 1.0)})

    def tokens_to_map(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """Split ``[B, N, D]`` tokens into a ``[B, D, h, w]`` patch map and the CLS token (or None)."""
        b, n, d = tokens.shape
        h, w = self.grid_size
        p = self.num_prefix_tokens
        if n - p != h * w:
            raise ValueError(f"{self.name}: {n} tokens do not fit {p} prefix + {h}x{w} patches")
        cls = tokens[:, 0] if p > 0 else None
        patches = tokens[:, p:].transpose(1, 2).reshape(b, d, h, w)
        return patches, cls

    # ------------------------------------------------------------------------------- state for merging
    def model_state(self) -> dict[str, Tensor]:
        """The wrapped library model's state dict (keys as timm/open_clip name them), detached."""
        return {k: v.detach() for k, v in self.model.state_dict().items()}

    def load_model_state(self, state: dict[str, Tensor], strict: bool = True) -> None:
        self.model.load_state_dict(state, strict=strict)

    def block_of_key(self, key: str) -> int | None:
        """The block index a parameter key belongs to, or None for embeddings/norms/projections."""
        match = re.match(re.escape(self.block_key_prefix) + r"(\d+)\.", key)
        return int(match.group(1)) if match else None

    # -------------------------------------------------------------------------------------- hooks
    def add_block_hook(self, block: int | Iterable[int], fn: BlockHook, kind: str = "record") -> HookHandle:
        """Call ``fn(i, tokens)`` on the output of block(s) ``block``; see the module docstring."""
        indices = [block] if isinstance(block, int) else list(block)
        for i in indices:
            if not 0 <= i < self.depth:
                raise IndexError(f"{self.name}: block {i} out of range 0..{self.depth - 1}")
        return self._hooks.add_block(indices, fn, kind)

    def add_feature_hook(self, fn: FeatureHook, kind: str = "record") -> HookHandle:
        """Call ``fn(features)`` on the final features; returning a tensor replaces them."""
        return self._hooks.add_feature(fn, kind)

    def num_hooks(self) -> int:
        return len(self._hooks)

    def _dispatch_block(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
        """The torch forward hook of every block: hand its output, batch first, to that block's hooks."""
        if not self._hooks.block:
            return None
        index = next(i for i, b in enumerate(self._blocks) if b is module)
        tokens = self._hooks.run_block(index, output if self._batch_first else output.transpose(0, 1))
        if tokens is None:
            return None
        return tokens if self._batch_first else tokens.transpose(0, 1)

    # ------------------------------------------------------------------------------------ forward
    def _forward_impl(self, pixels: Tensor) -> Tensor:
        raise NotImplementedError

    def normalize(self, images: Tensor) -> Tensor:
        """[0, 1] ``images`` as the model reads them, per :attr:`normalisation`."""
        return normalise_input(images, self.normalisation, self.pixel_mean, self.pixel_std)

    def check_input_range(self, images: Tensor) -> None:
        """Warn (or raise, per ``input_check``) when ``images`` are clearly not [0, 1] images."""
        self._input_warned = check_input_range(
            images, self.input_check, self.name, self.pixel_mean, warned=self._input_warned
        )

    def forward(self, images: Tensor, taps: Sequence[int] | None = None) -> EncoderOutput:
        """Encode ``[B, 3, H, W]`` images in [0, 1]; return final features and the outputs of ``taps``."""
        self.check_input_range(images)
        recorded: dict[int, Tensor] = {}
        handles = []
        if taps:
            handles.append(self.add_block_hook(list(taps), lambda i, t: recorded.__setitem__(i, t)))
        try:
            features = self._forward_impl(self.normalize(images))
        finally:
            for h in handles:
                h.remove()
        features = self._hooks.run_features(features)
        return EncoderOutput(features=features, taps={i: recorded[i] for i in (taps or [])})
