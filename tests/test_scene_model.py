"""SceneModel events and the 3D view's mouse bindings, without Qt or GL (widgets/scene/model.py,
widgets/scene/mouse.py). The projector is a top-down orthographic camera: 1 mm = 1 px, higher z
is nearer."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from widgets.scene import mouse
from widgets.scene.model import SceneModel

ROOT = Path(__file__).resolve().parents[1]


class TopDown:
    def to_canvas(self, xyz):
        return np.asarray(xyz, float)[:, :2] * 1000.0

    def view_depth(self, xyz):
        return -np.asarray(xyz, float)[:, 2]


def _record(model):
    log = []
    for name in model.events.NAMES:
        getattr(model.events, name).connect(lambda *a, n=name: log.append((n, a)))
    return log


def _names(log):
    return [n for n, _ in log]


def _grid_model(**kw):
    """A 0.2 m × 0.2 m plane at z = 0 on a 1 cm grid, plus one point 5 cm above (0.1, 0.1)."""
    g = np.stack(np.meshgrid(np.arange(0, 0.2001, 0.01), np.arange(0, 0.2001, 0.01)), -1).reshape(-1, 2)
    xyz = np.r_[np.c_[g, np.zeros(len(g))], [[0.1, 0.1, 0.05]]]
    m = SceneModel(spline_fn=lambda pts: np.repeat(pts, 2, axis=0), **kw)
    m.set_cloud(xyz)
    return m


def test_model_and_bindings_import_no_qt():
    code = ("import sys; import widgets.scene.model, widgets.scene.mouse, widgets.scene.geometry; "
            "bad = [m for m in sys.modules if m.startswith(('PySide6', 'vispy'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_cloud_event_and_generation():
    m = SceneModel(lod_points=10)
    log = _record(m)
    xyz = np.random.default_rng(0).random((50, 3))
    xyz[3] = np.nan
    cloud = m.set_cloud(xyz)
    assert _names(log) == ["cloud"] and log[0][1][0] is cloud
    assert m.cloud_gen == 1 and m.xyz.shape == (49, 3)       # the NaN point is dropped
    assert len(cloud.lod) <= 10
    with pytest.raises(ValueError, match=r"\(N,3\)"):
        m.set_cloud(np.zeros((5, 2)))
    assert m.cloud_gen == 1 and len(m.xyz) == 49             # a bad cloud loses nothing


def test_waypoints_events_curve_and_commit():
    m = SceneModel(spline_fn=lambda pts: np.linspace(pts[0], pts[-1], 7))
    log = _record(m)
    m.set_waypoints([[0, 0, 0], [1, 0, 0]])
    assert _names(log) == ["waypoints", "curve"]              # programmatic: not committed
    assert log[1][1][0].shape == (7, 3) and m.curve.dtype == np.float32
    log.clear()
    m.add_waypoint([1, 1, 0])
    m.move_waypoint(0, [0, 0, 1])
    m.remove_waypoint(1)
    assert _names(log) == ["waypoints", "curve"] * 3
    np.testing.assert_allclose(m.waypoints(), [[0, 0, 1], [1, 1, 0]])
    log.clear()
    m.commit_waypoints()
    assert _names(log) == ["waypoints_committed"]
    m.set_waypoints([[0, 0, 0]])
    assert m.curve.shape == (0, 3)                           # one waypoint: no curve
    m.set_spline_fn(lambda pts: np.zeros((3, 3)))
    assert m.curve.shape == (0, 3)
    m.waypoints()[0][0] = 9.0                                # callers get copies
    assert m.waypoints()[0][0] == 0.0


def test_crop_commit_only_on_change_and_bad_box_rejected():
    m = SceneModel()
    log = _record(m)
    m.set_crop([0, 0, 0], [1, 1, 1])
    assert _names(log) == ["crop", "crop_committed"]
    log.clear()
    assert not m.set_crop([0, 0, 0], [1, 1, 1])
    assert _names(log) == ["crop"]                           # unchanged: visuals only
    log.clear()
    m.set_crop([0, 0, 0], [2, 1, 1], commit=False)
    assert _names(log) == ["crop"]
    with pytest.raises(ValueError, match="lo < hi"):
        m.set_crop([0, 0, 0], [1, 0, 1])
    np.testing.assert_allclose(m.crop()[1], [2, 1, 1])       # the last valid box stays


def test_display_settings_and_overlays():
    m = SceneModel()
    log = _record(m)
    m.set_color_mode("height")
    m.set_point_size(3)
    m.set_clip_to_crop(1)
    assert log == [("color_mode", ("height",)), ("point_size", (3.0,)), ("clip_to_crop", (True,))]
    with pytest.raises(ValueError, match="colour mode"):
        m.set_color_mode("depth")
    with pytest.raises(ValueError, match="point size"):
        m.set_point_size(0)
    assert m.color_mode == "height" and m.point_size == 3.0
    m.set_keypoint([np.nan, 0, 0])
    assert m.keypoint is None
    m.set_keypoint([0.1, 0.2, 0.3])
    assert m.keypoint.shape == (3,)
    m.set_chunk(np.zeros((0, 3)))
    assert m.chunk is None
    m.set_chunk(np.ones((4, 3)))
    m.set_trajectory(np.ones((1, 3)))
    assert m.chunk.shape == (4, 3) and m.trajectory is None
    assert _names(log)[-5:] == ["keypoint", "keypoint", "chunk", "chunk", "trajectory"]


def test_ctrl_click_adds_a_snapped_waypoint_and_picks_the_front_point():
    m = _grid_model()
    proj = TopDown()
    log = _record(m)
    r = mouse.press(m, proj, (101.0, 99.0), button=1, ctrl=True, crop_editable=False)
    assert r.handled and r.drag is None
    # (0.1, 0.1) has the plane point and one 5 cm above it: the one in front (higher) wins.
    np.testing.assert_allclose(m.xyz[r.picked], [0.1, 0.1, 0.05])
    np.testing.assert_allclose(m.waypoints(), [[0.1, 0.1, 0.05]])
    assert "waypoints_committed" in _names(log)
    # Nothing under the cursor: handled (no orbit), nothing added.
    r = mouse.press(m, proj, (900.0, 900.0), button=1, ctrl=True, crop_editable=False)
    assert r.handled and r.picked is None and len(m.waypoints()) == 1


def test_drag_moves_a_waypoint_over_the_cloud_and_commits_on_release():
    m = _grid_model()
    proj = TopDown()
    m.set_waypoints([[0.05, 0.05, 0.0]])
    log = _record(m)
    r = mouse.press(m, proj, (52.0, 48.0), button=1, ctrl=False, crop_editable=True)
    assert r.handled and r.drag.kind == "waypoint" and r.drag.index == 0
    for p in [(80.0, 80.0), (150.0, 121.0)]:
        assert mouse.move(m, proj, r.drag, p)
    assert "waypoints_committed" not in _names(log)
    assert mouse.release(m, r.drag)
    assert _names(log)[-1] == "waypoints_committed"
    np.testing.assert_allclose(log[-1][1][0], [[0.15, 0.12, 0.0]])
    # Without a drag the bindings leave the events to the camera.
    assert not mouse.move(m, proj, None, (0, 0)) and not mouse.release(m, None)
    assert not mouse.press(m, proj, (10.0, 190.0), button=1, ctrl=False, crop_editable=False).handled


def test_right_click_removes_a_waypoint():
    m = _grid_model()
    m.set_waypoints([[0.05, 0.05, 0.0], [0.15, 0.15, 0.0]])
    committed = []
    m.events.waypoints_committed.connect(committed.append)
    assert mouse.press(m, TopDown(), (150.0, 150.0), button=2, ctrl=False, crop_editable=True).handled
    np.testing.assert_allclose(committed[-1], [[0.05, 0.05, 0.0]])
    assert not mouse.press(m, TopDown(), (100.0, 100.0), button=2, ctrl=False, crop_editable=True).handled


def test_dragging_a_crop_face_moves_that_face_only():
    m = _grid_model()
    proj = TopDown()
    m.set_crop([0.0, 0.0, -0.1], [0.2, 0.2, 0.1], commit=False)
    committed = []
    m.events.crop_committed.connect(lambda lo, hi: committed.append((lo, hi)))
    # +x face handle at (0.2, 0.1): drag 30 px right (and some off-axis, ignored).
    assert mouse.press(m, proj, (100.0, 100.0), 1, False, crop_editable=False).drag is None   # hidden box
    r = mouse.press(m, proj, (200.0, 100.0), 1, False, crop_editable=True)
    assert r.drag.kind == "crop" and r.drag.index == 1
    mouse.move(m, proj, r.drag, (230.0, 140.0))
    assert not committed
    np.testing.assert_allclose(m.crop_hi, [0.23, 0.2, 0.1])
    mouse.release(m, r.drag)
    np.testing.assert_allclose(committed[-1][0], [0.0, 0.0, -0.1])
    np.testing.assert_allclose(committed[-1][1], [0.23, 0.2, 0.1])
    # The -x face dragged past the +x face stops 1 cm short of it.
    r = mouse.press(m, proj, (0.0, 100.0), 1, False, crop_editable=True)
    mouse.move(m, proj, r.drag, (900.0, 100.0))
    np.testing.assert_allclose(m.crop_lo[0], 0.22)
    # A z face seen from straight above has no screen direction: the drag does nothing.
    drag = mouse.Drag("crop", 5, np.array([100.0, 100.0]), *m.crop())
    assert mouse.dragged_crop(proj, drag, (150.0, 150.0)) is None
