"""Representation bias (Surgery, Eq. 1) per layer, before and after realignment, and t-SNE plots.

Bias of task t at a site = mean |merged features − expert features| over the task's inputs, computed
for every block output and the final features. "Before" is the plain merged encoder; "after" is the
realigned model's features for that task (adapters applied as at inference).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from simo_merge.encoders import Encoder
from simo_merge.features.inputs import RealignInputs
from simo_merge.features.sites import Site, run_encoder
from simo_merge.plotting import pyplot, save_png
from simo_merge.realign.model import RealignedModel
from simo_merge.runtime import autocast, placed


@torch.no_grad()
def representation_bias(
    merged: Encoder | RealignedModel,
    experts: dict[str, Encoder],
    images: dict[str, Tensor] | RealignInputs,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """``{task: {"block0": ..., ..., "final": ...}}`` mean L1 between merged (or realigned) and expert.
    ``images`` are tensors or :class:`RealignInputs`, read ``batch_size`` inputs at a time. On the current
    runtime's device and precision (the models are moved there and back)."""
    inputs = images if isinstance(images, RealignInputs) else RealignInputs(images=images)
    with placed(merged, *experts.values()) as device, autocast():
        return _bias(merged, experts, inputs, batch_size, device)


def _bias(
    merged: Encoder | RealignedModel,
    experts: dict[str, Encoder],
    inputs: RealignInputs,
    batch_size: int,
    device: torch.device,
) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for task, expert in experts.items():
        depth = expert.depth
        sites: list[Site] = [*range(depth), "final"]
        sums = {s: 0.0 for s in sites}
        count = 0
        source = inputs.sources[task]
        for start in range(0, len(source), batch_size):
            x = source.images(torch.arange(start, min(start + batch_size, len(source)))).to(device)
            ref = run_encoder(expert, x, sites)
            if isinstance(merged, RealignedModel):
                owner = merged.plan.owner(task)
                if merged.plan.feed_forward and owner is not None:
                    with merged.attached(owner):
                        got = run_encoder(merged.encoder, x, sites)
                else:
                    got = merged.apply_post_hoc(owner, run_encoder(merged.encoder, x, sites))
            else:
                got = run_encoder(merged, x, sites)
            for s in sites:
                sums[s] += (got[s] - ref[s]).abs().mean().item() * x.shape[0]
            count += x.shape[0]
        result[task] = {("final" if s == "final" else f"block{s}"): sums[s] / count for s in sites}
    return result


def tsne_plot(
    groups: dict[str, dict[str, Tensor]], path: str | os.PathLike, title: str = "", seed: int = 0
) -> Path:
    """One panel per key of ``groups`` (e.g. "semseg before"); each holds named ``[N, F]`` feature sets
    (e.g. {"merged": ..., "expert": ...}) embedded jointly with scikit-learn's t-SNE."""
    from sklearn.manifold import TSNE

    plt = pyplot()

    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), squeeze=False)
    for ax, (panel, sets) in zip(axes[0], groups.items(), strict=True):
        names = list(sets)
        data = torch.cat([sets[n].reshape(sets[n].shape[0], -1) for n in names]).float().numpy()
        perplexity = max(2.0, min(30.0, (data.shape[0] - 1) / 3))
        emb = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(data)
        start = 0
        for name in names:
            n = sets[name].shape[0]
            ax.scatter(emb[start : start + n, 0], emb[start : start + n, 1], s=6, label=name, alpha=0.7)
            start += n
        ax.set_title(panel, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def mean_bias(bias: dict[str, dict[str, float]]) -> float:
    values = [v for per_task in bias.values() for v in per_task.values()]
    return sum(values) / len(values)


def bias_plot(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], path: Path, title: str
):
    """Per task, representation bias per layer before (dashed) and after (solid) realignment."""
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    for i, task in enumerate(before):
        sites = list(before[task])
        color = f"C{i}"
        ax.plot(sites, [before[task][s] for s in sites], ls="--", color=color, label=f"{task} merged")
        ax.plot(sites, [after[task][s] for s in sites], ls="-", color=color, label=f"{task} realigned")
    ax.set_ylabel("mean |merged − expert|")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path, dpi=100)


@torch.no_grad()
def tsne_groups(
    merged: Encoder,
    realigned: RealignedModel,
    experts: dict[str, Encoder],
    images: Tensor | dict[str, Tensor] | RealignInputs,
    limit: int = 200,
) -> dict[str, dict[str, Tensor]]:
    """Token-averaged last-block features of merged (before/after) vs each expert, for t-SNE panels
    (``images``: one tensor for every task, each task's own, or :class:`RealignInputs`: the first
    ``limit`` inputs are read). On the current runtime's device and precision; features come back on the
    CPU in fp32."""
    with placed(merged, realigned, *experts.values()) as device, autocast():
        groups = _tsne_groups(merged, realigned, experts, images, limit, device)
    return {name: {k: v.float().cpu() for k, v in group.items()} for name, group in groups.items()}


def _tsne_groups(
    merged: Encoder,
    realigned: RealignedModel,
    experts: dict[str, Encoder],
    images: Tensor | dict[str, Tensor] | RealignInputs,
    limit: int,
    device: torch.device,
) -> dict[str, dict[str, Tensor]]:
    last = merged.depth - 1
    groups = {}
    for task, expert in experts.items():
        if isinstance(images, RealignInputs):
            source = images.sources[task]
            x = source.images(torch.arange(min(limit, len(source))))
        else:
            x = (images[task] if isinstance(images, dict) else images)[:limit]
        x = x.to(device)
        before = run_encoder(merged, x, [last])[last].mean(1)
        ref = run_encoder(expert, x, [last])[last].mean(1)
        owner = realigned.plan.owner(task)
        if realigned.plan.feed_forward and owner is not None:
            with realigned.attached(owner):
                after = run_encoder(realigned.encoder, x, [last])[last]
        else:
            after = realigned.apply_post_hoc(owner, run_encoder(realigned.encoder, x, [last]))[last]
        groups[f"{task}: before"] = {"merged": before, "expert": ref}
        groups[f"{task}: after"] = {"realigned": after.mean(1), "expert": ref}
    return groups
