"""Cityscapes: the SIMO/Auto-Lambda npy folders (shared by the dataset and SIMO-config tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_simo_npy_root(
    root: Path, n_train: int = 2975, n_val: int = 500, hw: tuple[int, int] = (2, 3)
) -> Path:
    """The SIMO/Auto-Lambda npy folders; every file's pixel (0, 0) encodes its split and index."""
    h, w = hw
    for split, n in (("train", n_train), ("val", n_val)):
        d = root / split
        for sub in ("image", "label_19", "part_seg", "depth"):
            (d / sub).mkdir(parents=True)
        for i in range(n):
            np.save(d / "image" / f"{i}.npy", np.full((h, w, 3), (i % 1000) / 1000, np.float32))
            lab = np.full((h, w), float(i % 19), np.float32)
            lab[0, 1] = -1.0
            np.save(d / "label_19" / f"{i}.npy", lab)
            part = np.full((h, w), float(i % 10), np.float32)
            part[1, 0] = -1.0
            np.save(d / "part_seg" / f"{i}.npy", part)
            disp = np.full((h, w, 1), 0.001 * (i + 1), np.float32)
            disp[1, 2, 0] = -1.0  # Auto-Lambda's invalid marker
            np.save(d / "depth" / f"{i}.npy", disp)
    return root
