"""Scene3DPanel: frame → base-frame cloud, keyframe waypoints, the policy spline through them, the
live trail and the latest-wins worker without GL; and, in a child process under xcb (Qt's offscreen
platform has no GL widgets), that the panel really draws a cloud and an EE trajectory.
"""
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from gl_child import child_app, run_gl_checks
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from widgets.scene3d_panel import (CloudRequest, CloudWorker, TrailBuffer, episode_waypoints,  # noqa: E402
                                   frame_to_cloud, waypoint_spline_fn)

K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])


def _looking_down(height: float) -> np.ndarray:
    """Camera ``height`` m above the base origin looking straight down (OpenCV z = -base z)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("x", 180, degrees=True).as_matrix()
    T[:3, 3] = [0.4, 0.0, height]
    return T


def _plane_frame(height=0.8, table_z=0.02, scale=0.001):
    depth = np.full((240, 320), round((height - table_z) / scale), np.uint16)
    depth[:10] = 0                                   # no-return rows must vanish
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, :160] = [200, 30, 40]
    rgb[:, 160:] = [20, 40, 220]
    return depth, rgb, scale


def test_frame_to_cloud_puts_a_plane_at_its_base_frame_height():
    depth, rgb, scale = _plane_frame()
    T = _looking_down(0.8)
    xyz, col = frame_to_cloud(depth, rgb, scale, K, T, stride=2)
    assert xyz.dtype == np.float32 and col.dtype == np.uint8
    assert len(xyz) == 115 * 160                      # stride 2 over 230 valid rows × 320 columns
    np.testing.assert_allclose(xyz[:, 2], 0.02, atol=1e-4)
    # A camera turned 180° about x keeps its x axis: the red image-left half lies at base x < 0.4.
    red = col[:, 0] > 100
    assert np.all(xyz[red, 0] < 0.4) and np.all(xyz[~red, 0] >= 0.4 - 1e-6)
    assert set(map(tuple, np.unique(col, axis=0))) == {(200, 30, 40), (20, 40, 220)}
    # Crop keeps exactly the points inside the box, colours ride along.
    xyz_c, col_c = frame_to_cloud(depth, rgb, scale, K, T, lo=(0.4, -1, -1), hi=(1, 1, 1), stride=2)
    assert len(xyz_c) == int((xyz[:, 0] >= 0.4).sum()) and np.all(col_c[:, 2] == 220)
    assert frame_to_cloud(depth, None, scale, K, T)[1] is None


def test_frame_to_cloud_rejects_misaligned_rgb():
    depth, rgb, scale = _plane_frame()
    with pytest.raises(ValueError, match="not aligned"):
        frame_to_cloud(depth, rgb[:100], scale, K, _looking_down(0.8))


def _episode(n=60):
    t = np.arange(n) / 20.0
    s = np.linspace(0, 1, n)
    xyz = np.c_[0.3 + 0.2 * s, 0.1 * np.sin(3 * s), 0.3 - 0.25 * np.sin(np.pi * s)]
    quat = Rotation.from_euler("z", (40 * s)[:, None], degrees=True).as_quat()
    grip = np.ones(n)
    grip[20:44] = 0.0                          # closed from the grasp keyframe to the release one
    return SimpleNamespace(time=t, ee_pose=np.c_[xyz, quat], gripper=grip,
                           keyframes=[(20, "grasp"), (44, "release")])


def test_keyframes_become_waypoints_at_the_ee_positions():
    ep = _episode()
    wps = episode_waypoints(ep)
    assert [w.t for w in wps] == pytest.approx([0.0, 1.0, 2.2, 2.95])   # first, keyframes, last
    np.testing.assert_allclose([w.pose[:3] for w in wps], ep.ee_pose[[0, 20, 44, 59], :3])
    assert [w.gripper for w in wps] == [1.0, 0.0, 1.0, 1.0]
    # Without recorded keyframes, the gripper transitions are the keyframes.
    ep.keyframes = []
    ep.gripper[:] = 1.0
    ep.gripper[25:35] = 0.0
    assert [round(w.t, 2) for w in episode_waypoints(ep)] == [0.0, 1.25, 1.75, 2.95]


def test_spline_passes_through_the_waypoints_and_follows_edits():
    ep = _episode()
    wps = episode_waypoints(ep)
    fn = waypoint_spline_fn(wps, samples=400)
    xyz = np.array([w.pose[:3] for w in wps])
    curve = fn(xyz)
    assert curve.shape == (400, 3)
    np.testing.assert_allclose(curve[0], xyz[0], atol=1e-9)
    np.testing.assert_allclose(curve[-1], xyz[-1], atol=1e-9)
    for p in xyz[1:-1]:
        assert np.linalg.norm(curve - p, axis=1).min() < 0.003
    # A moved waypoint bends the curve through its new place; an added one (times re-derived) too.
    moved = xyz.copy()
    moved[1] += [0.0, 0.08, 0.05]
    assert np.linalg.norm(fn(moved) - moved[1], axis=1).min() < 0.003
    added = np.insert(xyz, 2, [0.5, -0.1, 0.2], axis=0)
    assert np.linalg.norm(fn(added) - added[2], axis=1).min() < 0.003
    assert fn(xyz[:1]).shape == (0, 3)


def test_trail_keeps_the_last_seconds_once_per_tick():
    trail = TrailBuffer(10.0)
    for i in range(60):                        # 15 s at 4 Hz (exact binary stamps), each tick seen twice
        trail.add(i * 0.25, [i, 0, 0])
        trail.add(i * 0.25, [i, 0, 0])
    pts = trail.points()
    assert len(pts) == 41 and pts[0, 0] == 19 and pts[-1, 0] == 59
    trail.add(100.0, [np.nan, 0, 0])
    assert len(trail.points()) == 41


def test_worker_converts_off_thread_latest_wins_and_rate_capped(qapp):
    depth, rgb, scale = _plane_frame()
    worker = CloudWorker(stride=2, max_rate_hz=5.0)
    got, errors = [], []
    worker.cloudReady.connect(lambda xyz, col, key: got.append((key, len(xyz), time.monotonic())))
    worker.failed.connect(errors.append)
    try:
        t0 = time.monotonic()
        for i in range(30):                   # a 30 Hz camera for one second
            worker.submit(CloudRequest(depth, rgb, scale, K, _looking_down(0.8), key=i), (-5,) * 3, (5,) * 3)
            qapp.processEvents()
            time.sleep(1 / 30)
        assert time.monotonic() - t0 < 1.6    # submitting never waited for a conversion
        deadline = time.monotonic() + 5
        while (not got or got[-1][0] != 29) and time.monotonic() < deadline:
            qapp.processEvents()
            time.sleep(0.01)
        worker.submit(CloudRequest(depth[:5], rgb, scale, K, _looking_down(0.8), key="bad"), (-5,) * 3, (5,) * 3)
        deadline = time.monotonic() + 3
        while not errors and time.monotonic() < deadline:
            qapp.processEvents()
            time.sleep(0.01)
    finally:
        worker.stop()
    keys = [k for k, _, _ in got]
    assert keys[-1] == 29 and keys == sorted(keys)          # newest frame always shown last
    assert len(got) <= 8 and worker.replaced >= 20          # ~5/s, stale frames dropped not queued
    gaps = np.diff([t for _, _, t in got])
    assert np.all(gaps > 0.15), gaps
    assert all(n == 115 * 160 for _, n, _ in got)
    assert errors and errors[0].startswith("3D view:") and "\n" not in errors[0]


# ------------------------------------------------------------------------------------------------
# GL: in a child process on Qt's xcb platform
# ------------------------------------------------------------------------------------------------


@pytest.mark.gui
def test_gl_panel_shows_cloud_and_trajectory():
    r = run_gl_checks(__file__)
    assert r["points"] == r["expected_points"] > 10_000
    assert r["red_px"] > 2000 and r["blue_px"] > 2000           # both halves of the plane drawn
    assert r["trajectory_visible"] and r["trajectory_px"] > 50   # the green EE path over the cloud
    assert r["waypoints"] == 4 and r["spline_points"] >= 100
    assert r["red_px_no_cloud_area"] == 0


def _gl_checks() -> dict:
    app, pump = child_app()
    from widgets.scene3d_panel import Scene3DPanel

    panel = Scene3DPanel(max_rate_hz=10)
    panel.resize(900, 700)
    panel.show()
    v = panel.view
    v.grid.visible = False
    v.axes.visible = False
    v.set_crop_visible(False)
    shown = []
    panel.cloudShown.connect(lambda n, key: shown.append((n, key)))
    depth, rgb, scale = _plane_frame()
    panel.set_crop((-1, -1, -0.1), (2, 1, 1))
    panel.submit_frame(depth, rgb, scale, K, _looking_down(0.8), key=7)
    deadline = time.monotonic() + 10
    while not shown and time.monotonic() < deadline:
        pump(0.05)
    ep = _episode()
    panel.show_episode(ep)
    v.set_point_size(4)
    pump(0.6)
    img = v.canvas.render()[..., :3].astype(int)
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 90)
    blue = (img[..., 2] > 150) & (img[..., 0] < 60)
    spline = v.spline.pos if hasattr(v, "spline") and v.spline.pos is not None else np.zeros((0, 3))
    xyz, _ = frame_to_cloud(depth, rgb, scale, K, _looking_down(0.8))
    # The trajectory's own colour (dark→bright green) — count pixels changed by hiding it.
    v.trajectory.visible = False
    pump(0.3)
    img_no_traj = v.canvas.render()[..., :3].astype(int)
    traj_px = int((np.abs(img - img_no_traj).sum(-1) > 40).sum())
    v.trajectory.visible = True
    # Empty cloud: nothing red may remain (the cloud really is what drew those pixels).
    v.set_cloud(np.zeros((0, 3), np.float32))
    pump(0.3)
    empty = v.canvas.render()[..., :3].astype(int)
    red_empty = (empty[..., 0] > 150) & (empty[..., 1] < 80) & (empty[..., 2] < 90)
    out = {"points": shown[0][0] if shown else -1, "key": shown[0][1] if shown else None,
           "expected_points": int(len(xyz)), "red_px": int(red.sum()), "blue_px": int(blue.sum()),
           "trajectory_visible": bool(v.trajectory.visible), "trajectory_px": traj_px,
           "waypoints": len(v.waypoints()), "spline_points": int(len(spline)),
           "red_px_no_cloud_area": int(red_empty.sum())}
    panel.shutdown()
    return out


if __name__ == "__main__" and "--gl-checks" in sys.argv:
    print(json.dumps(_gl_checks()))
