"""The realigned model: merged encoder + frozen heads + a plan's adapters (or re-trained heads).

It is both the training-time feature source (:meth:`RealignedModel.features`) and the inference wrapper
(:meth:`RealignedModel.forward`, same interface as :class:`~simo_merge.model.MultiTaskModel`).
Adapters are attached only through the encoder's hooks and removed right after each pass.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.features.sites import Features, Site, head_sites, run_encoder, site_name
from simo_merge.heads.base import head_output
from simo_merge.realign.adapter import Adapter
from simo_merge.realign.plan import SHARED, Plan


def trainable_copy(head: nn.Module) -> nn.Module:
    """A deep copy of ``head`` whose weights all train: weight buffers a head declares in
    ``trainable_buffers`` (e.g. the zero-shot head's fixed text embeddings) become parameters of the copy,
    under the same names, so its state dict keeps the head's keys."""
    head = copy.deepcopy(head)
    for module in head.modules():
        for name in getattr(module, "trainable_buffers", ()):
            value = module._buffers.get(name)
            if value is not None:
                del module._buffers[name]
                module.register_parameter(name, nn.Parameter(value.detach().clone()))
    return head.requires_grad_(True)


class RealignedModel(nn.Module):
    """``train_heads``: train copies of the heads next to the adapters (the SIMO recipe); plans with
    ``trains_heads`` (the heads realigner) always do."""

    def __init__(
        self,
        encoder: Encoder,
        heads: dict[str, nn.Module],
        plan: Plan,
        rank: int = 16,
        train_heads: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.plan = plan
        self.rank = rank
        self.train_heads = plan.trains_heads or train_heads
        if self.train_heads:
            self.heads = nn.ModuleDict({t: trainable_copy(h) for t, h in heads.items()})
        else:
            self.heads = nn.ModuleDict({t: h.requires_grad_(False) for t, h in heads.items()})
        self.adapters = nn.ModuleDict()
        for owner, sites in plan.adapters.items():
            self.adapters[owner] = nn.ModuleDict(
                {
                    site_name(s): Adapter(encoder.feature_dim if s == "final" else encoder.width, rank)
                    for s in sites
                }
            )

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def trainable_parameters(self) -> list[nn.Parameter]:
        heads = list(self.heads.parameters()) if self.train_heads else []
        return list(self.adapters.parameters()) + heads

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def sites_needed(self, task: str) -> list[Site]:
        """Everything the loss or the head of ``task`` reads."""
        return sorted(set(self.plan.loss_sites.get(task, [])) | set(head_sites(self.heads[task])), key=str)

    # ------------------------------------------------------------------------------ adapters on
    @contextlib.contextmanager
    def attached(self, owner: str) -> Iterator[None]:
        """Attach ``owner``'s adapters to the encoder's blocks/final features as "adapt" hooks."""
        handles = []
        for name, adapter in self.adapters[owner].items():
            if name == "final":
                handles.append(self.encoder.add_feature_hook(lambda f, a=adapter: a(f), kind="adapt"))
            else:
                handles.append(
                    self.encoder.add_block_hook(int(name[5:]), lambda i, t, a=adapter: a(t), kind="adapt")
                )
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def apply_post_hoc(self, owner: str | None, raw: Features) -> Features:
        """Apply ``owner``'s adapters to recorded (frozen) features; other sites pass through."""
        if owner is None:
            return raw
        feats = dict(raw)
        for site in list(raw):
            name = site_name(site)
            if name in self.adapters[owner]:
                feats[site] = self.adapters[owner][name](raw[site])
        return feats

    def features(self, task: str, images: Tensor | None = None, merged: Features | None = None) -> Features:
        """Adapted merged features for ``task``: from images, or from cached merged features (post-hoc)."""
        owner = self.plan.owner(task)
        sites = self.sites_needed(task)
        if owner == SHARED:  # the same features serve every task: record what any of them reads
            sites = sorted({s for t in self.tasks for s in self.sites_needed(t)}, key=str)
        if self.plan.feed_forward and owner is not None:
            if images is None:
                raise ValueError(
                    f"realigner adapters are fed forward: task {task!r} needs images, not cached features"
                )
            with self.attached(owner):
                return run_encoder(self.encoder, images, sites)
        raw = merged if merged is not None else run_encoder(self.encoder, images, sites)
        return self.apply_post_hoc(owner, raw)

    # -------------------------------------------------------------------------------- inference
    def forward(self, images: Tensor, tasks: list[str] | None = None) -> dict[str, Tensor]:
        tasks = tasks or self.tasks
        size = tuple(images.shape[-2:])  # heads decode the grid of this size (native-size evaluation)
        if self.plan.feed_forward and self.plan.shared:
            with self.attached("shared"):
                feats = run_encoder(
                    self.encoder, images, sorted({s for t in tasks for s in self.sites_needed(t)}, key=str)
                )
            return {t: head_output(self.heads[t], feats, size) for t in tasks}
        if self.plan.feed_forward:  # per-task adapters inside the trunk: one pass per task
            return {t: head_output(self.heads[t], self.features(t, images), size) for t in tasks}
        raw = run_encoder(
            self.encoder, images, sorted({s for t in tasks for s in self.sites_needed(t)}, key=str)
        )
        return {
            t: head_output(self.heads[t], self.apply_post_hoc(self.plan.owner(t), raw), size) for t in tasks
        }
