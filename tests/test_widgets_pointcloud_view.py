"""PointCloudView: geometry helpers (no GL) and, under an X server, the real GL view — pixels of
the lean point shader, colour modes, crop clipping, LOD switching, picking and editing by mouse.

The GL part runs in a child process with Qt's xcb platform: the suite itself runs on Qt's
``offscreen`` platform, which has no GL widgets (DESIGN.md), and a QApplication cannot switch.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from gl_child import child_app, run_gl_checks
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _import_helpers():
    # Importing the module needs PySide6 + vispy but no GL context.
    from widgets import pointcloud_view as pv
    return pv


def test_pack_rgb_roundtrip():
    pv = _import_helpers()
    rgb = np.random.default_rng(0).integers(0, 256, (5000, 3)).astype(np.uint8)
    rgb[:2] = [[0, 0, 0], [255, 255, 255]]
    packed = pv.pack_rgb(rgb)
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(pv.unpack_rgb(packed), rgb)


def test_voxel_decimate_hits_target_and_covers_the_cloud():
    pv = _import_helpers()
    rng = np.random.default_rng(1)
    # A depth-camera-like surface: a table plane plus a box, 300 k points, denser near one side.
    u = rng.random((300_000, 2)) ** np.array([1.0, 2.0])
    xyz = np.c_[u[:, 0] * 0.8, u[:, 1] * 0.6 - 0.3, np.zeros(len(u))]
    box = (np.abs(xyz[:, 0] - 0.4) < 0.05) & (np.abs(xyz[:, 1]) < 0.05)
    xyz[box, 2] = 0.05
    idx = pv.voxel_decimate(xyz, 100_000)
    assert 80_000 <= len(idx) <= 125_000
    assert len(np.unique(idx)) == len(idx)
    # Every original point has a kept neighbour within a few mm: nothing is lost spatially,
    # unlike a random subset of the same size, which leaves holes in the sparse region.
    worst = cKDTree(xyz[idx]).query(xyz)[0].max()
    rand = rng.choice(len(xyz), len(idx), replace=False)
    worst_random = cKDTree(xyz[rand]).query(xyz)[0].max()
    assert worst < 0.006 and worst < worst_random
    assert len(pv.voxel_decimate(xyz[:1000], 100_000)) == 1000


def test_view_draws_the_policys_curve_through_waypoints():
    """The view's default curve is policies.waypoints.position_curve (one implementation, PCHIP +
    slerp), which passes the waypoints and equals the policy's guidance sampled at the same times."""
    from policies.waypoints import Waypoint, WaypointTrajectory, position_curve

    pv = _import_helpers()
    wps = np.array([[0.3, 0, 0.3], [0.45, 0.1, 0.12], [0.45, 0.1, 0.05], [0.6, -0.2, 0.15]])
    curve = pv.policy_curve(wps, samples=400)
    np.testing.assert_array_equal(curve, position_curve(wps, samples=400))
    assert curve.shape == (400, 3)
    np.testing.assert_allclose(curve[0], wps[0], atol=1e-9)
    np.testing.assert_allclose(curve[-1], wps[-1], atol=1e-9)
    for w in wps[1:-1]:
        assert np.linalg.norm(curve - w, axis=1).min() < 0.003
    # The guidance the policy is conditioned on, at each drawn sample's time, is that sample.
    traj = WaypointTrajectory([Waypoint(np.r_[p, 1.0, 0, 0, 0]) for p in wps])
    ts = np.linspace(traj.t_start, traj.t_end, 400)
    h = 0.05
    guide = np.array([traj.guidance(t - h, horizon_s=h, n=1)[0, :3] for t in ts[1:]])
    np.testing.assert_allclose(curve[1:], guide, rtol=0, atol=1e-12)
    # PCHIP never overshoots a descent: nothing below the lowest waypoint (make_interp_spline dipped 5 mm).
    assert curve[:, 2].min() >= wps[:, 2].min() - 1e-9
    assert position_curve(wps[:1]).shape == (0, 3)
    assert position_curve(np.array([wps[0], wps[0]])).shape == (0, 3)   # duplicate points
    assert position_curve(wps[:2], 10).shape == (10, 3)


def test_box_edges_and_handles():
    pv = _import_helpers()
    lo, hi = np.array([0.0, -0.5, 0.0]), np.array([1.0, 0.5, 0.25])
    e = pv.box_edges(lo, hi).reshape(12, 2, 3)
    lengths = np.sort(np.linalg.norm(e[:, 0] - e[:, 1], axis=1))
    np.testing.assert_allclose(lengths, [0.25] * 4 + [1.0] * 8)
    h = pv.box_face_handles(lo, hi)
    np.testing.assert_allclose(h[1], [1.0, 0.0, 0.125])   # +x face
    np.testing.assert_allclose(h[4], [0.5, 0.0, 0.0])     # -z face


def test_pick_prefers_the_point_in_front():
    pv = _import_helpers()
    xy = np.array([[10.0, 10.0], [11.0, 10.0], [50.0, 50.0], [12.0, 10.0]])
    depth = np.array([2.0, 1.0, 0.1, 0.99])
    # Point 0 is exactly under the cursor but 1 m behind a surface: hidden.
    assert pv.pick_nearest_on_screen(xy, depth, (10, 10), 3.0) == 1
    # Within the depth tolerance the closest on screen wins over the front-most.
    assert pv.pick_nearest_on_screen(xy, depth, (11.9, 10), 3.0) == 3
    assert pv.pick_nearest_on_screen(xy, depth, (30, 30), 3.0) is None


def test_gl_window_choice(qapp, monkeypatch):
    """Native QOpenGLWindow on xcb, QOpenGLWidget elsewhere; ACTSTUDIO_GL_WINDOW forces one."""
    from widgets.scene import native_canvas as nc

    monkeypatch.delenv(nc.ENV, raising=False)
    assert not nc.native_window_wanted()            # the suite runs on Qt's offscreen platform
    monkeypatch.setenv(nc.ENV, "native")
    assert nc.native_window_wanted()
    monkeypatch.setenv(nc.ENV, " Widget ")
    assert not nc.native_window_wanted()
    monkeypatch.setenv(nc.ENV, "glx")
    with pytest.raises(ValueError, match="'native' or 'widget'"):
        nc.native_window_wanted()


@pytest.mark.gui
def test_gl_view_renders_and_edits():
    r = run_gl_checks(__file__, timeout=240)
    # On xcb the view draws into a native GL window, and grab() still shows its pixels.
    assert r["native_window"] and r["grab_center"][0] > 180 and r["grab_center"][1] < 80, r
    # Lean shader draws the RGB of the points; height mode recolours without new data.
    assert r["rgb_center"][0] > 180 and r["rgb_center"][1] < 80, r
    assert r["height_center"] != r["rgb_center"]
    # Clipping to a crop box that excludes the plane leaves the background.
    assert r["clipped_center"] == r["background"]
    # LOD on motion, full cloud at rest.
    assert r["lod_while_moving"] and 30_000 <= r["lod_drawn"] <= 50_000
    assert not r["lod_after_rest"] and r["full_drawn"] == 300_000
    # The moving subset exists before the first move (a stride at once, the voxel one from a
    # worker thread); the UI thread never decimates, and set_cloud keeps the GL program.
    assert r["kind_after_set_cloud"] == "stride" and r["stride_drawn_on_first_move"] == 50_000
    assert r["kind_later"] == "voxel" and r["voxel_builds"] >= 1 and not r["decimated_on_ui_thread"]
    assert r["same_program"]
    # Full detail returns only after the camera has rested LOD_REST_MS (150 ms).
    assert r["rest_delay"] >= 150 and r["rest_ms"] >= 0.93 * r["rest_delay"], r
    # Frames slower than that (a loaded box) stretch the delay to 1.5 frames, capped at 1 s, so
    # a drag does not flip to the full cloud between two of its moves; pauses do not count.
    assert r["delay_300ms_frames"] == 450 and r["delay_900ms_frames"] == 1000
    assert r["delay_after_pause"] == 150
    # A cloud replaced before the build delay never builds (a live stream keeps the stride).
    assert r["builds_while_streaming"] == 0 and r["kind_streaming"] == "stride"
    # Ctrl+click adds a waypoint snapped onto the cloud at the clicked pixel (1 mm grid).
    assert r["added"] == 1 and r["added_err_m"] < 0.008
    # Dragging the waypoint moves it over the cloud without orbiting the camera.
    assert r["moved_err_m"] < 0.008 and r["camera_unchanged"]
    assert r["removed"] == 0
    # Dragging the +x face handle grows the crop box along x only; spin boxes emit too.
    assert r["crop_dx"] > 0.02 and r["crop_other_unchanged"]
    assert r["spin_crop_lo_z"] == pytest.approx(0.1)


def _gl_checks() -> dict:
    import time

    app, pump = child_app()
    from PySide6 import QtCore
    from vispy.util import keys

    from widgets.pointcloud_view import PointCloudView

    import threading

    import widgets.scene.geometry as pvm   # the LOD worker calls geometry.voxel_decimate

    decimated_on = []
    real_decimate = pvm.voxel_decimate

    def recording_decimate(*a, **k):
        decimated_on.append(threading.get_ident())
        return real_decimate(*a, **k)

    pvm.voxel_decimate = recording_decimate
    view = PointCloudView(lod_points=50_000)
    view.resize(900, 700)
    view.show()
    view.grid.visible = False
    view.axes.visible = False
    view.set_crop_visible(False)
    # 300 k points: a red square plane at z = 0.1 (600 × 500 grid).
    g = np.stack(np.meshgrid(np.linspace(0, 0.6, 600), np.linspace(-0.25, 0.25, 500)), -1).reshape(-1, 2)
    xyz = np.c_[g, np.full(len(g), 0.1)].astype(np.float32)
    xyz[:, 2] += 0.05 * (g[:, 0] > 0.3)          # a step, so height colours differ
    rgb = np.tile(np.array([[220, 30, 40]], np.uint8), (len(xyz), 1))
    out = {}
    program = view.points.shared_program
    # Streaming: new clouds every ~50 ms (faster than the 250 ms build delay) start no build.
    for k in range(6):
        view.set_cloud(xyz + [0, 0, 0.001 * k], rgb)
        pump(0.02)
    out["builds_while_streaming"] = len(decimated_on)
    out["kind_streaming"] = view.lod_kind
    view.set_cloud(xyz, rgb)
    out["kind_after_set_cloud"] = view.lod_kind
    view.view.camera.azimuth = view.view.camera.azimuth + 1
    out["stride_drawn_on_first_move"] = view.points.drawn_points if view.lod_active else 0
    out["same_program"] = view.points.shared_program is program
    view.wait_lod(30.0)
    out["kind_later"] = view.lod_kind
    out["voxel_builds"] = len(decimated_on)
    out["decimated_on_ui_thread"] = threading.get_ident() in decimated_on
    view.set_point_size(3)
    view.reset_view()
    pump(0.4)
    h, w = view.canvas.size[1], view.canvas.size[0]

    (probe,), _ = view._scene_to_canvas(np.array([[0.15, 0.0, 0.1]]))

    def center_px():
        img = view.canvas.render()
        return [int(v) for v in img[int(round(probe[1])), int(round(probe[0])), :3]]

    out["rgb_center"] = center_px()
    out["native_window"] = view.native_window
    grab = view.grab().toImage()
    at = view.canvas_widget.mapTo(view, QtCore.QPoint(int(round(probe[0])), int(round(probe[1]))))
    c = grab.pixelColor(at)
    out["grab_center"] = [c.red(), c.green(), c.blue()]
    view.set_color_mode("height")
    out["height_center"] = center_px()
    view.set_color_mode("rgb")
    view.set_crop([0.7, -1, -1], [1.0, 1, 1], emit=False)
    view.set_clip_to_crop(True)
    out["clipped_center"] = center_px()
    bg = view.canvas.render()[2, 2, :3]
    out["background"] = [int(v) for v in bg]
    view.set_clip_to_crop(False)

    saved = list(view._fps_times)
    view._fps_times[:] = [10.0, 10.3, 10.6, 10.9]
    out["delay_300ms_frames"] = view.rest_delay_ms()
    view._fps_times[:] = [10.0, 10.9, 11.8, 12.7]
    out["delay_900ms_frames"] = view.rest_delay_ms()
    view._fps_times[:] = [10.0, 10.02, 15.0, 15.02]
    out["delay_after_pause"] = view.rest_delay_ms()
    view._fps_times[:] = saved
    view.view.camera.azimuth = view.view.camera.azimuth + 5   # camera changes synchronously
    moved = time.perf_counter()
    out["rest_delay"] = view._rest_timer.interval()
    out["lod_while_moving"] = view.lod_active
    out["lod_drawn"] = view.points.drawn_points
    for _ in range(400):                      # rest timer: 150 ms, generous on a busy box
        pump(0.005)
        if not view.lod_active:
            break
    out["rest_ms"] = (time.perf_counter() - moved) * 1000
    out["lod_after_rest"] = view.lod_active
    out["full_drawn"] = view.points.drawn_points

    emitted = []
    view.waypointsChanged.connect(lambda pts: emitted.append([p.tolist() for p in pts]))
    target = np.array([0.2, 0.05, 0.1])
    (px,), _ = view._scene_to_canvas(target[None])
    ev = view.canvas.events
    ev.mouse_press(pos=tuple(px), button=1, modifiers=(keys.CONTROL,))
    ev.mouse_release(pos=tuple(px), button=1, modifiers=(keys.CONTROL,))
    out["added"] = len(emitted[-1]) if emitted else 0
    out["added_err_m"] = float(np.linalg.norm(np.array(emitted[-1][0]) - target)) if emitted else 1.0

    az = view.view.camera.azimuth
    dest = np.array([0.45, -0.1, 0.15])
    (pd,), _ = view._scene_to_canvas(dest[None])
    press = ev.mouse_press(pos=tuple(px), button=1, modifiers=())
    last = press
    for i in range(1, 9):
        p = tuple(px + (pd - px) * i / 8)
        last = ev.mouse_move(pos=p, button=1, buttons=[1], modifiers=(), press_event=press,
                             last_event=last)
    ev.mouse_release(pos=tuple(pd), button=1, modifiers=(), press_event=press)
    out["moved_err_m"] = float(np.linalg.norm(np.array(emitted[-1][0]) - dest))
    out["camera_unchanged"] = bool(view.view.camera.azimuth == az and view.view.camera.interactive)
    ev.mouse_press(pos=tuple(pd), button=2, modifiers=())
    ev.mouse_release(pos=tuple(pd), button=2, modifiers=())
    out["removed"] = len(emitted[-1])

    crops = []
    view.cropChanged.connect(lambda lo, hi: crops.append((lo.copy(), hi.copy())))
    view.set_crop_visible(True)
    view.set_crop([0.0, -0.3, 0.0], [0.6, 0.3, 0.3], emit=False)
    lo0, hi0 = view.crop()
    from widgets.pointcloud_view import box_face_handles
    handle = box_face_handles(lo0, hi0)[1]
    (hp, hq), _ = view._scene_to_canvas(np.array([handle, handle + [0.1, 0, 0]]))
    press = ev.mouse_press(pos=tuple(hp), button=1, modifiers=())
    last = press
    for i in range(1, 6):
        last = ev.mouse_move(pos=tuple(hp + (hq - hp) * i / 5), button=1, buttons=[1], modifiers=(),
                             press_event=press, last_event=last)
    ev.mouse_release(pos=tuple(hq), button=1, modifiers=(), press_event=press)
    lo1, hi1 = crops[-1]
    out["crop_dx"] = float(hi1[0] - hi0[0])
    out["crop_other_unchanged"] = bool(np.allclose(lo1, lo0) and np.allclose(hi1[1:], hi0[1:]))
    view.crop_spins[2].setValue(0.1)
    out["spin_crop_lo_z"] = float(crops[-1][0][2])
    out["canvas"] = [w, h]
    return out


if __name__ == "__main__" and "--gl-checks" in sys.argv:
    print(json.dumps(_gl_checks()))
