"""Pinhole-camera helpers: intrinsics, back-projection and surface normals derived from depth.

Camera frame as in :mod:`simo_merge.tasks`: x right, y down, z forward (away from the camera). Pixel
coordinates are 0-based with ``u`` the column and ``v`` the row, so a pixel centre sits at integer ``(u, v)``.
Derived normals are unit vectors oriented towards the camera (``n . P < 0`` for the 3-D point ``P``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (focal lengths ``fx``, ``fy``; principal point ``cx``, ``cy``)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    def resized(self, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Intrinsics:
        """Intrinsics after resizing an image from ``src_hw`` to ``dst_hw``.

        Pixel-centre aligned, as bilinear / nearest-exact resampling is: source pixel centre ``u`` lands at
        ``(u + 0.5) * s - 0.5``.
        """
        sy = dst_hw[0] / src_hw[0]
        sx = dst_hw[1] / src_hw[1]
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
        )

    def cropped(self, top: int, left: int) -> Intrinsics:
        """Intrinsics after cropping ``top`` rows and ``left`` columns off the image."""
        return Intrinsics(self.fx, self.fy, self.cx - left, self.cy - top)


#: NYU Depth v2 Kinect RGB camera at 640x480, from the official toolbox's ``camera_params.m``
#: (``fx_rgb``, ``fy_rgb``, ``cx_rgb``, ``cy_rgb``). The labeled set's ``depths`` are registered to this
#: camera.
NYUV2_RGB_INTRINSICS = Intrinsics(
    fx=5.1885790117450188e02,
    fy=5.1946961112127485e02,
    cx=3.2558244941119034e02,
    cy=2.5373616633400465e02,
)
NYUV2_RGB_SIZE: tuple[int, int] = (480, 640)  # (H, W) the intrinsics above refer to


def backproject(depth: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """3-D points (H, W, 3) of a z-depth map: ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy``, ``Z``."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    h, w = depth.shape
    z = depth.astype(np.float64)
    u = np.arange(w, dtype=np.float64)[None, :]
    v = np.arange(h, dtype=np.float64)[:, None]
    return np.stack([(u - intr.cx) * z / intr.fx, (v - intr.cy) * z / intr.fy, z], axis=-1)


def _differences(points: np.ndarray, valid: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """d points / d pixel along ``axis`` (1 = rows, 2 = columns) of channel-first ``points`` (3, H, W).

    Central difference where both neighbours are valid, else the one-sided difference that is valid.
    """
    n = points.shape[axis]

    def sl(a: int, b: int | None) -> tuple[slice, ...]:
        return (slice(None),) * axis + (slice(a, b),)

    step = points[sl(1, None)] - points[sl(0, -1)]  # between positions i and i + 1
    pair_ok = valid[sl(1, None)[1:]] & valid[sl(0, -1)[1:]]
    diff = np.zeros_like(points)
    ok = np.zeros(valid.shape, dtype=bool)
    if n < 2:
        return diff, ok
    diff[sl(0, -1)] = np.where(pair_ok, step, 0.0)  # forward difference at positions 0 .. n-2
    ok[sl(0, -1)[1:]] = pair_ok
    back_only = pair_ok & ~ok[sl(1, None)[1:]]  # position i + 1 without a forward difference
    diff[sl(1, None)] = np.where(back_only, step, diff[sl(1, None)])
    ok[sl(1, None)[1:]] |= pair_ok
    if n >= 3:
        both = pair_ok[sl(0, -1)[1:]] & pair_ok[sl(1, None)[1:]]  # interior positions 1 .. n-2
        central = 0.5 * (step[sl(0, -1)] + step[sl(1, None)])
        diff[sl(1, -1)] = np.where(both, central, diff[sl(1, -1)])
    return diff, ok


def normals_from_depth(
    depth: np.ndarray, intr: Intrinsics, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (H, W, 3) float32 and their validity mask (H, W) from a z-depth map.

    Each pixel is back-projected; the tangents along columns and rows are finite differences of the
    3-D points (central where possible, one-sided at borders and next to invalid pixels) and the normal
    is their cross product, flipped to face the camera. A pixel is invalid when its depth is not finite
    and positive (or ``valid`` is False there), when it has no valid neighbour along an axis, or when the
    tangents are parallel. Invalid pixels get the zero vector. On a plane the result is exact.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        if valid.shape != depth.shape:
            raise ValueError(f"valid mask shape {valid.shape} does not match depth shape {depth.shape}")
        ok &= valid.astype(bool)
    pts = np.moveaxis(backproject(np.where(ok, depth, 0.0), intr), -1, 0)  # (3, H, W)
    du, ok_u = _differences(pts, ok, axis=2)
    dv, ok_v = _differences(pts, ok, axis=1)
    n = np.stack(
        [
            du[1] * dv[2] - du[2] * dv[1],
            du[2] * dv[0] - du[0] * dv[2],
            du[0] * dv[1] - du[1] * dv[0],
        ]
    )
    n *= np.where(np.einsum("chw,chw->hw", n, pts) > 0, -1.0, 1.0)  # face the camera: n . P < 0
    norm = np.sqrt(np.einsum("chw,chw->hw", n, n))
    scale = np.sqrt(np.einsum("chw,chw->hw", du, du) * np.einsum("chw,chw->hw", dv, dv))
    mask = ok & ok_u & ok_v & np.isfinite(norm) & (norm > 1e-12 * scale) & (norm > 0)
    out = np.where(mask, n / np.where(mask, norm, 1.0), 0.0)
    return np.ascontiguousarray(np.moveaxis(out, 0, -1), dtype=np.float32), mask


def normal_axis_agreement(
    normals: np.ndarray,
    depth: np.ndarray,
    intr: Intrinsics,
    mask: np.ndarray | None = None,
    min_abs: float = 0.3,
) -> np.ndarray:
    """Per-axis sign agreement in [-1, 1] between given normals and normals derived from ``depth``.

    For each axis it averages ``sign(given) * sign(derived)`` over valid pixels where both components have
    magnitude >= ``min_abs``; about +1 means the axis follows this module's convention, about -1 that it
    is flipped. Use it to check a preprocessed dataset's normal convention (NaN where no pixel qualifies).
    """
    derived, ok = normals_from_depth(depth, intr)
    if normals.shape != derived.shape:
        raise ValueError(f"normals shape {normals.shape} does not match depth-derived {derived.shape}")
    if mask is not None:
        ok &= mask.astype(bool)
    ok &= np.linalg.norm(normals, axis=-1) > 0
    result = np.full(3, np.nan)
    for axis in range(3):
        sel = ok & (np.abs(normals[..., axis]) >= min_abs) & (np.abs(derived[..., axis]) >= min_abs)
        if sel.any():
            result[axis] = float(np.mean(np.sign(normals[..., axis][sel]) * np.sign(derived[..., axis][sel])))
    return result
