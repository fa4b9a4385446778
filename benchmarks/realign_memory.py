"""Peak memory of a realignment run as its number of unlabelled inputs grows (issue 10, part 3).

For each input count (default 256, 1024, 4096) a fresh process builds a small deterministic pool (a
ViT of 4 blocks, width 192, 64×64 images, 65 tokens; two tasks, semseg and depth, with linear heads;
experts are θ0 plus seeded noise), realigns it with ``surgery`` for a fixed number of steps, and
reports its peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: every page the
process ever held resident, torch's tensor allocations included; ``tracemalloc`` would miss those,
as torch allocates outside Python's allocator). It also reports the peak *above* the process's
resident size just before realignment (model, experts and libraries loaded), which is what the inputs
and the feature cache add.

Modes:

- ``streamed`` (the default): inputs read from a lazy dataset through the seeded sampler
  (:func:`simo_merge.features.inputs.dataset_inputs`), feature tables on disk past ``--cache-mb``
  (default 0: every table on disk, read back by rows with ``pread``, so cached rows never become
  resident in the process).
- ``stacked``: what realignment did before streaming: every input stacked into one tensor and every
  feature table in memory.

The dataset makes each item on demand from its index (seeded), as a dataset reading files would; it
holds nothing. The issue's target, a flat peak (±10%) from 256 to 4096 inputs, is printed, not asserted.

    python benchmarks/realign_memory.py                      # both modes, 256 1024 4096
    python benchmarks/realign_memory.py --modes streamed --counts 256 4096 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

IMG, PATCH, WIDTH, DEPTH = 64, 8, 192, 4


class LazyScenes:
    """``n`` items made on demand: a seeded image, a semseg map and a depth map per index."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        import torch

        g = torch.Generator().manual_seed(i)
        return {
            "image": torch.rand(3, IMG, IMG, generator=g),
            "semseg": torch.randint(0, 4, (IMG, IMG), generator=g),
            "depth": torch.rand(1, IMG, IMG, generator=g),
        }


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(n: int, mode: str, steps: int, cache_mb: float, threads: int) -> dict:
    import torch

    from simo_merge.encoders import build_encoder
    from simo_merge.features.cache import FeatureCache
    from simo_merge.features.inputs import RealignInputs, dataset_inputs
    from simo_merge.heads import build_head
    from simo_merge.realign.train import RealignConfig, realign
    from simo_merge.tasks import regression, segmentation

    torch.set_num_threads(threads)
    specs = {"semseg": segmentation("semseg", 4), "depth": regression("depth")}

    def make_encoder():
        torch.manual_seed(0)
        enc = dict(img_size=IMG, patch_size=PATCH, depth=DEPTH, embed_dim=WIDTH, num_heads=3)
        return build_encoder("timm", "vit_tiny_patch16_224", **enc)

    encoder = make_encoder()
    torch.manual_seed(1)
    heads = {t: build_head("linear", s, encoder, (IMG, IMG)).eval() for t, s in specs.items()}
    base = encoder.model_state()
    experts = {}
    for i, t in enumerate(specs):
        g = torch.Generator().manual_seed(i + 1)
        experts[t] = {
            k: v + 0.02 * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
            for k, v in base.items()
        }
    data = LazyScenes(n)
    if mode == "streamed":
        inputs = dataset_inputs(data, list(specs), f"lazy{n}")
        cache = FeatureCache(max_memory_mb=cache_mb)
    else:
        images = torch.stack([data[i]["image"] for i in range(n)])
        inputs = RealignInputs(images={t: images for t in specs}, name=f"lazy{n}")
        cache = FeatureCache(max_memory_mb=1e9)
    before = current_rss_mb()
    cfg = RealignConfig(realigner="surgery", steps=steps, batch_size=16, progress=False)
    _, curve = realign(make_encoder, base, experts, heads, inputs, cfg, cache)
    peak = rss_mb()
    return {
        "inputs": n,
        "mode": mode,
        "peak_rss_mb": round(peak, 1),
        "rss_before_realign_mb": round(before, 1),
        "peak_above_start_mb": round(peak - before, 1),
        "cache_in_memory_mb": round(cache.memory_bytes / 2**20, 1),
        "loss_first_last": [round(curve[0], 5), round(curve[-1], 5)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument(
        "--modes", nargs="+", default=["streamed", "stacked"], choices=["streamed", "stacked"]
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--cache-mb", type=float, default=0.0, help="streamed: feature tables past this go to disk"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="streamed", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.mode, args.steps, args.cache_mb, args.threads)))
        return 0
    rows = []
    for mode in args.modes:
        for n in args.counts:  # a fresh process each: ru_maxrss only grows within one
            cmd = [sys.executable, __file__, "--child", str(n), "--mode", mode, "--steps", str(args.steps)]
            cmd += ["--cache-mb", str(args.cache_mb), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'mode':<9} {'inputs':>6} {'peak RSS MB':>12} {'above start MB':>15} {'cache in RAM MB':>16}")
    for r in rows:
        print(
            f"{r['mode']:<9} {r['inputs']:>6} {r['peak_rss_mb']:>12} {r['peak_above_start_mb']:>15} "
            f"{r['cache_in_memory_mb']:>16}"
        )
    for mode in args.modes:
        peaks = [r["peak_rss_mb"] for r in rows if r["mode"] == mode]
        growth = peaks[-1] / peaks[0] - 1
        verdict = "flat (within ±10%)" if abs(growth) <= 0.10 else "NOT flat"
        print(
            f"{mode}: peak RSS {peaks[0]:.0f} -> {peaks[-1]:.0f} MB ({growth:+.1%}): {verdict}; target ±10%"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
