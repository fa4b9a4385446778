"""A tiny θ0 pretraining + depth-expert fine-tuning on a CPU runtime, for tests/unit/runtime/test_runtime.py.

Run as a script (``python tests/helpers/ddp_finetune.py OUT DEVICES BATCH NORM PRECISION``) it trains on a
runtime with ``DEVICES`` gloo processes: Fabric's ``ddp`` launcher re-runs this very command once per
extra process, which is why the test launches a script (a pytest process cannot be re-run that way).
Rank 0 alone writes ``OUT/expert.safetensors`` and ``OUT/curve.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

ENCODER = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2}


def train(per_device_batch: int, norm: str = "batchnorm") -> tuple[list[float], list[float], dict]:
    """3 pretraining + 2 probe + 4 fine-tuning steps on 32 shuffled scenes, on the current runtime; returns
    (pretraining curve, fine-tuning curve, expert state). ``norm="none"`` drops the head's BatchNorm."""
    from simo_merge.datasets import build_dataset
    from simo_merge.encoders import build_encoder
    from simo_merge.heads import build_head
    from simo_merge.training.finetune import FinetuneRecipe, finetune
    from simo_merge.training.pretrain import pretrain_masked_reconstruction

    data = build_dataset("synthetic_scenes", split="train", size=(32, 32), num_samples=32)

    def loader() -> DataLoader:
        gen = torch.Generator().manual_seed(7)
        return DataLoader(data, per_device_batch, shuffle=True, drop_last=True, generator=gen)

    torch.manual_seed(0)
    encoder = build_encoder("timm", "vit_tiny_patch16_224", **ENCODER)
    pre = pretrain_masked_reconstruction(encoder, loader(), 3, lr=1e-3, progress=False)
    head = build_head("linear", data.task_specs["depth"], encoder, (32, 32))
    if norm == "none":
        head.norm = nn.Identity()
    recipe = FinetuneRecipe(probe_steps=2, finetune_steps=4, lr_head=3e-3, lr_encoder=5e-4)
    model, curve = finetune(encoder, {"depth": head}, loader(), recipe, "depth", progress=False)
    state = {**model.encoder.model_state(), **{f"head.{k}": v for k, v in head.state_dict().items()}}
    return pre, curve, state


def main(out: str, devices: int, per_device_batch: int, norm: str, precision: str) -> None:
    from simo_merge.io.atomic import write_json
    from simo_merge.io.checkpoint import save_state
    from simo_merge.runtime import RuntimeConfig, started

    cfg = RuntimeConfig(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=precision,
        num_workers=0,
    )
    torch.set_num_threads(1)
    with started(cfg) as runtime:
        pre, curve, state = train(per_device_batch, norm)
        save_state(Path(out) / "expert.safetensors", state)
        write_json(
            Path(out) / "curve.json", {"world": runtime.world_size, "pretrain": pre, "finetune": curve}
        )
        runtime.barrier()


if __name__ == "__main__":
    out, devices, batch, norm, precision = sys.argv[1:6]
    main(out, int(devices), int(batch), norm, precision)
