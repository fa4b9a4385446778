"""Writer of the TALL masks checkpoint layout (nik-dim/tall_masks, the released 20-task checkpoints) for
the tiny open_clip ViT-Tiny-8: ``<arch>/<Dataset>Val/nonlinear_{zeroshot,finetuned}.pt`` as ImageEncoder
state dicts and ``<arch>/head_<Dataset>Val.pt`` as pickled ClassificationHead modules."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import open_clip
import torch

from simo_merge.datasets.clip_templates import canonical_dataset
from simo_merge.encoders.open_clip_vit import register_small_configs
from tests.helpers.clip8_fixture import ARCH, centroid_head

HEAD_MODULE = "src.models.modeling"  # where tall_masks' ClassificationHead lives (pickled under that name)


def _head_class() -> type:
    class ClassificationHead(torch.nn.Linear):
        def __init__(self, weights: torch.Tensor) -> None:
            super().__init__(weights.shape[1], weights.shape[0])
            self.normalize = True
            self.weight = torch.nn.Parameter(weights.clone())
            self.bias = torch.nn.Parameter(torch.zeros(weights.shape[0]))

    ClassificationHead.__module__, ClassificationHead.__qualname__ = HEAD_MODULE, "ClassificationHead"
    return ClassificationHead


def write_tall_masks(
    root: Path,
    data: Path,
    tasks: list[str],
    skip_head: str | None = None,
    arch: str = ARCH,
    image_size: int = 32,
) -> dict[str, dict[str, torch.Tensor]]:
    """The layout under ``root/arch`` for ``tasks`` (experts = θ0 + seeded noise, centroid heads on the
    test images under ``data``; none for ``skip_head``). Returns the visual states written: ``"base"`` and
    one per task."""
    register_small_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(arch, pretrained=None).eval()
    del clip.transformer  # tall_masks' ImageEncoder(keep_lang=False) drops the text transformer
    theta0 = {k: v.clone() for k, v in clip.visual.state_dict().items()}
    written = {"base": theta0}
    head_cls = _head_class()
    names = HEAD_MODULE.split(".")
    modules = {
        ".".join(names[: i + 1]): types.ModuleType(".".join(names[: i + 1])) for i in range(len(names))
    }
    modules[HEAD_MODULE].ClassificationHead = head_cls
    sys.modules.update(modules)
    try:
        gen = torch.Generator().manual_seed(1)
        for t in tasks:
            folder = root / arch / f"{canonical_dataset(t)}Val"
            folder.mkdir(parents=True)
            clip.visual.load_state_dict(theta0)
            torch.save(
                {f"model.{k}": v for k, v in clip.state_dict().items()}, folder / "nonlinear_zeroshot.pt"
            )
            state = {
                k: v + 0.05 * torch.randn(v.shape, generator=gen) * v.std().clamp_min(0.02)
                for k, v in theta0.items()
            }
            clip.visual.load_state_dict(state)
            torch.save(
                {f"model.{k}": v for k, v in clip.state_dict().items()}, folder / "nonlinear_finetuned.pt"
            )
            written[t] = state
            if t != skip_head:
                head = head_cls(centroid_head(state, data, t, arch, image_size))
                torch.save(head, root / arch / f"head_{canonical_dataset(t)}Val.pt")
    finally:
        for name in modules:
            del sys.modules[name]
    return written
