"""CameraView: frames shown aspect-correct and zero-copy, depth colour map, overlays' state."""
import time

import numpy as np
import pytest
from PySide6 import QtCore, QtGui

from widgets import style
from widgets.camera_view import DEPTH_LUT, NO_DEPTH_RGB, CameraView, colorize_depth, fit_rect, rgb_qimage


def test_colorize_depth_maps_near_far_and_holes():
    depth = np.array([[200, 1500, 0, 5000, 850]], np.uint16)   # mm with scale 0.001
    out = colorize_depth(depth, 0.001, near=0.2, far=1.5)
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], DEPTH_LUT[0])       # at near
    np.testing.assert_array_equal(out[0, 1], DEPTH_LUT[255])     # at far
    np.testing.assert_array_equal(out[0, 2], NO_DEPTH_RGB)       # no return
    np.testing.assert_array_equal(out[0, 3], DEPTH_LUT[255])     # beyond far is clamped
    mid = out[0, 4].astype(int)
    assert mid[1] > mid[0] and mid[1] > mid[2]                   # Turbo's middle is green


def test_fit_rect_keeps_aspect_and_centres():
    r = fit_rect(640, 480, QtCore.QRect(0, 0, 1000, 400))
    assert (r.width(), r.height()) == (533, 400)
    assert r.x() == (1000 - 533) // 2 and r.y() == 0
    r = fit_rect(640, 480, QtCore.QRect(10, 20, 320, 1000))
    assert (r.width(), r.height()) == (320, 240) and r.y() == 20 + (1000 - 240) // 2


def test_qimage_shares_the_array_buffer():
    arr = np.zeros((4, 5, 3), np.uint8)
    image, keep = rgb_qimage(arr)
    assert keep is arr
    arr[2, 3] = (10, 200, 30)          # a copy would not see this
    assert QtGui.QColor(image.pixel(3, 2)).getRgb()[:3] == (10, 200, 30)


def test_bad_frame_is_a_one_line_error(qtbot):
    view = CameraView()
    qtbot.addWidget(view)
    with pytest.raises(ValueError) as err:
        view.set_frame(np.zeros((48, 64), np.float32))
    assert "\n" not in str(err.value) and "(H,W,3)" in str(err.value)


def test_paints_frame_letterboxed(qtbot):
    view = CameraView()
    qtbot.addWidget(view)
    view.resize(400, 400)
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:] = (200, 30, 40)
    view.set_frame(rgb)
    img = view.grab().toImage()
    assert QtGui.QColor(img.pixel(200, 250)).getRgb()[:3] == (200, 30, 40)
    # 320×240 in 400×400 → 400×300 image with 50 px bars above and below.
    assert QtGui.QColor(img.pixel(200, 10)).name() == style.BACKGROUND
    assert view.image_rects()[0] == QtCore.QRect(0, 50, 400, 300)


def test_both_mode_shows_rgb_and_depth_side_by_side(qtbot):
    view = CameraView()
    qtbot.addWidget(view)
    view.resize(800, 300)
    view.set_mode("both")
    view.set_frame(np.full((480, 640, 3), 255, np.uint8), np.full((480, 640), 200, np.uint16),
                   depth_scale=0.001)
    left, right = view.image_rects()
    assert left.right() < right.left()
    img = view.grab().toImage()
    assert QtGui.QColor(img.pixel(left.center())).getRgb()[:3] == (255, 255, 255)
    assert QtGui.QColor(img.pixel(right.center())).getRgb()[:3] == tuple(DEPTH_LUT[0])


def test_no_signal_after_timeout_and_fps(qtbot):
    view = CameraView(no_signal_after=0.3)
    qtbot.addWidget(view)
    assert view.is_stale()                      # nothing received yet
    frame = np.zeros((48, 64, 3), np.uint8)
    for _ in range(8):
        view.set_frame(frame)
        time.sleep(0.02)
    assert not view.is_stale()
    assert 5.0 < view.fps() <= 51.0             # ~45 fps fed; loose because the box is shared
    qtbot.waitUntil(view.is_stale, timeout=2000)
    assert view.fps() == 0.0


def test_dropped_counter_is_shown(qtbot):
    view = CameraView()
    qtbot.addWidget(view)
    view.resize(320, 240)
    view.set_frame(np.zeros((240, 320, 3), np.uint8))
    before = view.grab().toImage()
    view.set_dropped(4)
    after = view.grab().toImage()
    red = QtGui.QColor(style.ERROR)
    # Some pixel in the badge row now carries the error colour.
    found = any(QtGui.QColor(after.pixel(x, y)).red() > 200 and QtGui.QColor(after.pixel(x, y)).green() < 140
                for y in range(32, 50) for x in range(8, 120))
    assert found and before != after and red.isValid()
