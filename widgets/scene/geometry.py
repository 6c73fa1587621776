"""Pure geometry of the 3D view: cloud packing, level-of-detail subsets, the policy's curve, the
crop box and screen-space picking. numpy only (no Qt, no GL): unit-tested on their own and safe on
worker threads.

Why one packed float per point and a voxel subset while moving: see widgets/scene/layer.py.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SplineFn = Callable[[np.ndarray], np.ndarray]


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N,3) uint8 → (N,) float32 holding r·65536 + g·256 + b, exact since it is < 2**24.

    One float per point instead of three keeps the vertex buffer at 16 bytes/point, which is
    what the upload time is bound by."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]).astype(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    p = np.asarray(packed, dtype=np.uint32)
    return np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=1).astype(np.uint8)


def voxel_decimate(xyz: np.ndarray, target: int, iterations: int = 3) -> np.ndarray:
    """Indices of one point per occupied voxel, with the voxel size chosen so that about
    ``target`` points remain (within ~20 %). Returns all indices when the cloud is small.

    Voxels (not a random subset) keep thin structures such as the gripper fingers visible
    while orbiting, and thin out the dense table surface near the camera first."""
    n = len(xyz)
    if n <= target or target <= 0:
        return np.arange(n)
    lo = xyz.min(axis=0)
    extent = np.maximum(xyz.max(axis=0) - lo, 1e-6)
    # Depth-camera clouds are surfaces, so occupancy grows with area: start from a 2D guess.
    area = np.sort(extent)[1:].prod()
    voxel = float(np.sqrt(area / target))
    idx = np.arange(n)
    for _ in range(iterations):
        q = np.floor((xyz - lo) / voxel).astype(np.int64)
        dims = q.max(axis=0) + 1
        keys = (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]
        _, idx = np.unique(keys, return_index=True)
        ratio = len(idx) / target
        if 0.8 <= ratio <= 1.25:
            break
        voxel *= float(np.sqrt(ratio))
    if len(idx) > target * 1.25:
        # Still too many after the iterations: a stride keeps it spatially even enough.
        idx = idx[:: int(np.ceil(len(idx) / target))]
    return np.sort(idx)


def stride_decimate(n: int, target: int) -> np.ndarray:
    """Every k-th index so that ≤ ``target`` remain. Depth clouds arrive in image row order, and a
    stride that does not divide the row width lands on a sheared lattice: spatially even enough
    for the moment until the voxel subset is ready."""
    if n <= target or target <= 0:
        return np.arange(n)
    return np.arange(0, n, int(np.ceil(n / target)))


@dataclass(frozen=True)
class PreparedCloud:
    """A cloud packed for the view: everything ``set_cloud`` computes with numpy, so a worker
    thread can do it and the UI thread only hands the buffers to GL."""
    data: np.ndarray            # (N,4) float32: xyz + packed rgb
    bounds: np.ndarray          # (2,3) min, max
    zrange: tuple[float, float]  # 1st–99th height percentile, for the height colour map
    lod: np.ndarray             # (M,4) strided subset for moving (empty if N ≤ lod_points)
    lod_points: int

    def __len__(self) -> int:
        return len(self.data)


def prepare_cloud(xyz: np.ndarray, rgb: np.ndarray | None = None,
                  lod_points: int = 50_000) -> PreparedCloud:
    """Validate and pack a cloud (thread-safe, no Qt). xyz (N,3); rgb (N,3) uint8 or None."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"set_cloud: xyz must be (N,3), got {xyz.shape}")
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != xyz.shape:
            raise ValueError(f"set_cloud: rgb must be (N,3) like xyz {xyz.shape}, got {rgb.shape}")
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.all():
        # Depth holes come through as NaN; drawing them would poison the bounds.
        xyz = xyz[finite]
        rgb = None if rgb is None else rgb[finite]
    n = len(xyz)
    data = np.empty((n, 4), np.float32)
    data[:, :3] = xyz
    data[:, 3] = pack_rgb(rgb) if rgb is not None else 0x9AA4B2
    if n:
        bounds = np.stack([data[:, :3].min(axis=0), data[:, :3].max(axis=0)])
        z = data[:, 2]
        lo, hi = np.percentile(z, [1.0, 99.0]) if n > 100 else (z.min(), z.max())
    else:
        bounds, lo, hi = np.zeros((2, 3)), 0.0, 1.0
    lod = (np.ascontiguousarray(data[stride_decimate(n, lod_points)]) if 0 < lod_points < n
           else np.zeros((0, 4), np.float32))
    return PreparedCloud(data, bounds, (float(lo), float(hi)), lod, int(lod_points))


def policy_curve(waypoints: np.ndarray, samples: int = 200) -> np.ndarray:
    """Default curve through the waypoints: the policy's own (policies.waypoints.position_curve, PCHIP
    + slerp through WaypointTrajectory), so the view never draws a curve the arm would not follow.
    Imported on first use: policies.geometry pulls in torch (~1.5 s), which a bare view does not need."""
    from policies.waypoints import position_curve

    return position_curve(waypoints, samples)


def box_edges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(24,3) segment endpoints of the 12 edges of an axis-aligned box."""
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    corners = np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1], hi[2] if i & 4 else lo[2]]
                        for i in range(8)])
    pairs = [(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit]
    return corners[np.array(pairs).ravel()]


def box_face_handles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(6,3) centres of the faces: -x, +x, -y, +y, -z, +z (the order of the handle indices)."""
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    c = (lo + hi) / 2
    out = []
    for axis in range(3):
        for bound in (lo, hi):
            p = c.copy()
            p[axis] = bound[axis]
            out.append(p)
    return np.array(out)


def pick_nearest_on_screen(screen_xy: np.ndarray, depth: np.ndarray, click: Sequence[float],
                           radius_px: float, depth_tol: float = 0.02) -> int | None:
    """Index of the point drawn under ``click``, or None if no point projects within
    ``radius_px`` pixels. Points more than ``depth_tol`` (metres) behind the front-most candidate
    are hidden surfaces; among the visible ones the closest on screen wins (at grazing angles the
    front-most point of the pick disc can be centimetres off the cursor)."""
    d2 = np.sum((screen_xy - np.asarray(click, float)[None, :]) ** 2, axis=1)
    near = np.flatnonzero(d2 <= radius_px * radius_px)
    if len(near) == 0:
        return None
    visible = near[depth[near] <= depth[near].min() + depth_tol]
    return int(visible[np.argmin(d2[visible])])
