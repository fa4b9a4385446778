"""Wall time and peak memory of the data-free merges on ViT-B/16- or B/32-shaped experts (CPU or GPU).

θ0 is a seeded random state dict with ``--shapes``' encoder shapes: ``vit_b16`` (default) timm
``vit_base_patch16_224`` (patch embedding, class token, position embedding, ``--blocks`` of its 12 blocks,
final norm; width 768, MLP 3072), ``vit_b32`` open_clip ``ViT-B-32``'s visual tower, the CLIP benchmarks'
experts (32 px patches, 50 tokens, ``--blocks`` of its 12 resblocks, ln_pre/ln_post and the 768 -> 512
projection); each of the ``--tasks`` experts is θ0 plus seeded N(0, 0.01²) noise. Each method runs in its
own child process (same seeds) so that its peak memory is its own: the child builds the pool, resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``), times ``merge(pool, method)`` and reports the peak
RSS above the pool (the merged output included). The SVD merges cost the same per block, so the time for
all 12 blocks is estimated as measured × (parameters of 12 blocks / parameters measured); that column is
an estimate, labelled as such, and only shown when ``--blocks`` < 12. ``--device cuda`` runs the merges
there (keywise methods one key group at a time, the SVD merges' SVDs on it; the pool stays on the CPU, as
the CLI's ``merge ... runtime.accelerator=cuda`` does) and adds the device's peak allocated memory.

Run as a script it sets ``OMP_WAIT_POLICY=PASSIVE`` (on a shared 2-core machine spinning OpenMP
workers slow SVDs several-fold) unless the environment sets it.

    python benchmarks/merge_methods.py --blocks 1 --tasks 8 --threads 2   # --blocks 12: full size
    python benchmarks/merge_methods.py --blocks 12 --methods ties tsv_m iso_cts --device cuda
    python benchmarks/merge_methods.py --shapes vit_b32 --tasks 20 --blocks 1 --methods tsv_m iso_cts
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

DEFAULT_METHODS = ("task_arithmetic", "ties", "lines", "consensus", "iso_c", "iso_cts", "tsv_m")
#: what each method is run with: the registered defaults, TIES at the papers' k = 20
METHOD_PARAMS: dict[str, dict] = {"ties": {"k": 20, "lam": 0.3}}
WIDTH, MLP, PATCH, TOKENS, FULL_DEPTH = 768, 3072, 16, 197, 12


def vit_b16_shapes(blocks: int) -> dict[str, tuple[int, ...]]:
    """timm vit_base_patch16_224 encoder shapes (no classifier) with ``blocks`` transformer blocks."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, WIDTH),
        "pos_embed": (1, TOKENS, WIDTH),
        "patch_embed.proj.weight": (WIDTH, 3, PATCH, PATCH),
        "patch_embed.proj.bias": (WIDTH,),
    }
    for i in range(blocks):
        p = f"blocks.{i}."
        shapes |= {
            p + "norm1.weight": (WIDTH,), p + "norm1.bias": (WIDTH,),
            p + "attn.qkv.weight": (3 * WIDTH, WIDTH), p + "attn.qkv.bias": (3 * WIDTH,),
            p + "attn.proj.weight": (WIDTH, WIDTH), p + "attn.proj.bias": (WIDTH,),
            p + "norm2.weight": (WIDTH,), p + "norm2.bias": (WIDTH,),
            p + "mlp.fc1.weight": (MLP, WIDTH), p + "mlp.fc1.bias": (MLP,),
            p + "mlp.fc2.weight": (WIDTH, MLP), p + "mlp.fc2.bias": (WIDTH,),
        }  # fmt: skip
    shapes |= {"norm.weight": (WIDTH,), "norm.bias": (WIDTH,)}
    return shapes


CLIP_PATCH, CLIP_TOKENS, CLIP_EMBED = 32, 50, 512


def vit_b32_shapes(blocks: int) -> dict[str, tuple[int, ...]]:
    """open_clip ViT-B-32 visual-tower shapes (``model.visual.state_dict()``) with ``blocks`` resblocks."""
    shapes: dict[str, tuple[int, ...]] = {
        "class_embedding": (WIDTH,),
        "positional_embedding": (CLIP_TOKENS, WIDTH),
        "conv1.weight": (WIDTH, 3, CLIP_PATCH, CLIP_PATCH),
        "ln_pre.weight": (WIDTH,), "ln_pre.bias": (WIDTH,),
    }  # fmt: skip
    for i in range(blocks):
        p = f"transformer.resblocks.{i}."
        shapes |= {
            p + "ln_1.weight": (WIDTH,), p + "ln_1.bias": (WIDTH,),
            p + "attn.in_proj_weight": (3 * WIDTH, WIDTH), p + "attn.in_proj_bias": (3 * WIDTH,),
            p + "attn.out_proj.weight": (WIDTH, WIDTH), p + "attn.out_proj.bias": (WIDTH,),
            p + "ln_2.weight": (WIDTH,), p + "ln_2.bias": (WIDTH,),
            p + "mlp.c_fc.weight": (MLP, WIDTH), p + "mlp.c_fc.bias": (MLP,),
            p + "mlp.c_proj.weight": (WIDTH, MLP), p + "mlp.c_proj.bias": (WIDTH,),
        }  # fmt: skip
    shapes |= {"ln_post.weight": (WIDTH,), "ln_post.bias": (WIDTH,), "proj": (WIDTH, CLIP_EMBED)}
    return shapes


#: ``--shapes`` -> (label, shapes with ``blocks`` blocks)
SHAPES = {"vit_b16": ("ViT-B/16", vit_b16_shapes), "vit_b32": ("CLIP ViT-B/32", vit_b32_shapes)}


def num_params(blocks: int, shapes: str = "vit_b16") -> int:
    return sum(torch.Size(s).numel() for s in SHAPES[shapes][1](blocks).values())


def random_pool(blocks: int, tasks: int, seed: int = 0, shapes: str = "vit_b16"):
    from simo_merge.pool.expert_pool import ExpertPool

    gen = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=gen) * 0.02 for k, s in SHAPES[shapes][1](blocks).items()}
    experts = {}
    for t in range(tasks):
        experts[f"task{t}"] = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    return ExpertPool(base, experts)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _write_pool(pool, folder: Path) -> tuple[Path, dict[str, Path]]:
    from simo_merge.io.checkpoint import save_state

    save_state(folder / "theta0.safetensors", pool.base, {"role": "theta0"}, True)
    paths = {t: folder / f"{t}.safetensors" for t in pool.tasks}
    for t, path in paths.items():
        save_state(path, pool.experts[t], {"task": t, "role": "expert encoder"}, True)
    return folder / "theta0.safetensors", paths


def run_one(
    method: str,
    blocks: int,
    tasks: int,
    threads: int,
    files: Path | None = None,
    device: str = "cpu",
    shapes: str = "vit_b16",
) -> dict:
    """Build the pool, then time one merge on ``device`` and measure its peak RSS above the pool (this
    process). With ``files`` (a scratch folder) the pool is written there first and the timing includes
    reading θ0 and the experts from those files (the CLI's ``merge pool.dir=...``)."""
    from simo_merge.merging import merge
    from simo_merge.pool.expert_pool import ExpertPool

    torch.set_num_threads(threads)
    pool = random_pool(blocks, tasks, shapes=shapes)
    if files is not None:
        base_path, expert_paths = _write_pool(pool, files)
        del pool
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        torch.zeros(1, device=device)  # the CUDA context's start-up is not the merge's time
        torch.cuda.reset_peak_memory_stats(device)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    if files is not None:
        pool = ExpertPool.from_files(base_path, expert_paths)
    merged = merge(pool, method, device=device, **METHOD_PARAMS.get(method, {}))  # back on the CPU
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _status_kib("VmHWM")
    out_mib = sum(v.numel() * v.element_size() for v in merged.values()) / 2**20
    return {
        "method": method,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_extra_mib": (peak - before) / 1024,
        "output_mib": out_mib,
        "pool_mib": before / 1024,
        "device_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if on_cuda else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--blocks", type=int, default=1, help="transformer blocks to generate (full: 12)")
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="vit_b16", help="the experts' shapes")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--from-files", action="store_true", help="time reading the pool's files too")
    parser.add_argument("--device", default="cpu", help="where the merges run, e.g. cuda")
    parser.add_argument("--scratch", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = run_one(
            args.worker, args.blocks, args.tasks, args.threads, args.scratch, args.device, args.shapes
        )
        print(json.dumps(result))
        return 0
    measured, full = num_params(args.blocks, args.shapes), num_params(FULL_DEPTH, args.shapes)
    print(
        f"{args.tasks} experts, {SHAPES[args.shapes][0]} shapes with {args.blocks}/{FULL_DEPTH} blocks "
        f"({measured / 1e6:.1f}M of {full / 1e6:.1f}M parameters per model), on {args.device}, "
        f"{args.threads} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, torch {torch.__version__}"
    )
    results = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--worker", method, "--blocks", str(args.blocks)]
        cmd += ["--tasks", str(args.tasks), "--threads", str(args.threads), "--device", args.device]
        cmd += ["--shapes", args.shapes]
        with tempfile.TemporaryDirectory() as scratch:
            if args.from_files:
                cmd += ["--scratch", scratch]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{method}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    scale = full / measured
    extrapolate = args.blocks < FULL_DEPTH
    where = "from files (reading included)" if args.from_files else "in memory"
    head = f"| method ({where}) | wall s | CPU s | peak MiB above pool | merged output MiB |"
    print(head + (" est. wall s, 12 blocks |" if extrapolate else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|" if extrapolate else ""))
    for r in results:
        line = f"| {r['method']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_extra_mib']:.0f} |"
        line += f" {r['output_mib']:.0f} |"
        print(line + (f" {r['seconds'] * scale:.0f} |" if extrapolate else ""))
    cpu = {r["method"]: r["cpu_seconds"] for r in results}
    if "task_arithmetic" in cpu and "ties" in cpu:
        print(f"TIES / task arithmetic CPU time, {where}: {cpu['ties'] / cpu['task_arithmetic']:.2f}x")
    pool_mib = results[0]["pool_mib"]
    for r in results:
        if r["device_peak_mib"] is not None:
            print(f"{r['method']}: peak {args.device} memory allocated {r['device_peak_mib']:.0f} MiB")
    print(f"(each worker's RSS with the pool: {pool_mib:.0f} MiB; peak = VmHWM after merge − VmRSS before)")
    if args.json:
        payload = {"blocks": args.blocks, "tasks": args.tasks, "threads": args.threads, "shapes": args.shapes}
        payload["results"] = results
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
