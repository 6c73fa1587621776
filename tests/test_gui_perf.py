"""Performance behaviour of the GUI views that is checkable without timing: the depth colour
map's lookup table gives the same colours as the float formula it replaced, and its 32-bit image
matches. (The 3D view's level of detail is checked under an X server in
test_widgets_pointcloud_view.py; figures come from bench/gui.py and bench/gui_collect.py.)"""
import numpy as np
from PySide6 import QtGui

from widgets.camera_view import DEPTH_LUT, NO_DEPTH_RGB, colorize_depth, depth_qimage


def _float_formula(depth, scale, near, far):
    near_raw, far_raw = near / scale, far / scale
    idx = (depth.astype(np.float32) - near_raw) * (255.0 / max(far_raw - near_raw, 1e-6))
    np.clip(idx, 0, 255, out=idx)
    out = DEPTH_LUT[idx.astype(np.uint8)]
    out[depth == 0] = NO_DEPTH_RGB
    return out


def test_depth_lookup_table_matches_the_float_formula_for_every_raw_value():
    depth = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    for scale, near, far in [(0.001, 0.2, 1.5), (0.00025, 0.1, 4.0), (0.001, 0.5, 0.6)]:
        np.testing.assert_array_equal(colorize_depth(depth, scale, near, far),
                                      _float_formula(depth, scale, near, far))


def test_depth_qimage_pixels_equal_colorize_depth(qapp):
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 3000, (48, 64)).astype(np.uint16)
    depth[::7, ::5] = 0
    rgb = colorize_depth(depth)
    image, buf = depth_qimage(depth)
    assert image.format() == QtGui.QImage.Format_RGB32 and (image.width(), image.height()) == (64, 48)
    for y, x in [(0, 0), (7, 5), (13, 40), (47, 63)]:
        assert QtGui.QColor(image.pixel(x, y)).getRgb()[:3] == tuple(int(v) for v in rgb[y, x])
    # Non-uint16 input (a float depth in raw units) is converted, not rejected.
    np.testing.assert_array_equal(colorize_depth(depth.astype(np.float32)), rgb)
