"""Prints how long the synthetic scene generator takes per sample (serial, 64×64): the demo's data cost."""

from __future__ import annotations

import argparse
import time

from simo_merge.datasets import synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()
    synthetic.generate_split(0, "train", args.samples, (args.size, args.size))
    per_sample = (time.perf_counter() - start) / args.samples
    print(
        f"synthetic_scenes: {1000 * per_sample:.2f} ms per {args.size}x{args.size} sample "
        f"({2000 * per_sample:.1f} s per 2000)"
    )


if __name__ == "__main__":
    main()
