"""Point clouds and poses for the policies.

Depth images become clouds in the robot base frame, are cropped to the workspace and reduced to a
fixed number of points by farthest-point sampling (DP3's recipe). Poses are xyz + quaternion xyzw
(scipy order); the networks see rotations as the 6-D representation (first two rotation-matrix
columns) because quaternions have a sign ambiguity and are discontinuous as regression targets.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

# --------------------------------------------------------------------------------------------
# Depth -> cloud
# --------------------------------------------------------------------------------------------

_PIXEL_GRID_CACHE: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}


def _pixel_grid(h: int, w: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    # The grid is the same for every frame of a camera; caching it saves ~1/3 of the back-projection.
    key = (h, w, stride)
    if key not in _PIXEL_GRID_CACHE:
        v, u = np.mgrid[0:h:stride, 0:w:stride]
        _PIXEL_GRID_CACHE[key] = (u.astype(np.float32), v.astype(np.float32))
    return _PIXEL_GRID_CACHE[key]


def depth_to_points(depth: np.ndarray, depth_scale: float, K: np.ndarray, T_base_camera: np.ndarray,
                    rgb: np.ndarray | None = None, stride: int = 1,
                    max_depth: float | None = None) -> np.ndarray:
    """Back-project a depth image (uint16 × depth_scale metres, OpenCV camera) into the base frame.

    Returns (N, 3) float32 xyz, or (N, 6) with rgb in [0, 1] appended when ``rgb`` is given. Pixels
    with zero depth (no return) or beyond ``max_depth`` are dropped.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(T_base_camera, dtype=np.float64)
    if K.shape != (3, 3) or T.shape != (4, 4):
        raise ValueError(f"K must be 3x3 and T_base_camera 4x4, got {K.shape} and {T.shape}")
    h, w = depth.shape
    u, v = _pixel_grid(h, w, stride)
    z = depth[::stride, ::stride].astype(np.float32) * np.float32(depth_scale)
    valid = z > 0
    if max_depth is not None:
        valid &= z <= max_depth
    z = z[valid]
    x = (u[valid] - K[0, 2]) * z / K[0, 0]
    y = (v[valid] - K[1, 2]) * z / K[1, 1]
    cam = np.stack([x, y, z], axis=1)
    pts = (cam @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)).astype(np.float32)
    if rgb is None:
        return pts
    colours = np.asarray(rgb)[::stride, ::stride][valid].astype(np.float32) / 255.0
    return np.concatenate([pts, colours], axis=1)


def crop(points: np.ndarray, lo, hi) -> np.ndarray:
    """Keep points whose xyz lies inside the axis-aligned box [lo, hi] (extra columns ride along)."""
    xyz = points[:, :3]
    keep = np.all((xyz >= np.asarray(lo, dtype=xyz.dtype)) & (xyz <= np.asarray(hi, dtype=xyz.dtype)), axis=1)
    return points[keep]


# How far from the base frame's z = 0 the table top may lie and still be found (m). The arm stands on
# the table, so its top is near z = 0; a table more than this off (a pedestal mount) falls back to 0.
TABLE_SEARCH = 0.08


def table_height(points: np.ndarray, lo, hi, search: float = TABLE_SEARCH, bin_size: float = 0.002,
                 min_fraction: float = 0.15) -> float | None:
    """Height of the table top under the workspace: the most populated 2 mm z-bin of the points above
    the workspace's xy rectangle with |z| ≤ ``search``, refined to the median of the points within
    ±3 mm of it. None when that peak holds under ``min_fraction`` of those points (no table in view).

    Why a histogram and not a RANSAC plane (open3d ``segment_plane``): the table is horizontal in the
    base frame of an arm mounted on it, so only its height is unknown; the mode of z found it in
    4 ms on a 77k-point sim frame where segment_plane (3 mm, 200 iterations) took 26-51 ms (2 cores,
    load 3.5), and a plane fit can lock onto a bin's wall; found to 0.1 mm on the sim's ±2 cm tables."""
    xyz = np.asarray(points)[:, :3]
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    inside = (np.all((xyz[:, :2] >= lo[:2]) & (xyz[:, :2] <= hi[:2]), axis=1) & (np.abs(xyz[:, 2]) <= search))
    z = xyz[inside, 2].astype(np.float64)
    if len(z) < 50:
        return None
    counts, edges = np.histogram(z, bins=max(1, int(round(2 * search / bin_size))), range=(-search, search))
    k = int(np.argmax(counts))
    peak = 0.5 * (edges[k] + edges[k + 1])
    near = z[np.abs(z - peak) <= 0.003]
    if len(near) < min_fraction * len(z):
        return None
    return float(np.median(near))


def crop_above_table(points: np.ndarray, lo, hi) -> tuple[np.ndarray, float]:
    """``crop`` with the box's z measured from the table top (``table_height``; 0 when none is
    found): ``lo[2]`` is the clearance that cuts the table away. A fixed floor broke on a table 2 cm
    off the demos' (the raised top flooded the cloud; a lowered one hid the cubes below the floor).
    Returns the cropped points and the table height used."""
    h = table_height(points, lo, hi)
    h = 0.0 if h is None else h
    dz = np.array([0.0, 0.0, h])
    return crop(points, np.asarray(lo, dtype=np.float64) + dz, np.asarray(hi, dtype=np.float64) + dz), h


def voxel_downsample(points: np.ndarray, voxel: float) -> np.ndarray:
    """One point (the first seen) per ``voxel``-sized cell; cheap pre-reduction before FPS."""
    if len(points) == 0 or voxel <= 0:
        return points
    cells = np.floor(points[:, :3] / voxel).astype(np.int64)
    cells -= cells.min(axis=0)
    span = cells.max(axis=0) + 1
    # One int64 key per cell: np.unique on a 1-D array is ~10x faster than on rows (axis=0).
    key = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    _, first = np.unique(key, return_index=True)
    return points[np.sort(first)]


# --------------------------------------------------------------------------------------------
# Farthest-point sampling
# --------------------------------------------------------------------------------------------


def fps_indices_torch(points: torch.Tensor, n: int, start: torch.Tensor | None = None) -> torch.Tensor:
    """Batched farthest-point sampling: points (B, N, 3) -> indices (B, n), on whatever device
    ``points`` lives (CUDA when present). ``start`` (B,) picks the first point; 0 by default."""
    b, N, _ = points.shape
    idx = torch.empty(b, n, dtype=torch.long, device=points.device)
    dist = torch.full((b, N), float("inf"), dtype=points.dtype, device=points.device)
    cur = torch.zeros(b, dtype=torch.long, device=points.device) if start is None else start
    rows = torch.arange(b, device=points.device)
    for i in range(n):
        idx[:, i] = cur
        d = ((points - points[rows, cur].unsqueeze(1)) ** 2).sum(-1)
        dist = torch.minimum(dist, d)
        cur = dist.argmax(dim=1)
    return idx


def farthest_point_sample(points: np.ndarray, n: int = 1024, seed: int = 0,
                          method: str = "open3d") -> np.ndarray:
    """Reduce a cloud to ``n`` points spread as evenly as possible (xyz decides; extra columns kept).

    Fewer than ``n`` input points are padded by repeating random points, so the result always has
    exactly ``n`` rows (the network wants a fixed size). ``seed`` chooses the first point.
    ``method``: "open3d" (``farthest_point_down_sample``, C++; the default because it measured
    3–7x faster on CPU, see bench/policy.py) or "torch" (vectorised loop, batched, runs on CUDA).
    """
    points = np.asarray(points)
    if len(points) == 0:
        raise ValueError("farthest_point_sample: the cloud is empty (nothing inside the crop box?)")
    rng = np.random.default_rng(seed)
    if len(points) <= n:
        extra = rng.integers(0, len(points), size=n - len(points))
        return np.concatenate([points, points[extra]], axis=0)
    start = int(rng.integers(0, len(points)))
    if method == "open3d":
        import open3d as o3d

        # open3d always starts from point 0, so rotate the array to honour the seed.
        rolled = np.roll(points, -start, axis=0)
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(rolled[:, :3].astype(np.float64)))
        # open3d returns the sampled coordinates, not indices; map back through a KD-free lookup by
        # keeping a colour channel holding each point's index.
        ids = np.arange(len(rolled), dtype=np.float64)
        pc.colors = o3d.utility.Vector3dVector(np.stack([ids, ids, ids], axis=1))
        out = pc.farthest_point_down_sample(n)
        sel = np.asarray(out.colors)[:, 0].round().astype(np.int64)
        return rolled[sel]
    if method != "torch":
        raise ValueError(f"unknown FPS method {method!r}; expected 'torch' or 'open3d'")
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(points[:, :3], dtype=np.float32)).unsqueeze(0)
        idx = fps_indices_torch(t, n, torch.tensor([start]))[0].numpy()
    return points[idx]


def cloud_from_depth(depth: np.ndarray, depth_scale: float, K: np.ndarray, T_base_camera: np.ndarray,
                     lo, hi, n: int = 1024, stride: int = 2, voxel: float = 0.005,
                     seed: int = 0) -> np.ndarray:
    """The policy's cloud pipeline: back-project → crop to the workspace above the table
    (``crop_above_table``) → voxel → FPS to ``n``.

    ``stride`` 2 and a 5 mm voxel keep FPS input to a few thousand points (bench/policy.py); the
    result is (n, 3) float32 in the base frame.
    """
    pts = depth_to_points(depth, depth_scale, K, T_base_camera, stride=stride)
    pts, _ = crop_above_table(pts, lo, hi)
    pts = voxel_downsample(pts, voxel)
    return farthest_point_sample(pts, n, seed=seed).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------


def _as_poses(pose: np.ndarray) -> np.ndarray:
    p = np.asarray(pose, dtype=np.float64)
    if p.shape[-1] != 7:
        raise ValueError(f"pose must end in 7 values (xyz + quat xyzw), got shape {p.shape}")
    return p


def pose_to_matrix(pose: np.ndarray) -> np.ndarray:
    """(…, 7) xyz + quat xyzw → (…, 4, 4) homogeneous transform."""
    p = _as_poses(pose)
    out = np.zeros(p.shape[:-1] + (4, 4))
    out[..., :3, :3] = Rotation.from_quat(p[..., 3:].reshape(-1, 4)).as_matrix().reshape(p.shape[:-1] + (3, 3))
    out[..., :3, 3] = p[..., :3]
    out[..., 3, 3] = 1.0
    return out


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    """(…, 4, 4) → (…, 7) with the quaternion's w made non-negative (one canonical sign)."""
    T = np.asarray(T, dtype=np.float64)
    q = Rotation.from_matrix(T[..., :3, :3].reshape(-1, 3, 3)).as_quat().reshape(T.shape[:-2] + (4,))
    q = canonical_quat(q)
    return np.concatenate([T[..., :3, 3], q], axis=-1)


def canonical_quat(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return np.where(q[..., 3:4] < 0, -q, q)


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    T = np.asarray(T)
    return points[..., :3] @ T[:3, :3].T + T[:3, 3]


def transform_pose(T: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Express poses given in frame b in frame a, with ``T`` = T_a_b."""
    return matrix_to_pose(np.asarray(T) @ pose_to_matrix(pose))


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position error (m) and rotation angle between orientations (rad), broadcast over leading axes."""
    a, b = _as_poses(a), _as_poses(b)
    dpos = np.linalg.norm(a[..., :3] - b[..., :3], axis=-1)
    # |<qa, qb>| is sign-invariant; the angle between rotations is 2·acos of it.
    dot = np.abs(np.sum(a[..., 3:] / np.linalg.norm(a[..., 3:], axis=-1, keepdims=True)
                        * b[..., 3:] / np.linalg.norm(b[..., 3:], axis=-1, keepdims=True), axis=-1))
    return dpos, 2.0 * np.arccos(np.clip(dot, 0.0, 1.0))


def quat_to_rot6d(q: np.ndarray) -> np.ndarray:
    """(…, 4) xyzw → (…, 6): the first two columns of the rotation matrix, column-major."""
    q = np.asarray(q, dtype=np.float64)
    m = Rotation.from_quat(q.reshape(-1, 4)).as_matrix()
    return np.concatenate([m[:, :, 0], m[:, :, 1]], axis=1).reshape(q.shape[:-1] + (6,))


def rot6d_to_matrix(r6: np.ndarray) -> np.ndarray:
    """Gram–Schmidt back to a proper rotation (Zhou et al. 2019); tolerates non-orthonormal input."""
    r6 = np.asarray(r6, dtype=np.float64)
    a1, a2 = r6[..., :3], r6[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.linalg.norm(a2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def rot6d_to_quat(r6: np.ndarray) -> np.ndarray:
    r6 = np.asarray(r6, dtype=np.float64)
    m = rot6d_to_matrix(r6).reshape(-1, 3, 3)
    return canonical_quat(Rotation.from_matrix(m).as_quat()).reshape(r6.shape[:-1] + (4,))


def pose7_to_9(pose: np.ndarray) -> np.ndarray:
    """xyz + quat xyzw → xyz + rot6d, the networks' pose representation."""
    p = _as_poses(pose)
    return np.concatenate([p[..., :3], quat_to_rot6d(p[..., 3:])], axis=-1)


def pose9_to_7(pose9: np.ndarray) -> np.ndarray:
    p = np.asarray(pose9, dtype=np.float64)
    if p.shape[-1] != 9:
        raise ValueError(f"pose9 must end in 9 values (xyz + rot6d), got shape {p.shape}")
    return np.concatenate([p[..., :3], rot6d_to_quat(p[..., 3:])], axis=-1)
