"""IDX files (MNIST's format: uint8 arrays behind a big-endian shape header), written by the dataset, pool
and CLIP eight-task fixtures."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` as a uint8 IDX file, gzip-compressed when ``path`` ends in .gz; folders are made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(data)


def write_idx_classification(
    root: Path, num_classes: int, size: int, counts: dict[str, int], seed: int, rgb: bool = False
) -> None:
    """A small classification data set in the ``idx`` layout (``<root>/<split>-images-idx3-ubyte``,
    ``<split>-labels-idx1-ubyte`` per split of ``counts``): class ``c`` is a bright band at a class-specific
    height over noise, so a linear probe can learn it; labels cycle over the classes."""
    rng = np.random.default_rng(seed)
    band = max(1, size // num_classes)
    for split, n in counts.items():
        labels = np.arange(n) % num_classes
        images = rng.integers(0, 90, (n, size, size, 3) if rgb else (n, size, size))
        for i, c in enumerate(labels):
            images[i, c * band : (c + 1) * band] += 150
        write_idx(root / f"{split}-images-idx3-ubyte", np.clip(images, 0, 255))
        write_idx(root / f"{split}-labels-idx1-ubyte", labels)
