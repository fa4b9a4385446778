"""Prints images/s of SIMO evaluation (one encoder pass, every head) and of a training step, on the runtime
you pick (Lightning Fabric: accelerator, devices, precision), for the demo's tiny ViT or ViT-B/16 at 224.

Also prints the ratio of one-pass SIMO evaluation to T separate expert passes (one encoder pass per task,
as evaluating T experts costs); with the encoder dominating, it approaches T.

    python benchmarks/throughput.py                                   # demo model, CPU, fp32
    python benchmarks/throughput.py --precision bf16-mixed
    python benchmarks/throughput.py --devices 2 --strategy ddp       # 2 CPU processes (gloo)
    python benchmarks/throughput.py --model vit_b16 --accelerator cuda --batch 128 --precision bf16-mixed

Random weights and random images: throughput does not depend on them. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

import torch
from lightning_fabric import Fabric
from lightning_fabric.strategies import DDPStrategy

from simo_merge.encoders import build_encoder
from simo_merge.heads import build_head
from simo_merge.model import MultiTaskModel
from simo_merge.tasks import TaskSpec

MODELS = {
    # name: (timm arch, kwargs, image size)
    "demo": (
        "vit_tiny_patch16_224",
        {"img_size": 64, "patch_size": 8, "depth": 6, "embed_dim": 96, "num_heads": 3},
        64,
    ),
    "vit_b16": ("vit_base_patch16_224", {}, 224),
}
TASKS = {
    "semseg": TaskSpec("semseg", "segmentation", 13),  # NYUv2-13
    "depth": TaskSpec("depth", "regression", 1),
    "normal": TaskSpec("normal", "normals", 3),
}


def build_model(name: str) -> tuple[MultiTaskModel, int]:
    arch, kwargs, size = MODELS[name]
    torch.manual_seed(0)
    encoder = build_encoder("timm", arch, **kwargs)
    heads = {t: build_head("linear", spec, encoder, (size, size)) for t, spec in TASKS.items()}
    return MultiTaskModel(encoder, heads), size


def timed(fabric: Fabric, fn, iters: int, warmup: int) -> float:
    """Seconds per call of ``fn`` (after ``warmup`` calls), the slowest rank's."""
    for _ in range(warmup):
        fn()
    if fabric.device.type == "cuda":
        torch.cuda.synchronize()
    fabric.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if fabric.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = torch.tensor((time.perf_counter() - start) / iters)
    return float(fabric.all_reduce(elapsed, reduce_op="max")) if fabric.world_size > 1 else float(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="demo")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--batch", type=int, default=32, help="per-device batch")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    # the dense heads read block taps, so the encoder's final norm gets no gradient: DDP must be told
    strategy = DDPStrategy(find_unused_parameters=True) if args.strategy == "ddp" else args.strategy
    fabric = Fabric(
        accelerator=args.accelerator, devices=args.devices, strategy=strategy, precision=args.precision
    )
    fabric.launch()
    model, size = build_model(args.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer = fabric.setup(model, optimizer)
    images = torch.rand(args.batch, 3, size, size, device=fabric.device)
    tasks = list(TASKS)

    model.eval()

    @torch.no_grad()
    def simo_pass() -> None:
        model(images)

    @torch.no_grad()
    def separate_passes() -> None:
        for t in tasks:
            model(images, tasks=[t])

    one_pass = timed(fabric, simo_pass, args.iters, args.warmup)
    separate = timed(fabric, separate_passes, args.iters, args.warmup)

    model.train()

    def train_step() -> None:
        outputs = model(images)
        loss = sum(o.float().square().mean() for o in outputs.values())
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()

    step = timed(fabric, train_step, args.iters, args.warmup)
    if fabric.is_global_zero:
        n = args.batch * fabric.world_size  # images per call, all ranks together
        print(
            f"{args.model} {size}x{size} | {fabric.device.type} x{fabric.world_size} {args.strategy} "
            f"{args.precision} | per-device batch {args.batch}, global {n}"
        )
        print(f"  evaluate, one SIMO pass ({len(tasks)} heads): {n / one_pass:9.1f} images/s")
        print(f"  evaluate, {len(tasks)} separate expert passes:      {n / separate:9.1f} images/s")
        print(f"  one-pass / separate speed-up: {separate / one_pass:.2f}x (ideal {len(tasks)})")
        print(f"  training step (fwd+bwd+AdamW, all heads):  {n / step:9.1f} images/s")


if __name__ == "__main__":
    main()
