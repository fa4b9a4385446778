"""NYUv2: the MTAN npy folders (shared by the dataset and SIMO-config tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_npy_sample(folder: Path, i: int, hw: tuple[int, int], value: float, tasks: tuple[str, ...]) -> None:
    h, w = hw
    np.save(folder / "image" / f"{i}.npy", np.full((h, w, 3), value, np.float32))
    if "label" in tasks:
        lab = np.full((h, w), float(i % 13), np.float32)
        lab[0, 0] = -1.0
        np.save(folder / "label" / f"{i}.npy", lab)
    if "depth" in tasks:
        d = np.full((h, w, 1), 1.0 + i, np.float32)
        d[1, 2, 0] = 0.0
        np.save(folder / "depth" / f"{i}.npy", d)
    if "normal" in tasks:
        n = np.zeros((h, w, 3), np.float32)
        n[..., 0], n[..., 2] = 0.6, -0.8
        n[2, 1] = 0.0
        np.save(folder / "normal" / f"{i}.npy", n)


def make_npy_root(
    root: Path, n_train: int, n_val: int, tasks=("label", "depth", "normal"), hw=(4, 6)
) -> Path:
    for split, n in (("train", n_train), ("val", n_val)):
        for sub in ("image",) + tuple(tasks):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_npy_sample(root / split, i, hw, value=(i % 100) / 100, tasks=tasks)
    return root
