"""Depth back-projection, crop, FPS and pose utilities (policies/geometry.py)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from policies import geometry as g

K = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])


def _camera_looking_down(height=1.0):
    # Camera 1 m above the base origin, optical axis pointing down (-z of base), rotated about it.
    R = Rotation.from_euler("x", np.pi) * Rotation.from_euler("z", 0.3)
    T = np.eye(4)
    T[:3, :3] = R.as_matrix()
    T[:3, 3] = [0.5, 0.1, height]
    return T


def test_back_projection_of_a_plane_is_exact():
    # A horizontal plane at base z = 0.2 seen by a downward camera at z = 1.0 has depth 0.8 m everywhere.
    scale = 0.0005
    depth = np.full((48, 64), int(round(0.8 / scale)), dtype=np.uint16)
    depth[0, 0] = 0  # no return: must be dropped
    k = K.copy()
    k[0, 2], k[1, 2] = 32, 24
    T = _camera_looking_down()
    pts = g.depth_to_points(depth, scale, k, T)
    assert pts.shape == (48 * 64 - 1, 3)
    np.testing.assert_allclose(pts[:, 2], 0.2, atol=1e-6)
    # Pixel (u, v) = (cx + 60, cy) lies 60/fx * z to the camera's right: check against the transform.
    u, v = 32 + 20, 24
    idx = v * 64 + u - 1  # one pixel before it was dropped
    cam = np.array([(u - 32) * 0.8 / 600.0, 0.0, 0.8, 1.0])
    np.testing.assert_allclose(pts[idx], (T @ cam)[:3], atol=1e-6)


def test_rgb_stride_and_max_depth():
    depth = np.zeros((4, 6), dtype=np.uint16)
    depth[::2, ::2] = 1000
    depth[0, 0] = 5000
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    pts = g.depth_to_points(depth, 0.001, K, np.eye(4), rgb=rgb, stride=2, max_depth=2.0)
    assert pts.shape == (5, 6)  # 6 pixels at stride 2, the 5 m one cut by max_depth
    np.testing.assert_allclose(pts[:, 4], 1.0)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="depth must be"):
        g.depth_to_points(np.zeros(5), 0.001, K, np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        g.depth_to_points(np.zeros((2, 2)), 0.001, K, np.eye(3))
    with pytest.raises(ValueError, match="empty"):
        g.farthest_point_sample(np.zeros((0, 3)), 8)


def test_crop_keeps_only_points_inside_the_box():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (5000, 6)).astype(np.float32)
    out = g.crop(pts, (-0.5, -0.5, 0), (0.5, 0.5, 1))
    assert out.shape[1] == 6 and 0 < len(out) < len(pts)
    assert np.all(out[:, :3] >= [-0.5, -0.5, 0]) and np.all(out[:, :3] <= [0.5, 0.5, 1])
    inside = np.all((pts[:, :3] >= [-0.5, -0.5, 0]) & (pts[:, :3] <= [0.5, 0.5, 1]), axis=1)
    assert len(out) == inside.sum()


@pytest.mark.parametrize("method", ["torch", "open3d"])
def test_fps_returns_distinct_well_spread_points(method):
    rng = np.random.default_rng(1)
    # A dense blob plus 8 far outliers: FPS must pick every outlier, random sampling almost never does.
    blob = rng.normal(0, 0.01, (3000, 3))
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    pts = np.concatenate([blob, corners]).astype(np.float32)
    out = g.farthest_point_sample(pts, 64, seed=3, method=method)
    assert out.shape == (64, 3)
    assert len(np.unique(out, axis=0)) == 64
    for c in corners:
        assert np.any(np.all(np.isclose(out, c), axis=1)), f"corner {c} missing"
    # Every output is an input point.
    assert all(np.any(np.all(pts == p, axis=1)) for p in out[:10])


def test_fps_pads_small_clouds_and_keeps_extra_columns():
    pts = np.arange(30, dtype=np.float32).reshape(5, 6)
    out = g.farthest_point_sample(pts, 12)
    assert out.shape == (12, 6)
    assert set(map(tuple, out)) == set(map(tuple, pts))


def test_batched_torch_fps_matches_per_cloud():
    import torch

    rng = np.random.default_rng(2)
    clouds = torch.as_tensor(rng.random((3, 500, 3)), dtype=torch.float32)
    idx = g.fps_indices_torch(clouds, 32)
    for b in range(3):
        np.testing.assert_array_equal(idx[b].numpy(), g.fps_indices_torch(clouds[b:b + 1], 32)[0].numpy())


def test_voxel_downsample_one_point_per_cell():
    pts = np.array([[0.001, 0, 0], [0.002, 0, 0], [0.011, 0, 0], [0.5, 0.5, 0.5]])
    out = g.voxel_downsample(pts, 0.01)
    np.testing.assert_allclose(out, pts[[0, 2, 3]])


def test_pose_matrix_round_trip_and_transform():
    rng = np.random.default_rng(3)
    poses = np.concatenate([rng.normal(size=(20, 3)), Rotation.random(20, random_state=4).as_quat()], axis=1)
    back = g.matrix_to_pose(g.pose_to_matrix(poses))
    dpos, dang = g.pose_error(poses, back)
    assert dpos.max() < 1e-12 and dang.max() < 1e-6
    T = g.pose_to_matrix(poses[0])
    moved = g.transform_pose(T, poses[1])
    np.testing.assert_allclose(g.pose_to_matrix(moved), T @ g.pose_to_matrix(poses[1]), atol=1e-12)
    np.testing.assert_allclose(g.transform_points(T, np.zeros((1, 3)))[0], poses[0, :3])


def test_pose_error_ignores_quaternion_sign():
    p = np.array([0.1, 0.2, 0.3, 0, 0, np.sin(0.25), np.cos(0.25)])
    q = p.copy()
    q[3:] *= -1
    q[0] += 0.003
    dpos, dang = g.pose_error(p, q)
    assert dpos == pytest.approx(0.003) and dang == pytest.approx(0.0, abs=1e-7)
    r = p.copy()
    r[3:] = Rotation.from_euler("z", 0.5 + 0.2).as_quat()
    assert g.pose_error(p, r)[1] == pytest.approx(0.2, abs=1e-9)


def test_rot6d_round_trip_and_sign_free():
    q = Rotation.random(50, random_state=5).as_quat()
    r6 = g.quat_to_rot6d(q)
    np.testing.assert_allclose(r6, g.quat_to_rot6d(-q), atol=1e-12)  # q and -q: same 6-D vector
    back = g.rot6d_to_quat(r6)
    assert g.pose_error(np.c_[np.zeros((50, 3)), q], np.c_[np.zeros((50, 3)), back])[1].max() < 1e-6
    # A perturbed (non-orthonormal) 6-D vector still maps to a proper rotation.
    m = g.rot6d_to_matrix(r6 + 0.05)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-9)
    p9 = g.pose7_to_9(np.c_[np.ones((50, 3)), q])
    assert p9.shape == (50, 9)
    assert g.pose_error(g.pose9_to_7(p9), np.c_[np.ones((50, 3)), q])[1].max() < 1e-6


def test_cloud_pipeline_gives_fixed_size_cropped_cloud():
    scale = 0.001
    depth = np.full((120, 160), 800, dtype=np.uint16)
    depth[40:80, 60:100] = 700  # a 10 cm box on the table
    k = np.array([[150.0, 0, 80], [0, 150.0, 60], [0, 0, 1]])
    cloud = g.cloud_from_depth(depth, scale, k, _camera_looking_down(), (0, -1, 0.15), (1, 1, 0.6), n=256)
    assert cloud.shape == (256, 3) and cloud.dtype == np.float32
    assert cloud[:, 2].min() >= 0.15


@pytest.mark.parametrize("table_z", [-0.02, 0.0, 0.02])
def test_cloud_floor_follows_the_table_top(table_z):
    """The crop's floor is measured from the table top it finds: a table 2 cm above or below the demos'
    neither floods the cloud nor hides a 4 cm cube standing on it."""
    scale = 0.001
    depth = np.full((120, 160), round((1.0 - table_z) / scale), dtype=np.uint16)
    depth[50:70, 70:90] = round((1.0 - table_z - 0.04) / scale)  # the cube's top face
    k = np.array([[150.0, 0, 80], [0, 150.0, 60], [0, 0, 1]])
    pts = g.depth_to_points(depth, scale, k, _camera_looking_down())
    assert g.table_height(pts, (0, -1, 0.02), (1, 1, 0.6)) == pytest.approx(table_z, abs=0.002)
    cloud = g.cloud_from_depth(depth, scale, k, _camera_looking_down(), (0, -1, 0.02), (1, 1, 0.6), n=128)
    # Only the cube's top remains, whatever the table's height.
    np.testing.assert_allclose(cloud[:, 2], table_z + 0.04, atol=0.002)


def test_no_table_in_view_keeps_the_fixed_floor():
    pts = np.random.default_rng(0).uniform([0, -1, -0.08], [1, 1, 0.6], (5000, 3))
    assert g.table_height(pts, (0, -1, 0.02), (1, 1, 0.6)) is None  # no dominant surface
    kept, h = g.crop_above_table(pts, (0, -1, 0.02), (1, 1, 0.6))
    assert h == 0.0 and kept[:, 2].min() >= 0.02
