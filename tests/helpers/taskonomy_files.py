"""Taskonomy: one view's task files in the release's bit depths and folder layouts (shared by the dataset
and SIMO-config tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

H, W = 4, 6  # every view's size

# depth_zbuffer raw (1/512 m): 512 -> 1 m, 1024 -> 2 m, 65535 invalid, 0 invalid, 256 -> 0.5 m, 1 -> 1/512 m
DEPTH_RAW = np.array(
    [[512, 1024, 65535, 0, 256, 1]] + [[2560, 2560, 2560, 2560, 2560, 2560]] * 3, dtype=np.uint16
)


# segment_semantic raw: 0 uncertain, 1 background, 2 bottle, 17 vase, 5 potted plant, 3 chair
SEG_RAW = np.array([[0, 1, 2, 17, 5, 3]] + [[1] * 6] * 3, dtype=np.uint8)


KP_RAW = np.array([[65535, 32768, 0, 0, 0, 0]] + [[0] * 6] * 3, dtype=np.uint16)


EDGE_RAW = np.array([[13107, 0, 65535, 0, 0, 0]] + [[0] * 6] * 3, dtype=np.uint16)


# normals, stored in our camera frame (x right, y down, z forward): facing the camera (B = 0 -> z = -1),
# pointing up (floor), pointing left, invalid grey, pointing right, facing the camera
NORMAL_PIXELS = [
    (128, 128, 0),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (255, 128, 128),
    (128, 128, 0),
]


def normal_raw() -> np.ndarray:
    arr = np.full((H, W, 3), 128, dtype=np.uint8)
    arr[..., 2] = 0
    arr[0] = np.array(NORMAL_PIXELS, dtype=np.uint8)
    return arr


def rgb(seed: int) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    arr[0, 0] = (51, 102, 255)  # -> 0.2, 0.4, 1.0
    return arr


FOLDER = {"rgb": "rgb", "semseg": "segment_semantic", "depth": "depth_zbuffer", "normal": "normal",
          "keypoints2d": "keypoints2d", "edge": "edge_texture"}  # fmt: skip


def write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_view(folder_of, building: str, point: int, view: int, skip: tuple[str, ...] = (), domain=None):
    """All task files of one view; ``folder_of(task_folder, building)`` gives the folder."""
    domain = domain or {}
    data = {"rgb": rgb(point * 10 + view), "semseg": SEG_RAW, "depth": DEPTH_RAW, "normal": normal_raw(),
            "keypoints2d": KP_RAW, "edge": EDGE_RAW}  # fmt: skip
    for task, arr in data.items():
        folder_name = FOLDER[task]
        if task in skip:
            folder_of(folder_name, building).mkdir(parents=True, exist_ok=True)
            continue
        dom = domain.get(task, folder_name)
        write(folder_of(folder_name, building) / f"point_{point}_view_{view}_domain_{dom}.png", arr)


def omnidata(root: Path):
    return lambda task_folder, building: root / task_folder / "taskonomy" / building


def task_building(root: Path):
    return lambda task_folder, building: root / task_folder / building
