"""Time realignment with the feature cache against the reference-style uncached loop.

For each realigner the SAME recipe (steps, seed, batches) is run twice on a small, deterministic pool:

- cached: ``use_cache=True`` with a fresh :class:`FeatureCache`, so the one-off computation of the
  experts' (and, for post-hoc plans, the merged encoder's) features is part of the wall time; that part
  is also reported on its own;
- uncached: ``use_cache=False``, which recomputes those features at every step like the reference code.

The pool needs no training: θ0 is a seeded random-init ViT, each "expert" is θ0 plus seeded Gaussian
noise scaled by each tensor's std, each head is a seeded linear head. The two loss curves must agree up
to float rounding (the script reports the largest difference; ``tests/test_realign_speed_script.py``
checks it). Targets from the issue (≥ 20× for surgery, ≥ 2× for deep) are printed, never asserted.

Run as a script it sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it: on a small
shared machine (2 cores, other jobs running) spinning OpenMP workers made a 2-thread forward pass 7-30×
slower than a 1-thread one, which would measure the contention, not the cache. The policy in force is
printed (it only takes effect if set before torch is first imported).

    python benchmarks/realign_speed.py --realigners surgery deep --steps 100 --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__" and "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the module docstring

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from simo_merge.atomic import write_json  # noqa: E402
from simo_merge.encoders import Encoder, build_encoder  # noqa: E402
from simo_merge.experts import ExpertPool, is_mergeable  # noqa: E402
from simo_merge.heads import build_head  # noqa: E402
from simo_merge.merging import merge  # noqa: E402
from simo_merge.realign.cache import FeatureCache, Features  # noqa: E402
from simo_merge.realign.train import RealignConfig, RealignInputs, realign  # noqa: E402
from simo_merge.tasks import TaskSpec, normals, regression, segmentation  # noqa: E402

DEFAULT_REALIGNERS = ("surgery", "deep", "taps", "shared-deep", "heads")
#: speed-up targets from the issue (printed beside the measured ratios, not asserted)
TARGETS = {"surgery": 20.0, "deep": 2.0}
TASK_SPECS: tuple[TaskSpec, ...] = (segmentation("semseg", 6), regression("depth"), normals())


class TimedCache(FeatureCache):
    """A :class:`FeatureCache` that adds up the seconds spent computing missing entries."""

    def __init__(self) -> None:
        super().__init__()
        self.build_seconds = 0.0

    def get(self, key: str, compute: Callable[[], Features]) -> Features:
        def timed() -> Features:
            start = time.perf_counter()
            try:
                return compute()
            finally:
                self.build_seconds += time.perf_counter() - start

        return super().get(key, timed)


@dataclass
class Setup:
    """Everything one realignment run needs; heads are rebuilt per run so runs never share state."""

    make_encoder: Callable[[], Encoder]
    merged_state: dict[str, Tensor]
    expert_states: dict[str, dict[str, Tensor]]
    make_heads: Callable[[], dict[str, nn.Module]]
    inputs: RealignInputs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--realigners", nargs="+", default=list(DEFAULT_REALIGNERS), help="realigners to time")
    p.add_argument("--steps", type=int, default=100, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-inputs", type=int, default=160, help="realignment images (shared by all tasks)")
    p.add_argument("--depth", type=int, default=6, help="ViT blocks")
    p.add_argument("--width", type=int, default=96, help="ViT embedding width")
    p.add_argument("--heads", type=int, default=None, help="attention heads (default: width // 32)")
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--noise", type=float, default=0.02, help="expert = θ0 + noise · std(θ0[key]) · N(0, 1)")
    p.add_argument("--lam", type=float, default=0.4, help="task-arithmetic scale of the merged encoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here (atomic)")
    args = p.parse_args(argv)
    from simo_merge.realign import REALIGNERS

    unknown = [r for r in args.realigners if r not in REALIGNERS]
    if unknown:
        p.error(f"unknown realigner(s) {unknown}; known: {sorted(REALIGNERS)}")
    for name in ("steps", "batch_size", "num_inputs", "depth", "width", "patch_size", "image_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.image_size % args.patch_size:
        p.error(f"--image-size {args.image_size} is not a multiple of --patch-size {args.patch_size}")
    if args.heads is None:
        args.heads = max(1, args.width // 32)
    if args.width % args.heads:
        p.error(f"--width {args.width} is not divisible by --heads {args.heads}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def build_setup(args: argparse.Namespace) -> Setup:
    """The deterministic pool: θ0, three noisy experts, their task-arithmetic merge, heads and inputs."""
    from simo_merge.datasets import build_dataset

    size = args.image_size
    kwargs = dict(
        img_size=size,
        patch_size=args.patch_size,
        depth=args.depth,
        embed_dim=args.width,
        num_heads=args.heads,
    )

    def make_encoder() -> Encoder:
        return build_encoder("timm", "vit_tiny_patch16_224", **kwargs)

    torch.manual_seed(args.seed)
    template = make_encoder().eval()
    base = template.model_state()
    experts: dict[str, dict[str, Tensor]] = {}
    for offset, spec in enumerate(TASK_SPECS, start=1):
        gen = torch.Generator().manual_seed(args.seed * 1000 + offset)
        state = {}
        for key, value in base.items():
            if not is_mergeable(value):
                state[key] = value.clone()
                continue
            spread = max(value.float().std().item() if value.numel() > 1 else 1.0, 1e-3)
            noise = torch.randn(value.shape, generator=gen)
            state[key] = (value.float() + args.noise * spread * noise).to(value.dtype)
        experts[spec.name] = state
    merged = merge(ExpertPool(base, experts), "task_arithmetic", lam=args.lam)

    def make_heads() -> dict[str, nn.Module]:
        heads = {}
        for offset, spec in enumerate(TASK_SPECS, start=1):
            torch.manual_seed(args.seed * 1000 + 100 + offset)
            heads[spec.name] = build_head("linear", spec, template, (size, size)).eval()
        return heads

    ds = build_dataset(
        "synthetic_scenes", split="test", num_samples=args.num_inputs, size=(size, size), tasks=["semseg"]
    )
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    inputs = RealignInputs(images={spec.name: images for spec in TASK_SPECS}, name="synthetic_scenes/test")
    return Setup(make_encoder, merged, experts, make_heads, inputs)


def time_run(setup: Setup, realigner: str, args: argparse.Namespace, use_cache: bool) -> dict[str, Any]:
    """One realignment; wall time covers everything from building the run to the last step."""
    cfg = RealignConfig(
        realigner=realigner,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        use_cache=use_cache,
        progress=False,
    )
    cache = TimedCache()
    heads = setup.make_heads()
    start = time.perf_counter()
    _, curve = realign(
        setup.make_encoder, setup.merged_state, setup.expert_states, heads, setup.inputs, cfg, cache
    )
    wall = time.perf_counter() - start
    if not use_cache and cache.misses:
        raise RuntimeError(f"{realigner}: use_cache=False still filled the feature cache ({cache.misses})")
    return {
        "wall_s": wall,
        "cache_build_s": cache.build_seconds,
        "cache_entries": cache.misses,
        "curve": curve,
    }


def warm_up(setup: Setup, args: argparse.Namespace) -> None:
    """One untimed forward/backward so that lazy initialisation does not land in the first timing."""
    encoder = setup.make_encoder()
    encoder.load_model_state(setup.merged_state)
    x = setup.inputs.images[TASK_SPECS[0].name][: args.batch_size]
    out = encoder(x, taps=[encoder.depth - 1])
    (out.taps[encoder.depth - 1].mean() + out.features.mean()).backward()


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'realigner':<12} {'steps':>5} {'cached s':>9} {'(cache s)':>9} {'uncached s':>10} "
        f"{'speed-up':>8} {'target':>7} {'loss cached':>12} {'loss uncached':>13} {'max|Δloss|':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        target = r["target"]
        mark = "-" if target is None else f"≥{target:g}x" + (" ok" if r["speedup"] >= target else " !!")
        lines.append(
            f"{r['realigner']:<12} {r['steps']:>5} {r['cached_s']:>9.2f} {r['cache_build_s']:>9.2f} "
            f"{r['uncached_s']:>10.2f} {r['speedup']:>7.1f}x {mark:>7} {r['final_loss_cached']:>12.6f} "
            f"{r['final_loss_uncached']:>13.6f} {r['max_abs_loss_diff']:>10.2e}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, optionally write JSON; returns the JSON-able result."""
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"pool: timm ViT depth {args.depth} width {args.width} heads {args.heads}, "
        f"{args.image_size}x{args.image_size} images / patch {args.patch_size}, {args.num_inputs} inputs, "
        f"{len(TASK_SPECS)} tasks; steps {args.steps}, batch {args.batch_size}, seed {args.seed}, "
        f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    setup = build_setup(args)
    warm_up(setup, args)
    rows = []
    for realigner in args.realigners:
        runs = {}
        for use_cache in (True, False):
            label = "cached" if use_cache else "uncached"
            run = time_run(setup, realigner, args, use_cache)
            runs[label] = run
            extra = f" (cache build {run['cache_build_s']:.2f} s)" if use_cache else ""
            print(
                f"  {realigner:<12} {label:<8} {run['wall_s']:8.2f} s{extra}, "
                f"final loss {run['curve'][-1]:.6f}",
                flush=True,
            )
        cached, uncached = runs["cached"], runs["uncached"]
        diff = max(abs(a - b) for a, b in zip(cached["curve"], uncached["curve"], strict=True))
        rows.append(
            {
                "realigner": realigner,
                "steps": args.steps,
                "cached_s": cached["wall_s"],
                "cache_build_s": cached["cache_build_s"],
                "cache_entries": cached["cache_entries"],
                "uncached_s": uncached["wall_s"],
                "speedup": uncached["wall_s"] / cached["wall_s"],
                "target": TARGETS.get(realigner),
                "final_loss_cached": cached["curve"][-1],
                "final_loss_uncached": uncached["curve"][-1],
                "max_abs_loss_diff": diff,
                "curve_cached": cached["curve"],
                "curve_uncached": uncached["curve"],
            }
        )
    print()
    print(format_table(rows))
    print("targets from the issue: surgery ≥ 20x, deep ≥ 2x (ok: met, !!: missed; not asserted)")
    print(f"load average (1 min) {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "torch_version": torch.__version__,
        "results": rows,
    }
    if args.json is not None:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
