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


def test_prepare_cloud_packs_off_the_view_and_keeps_the_moving_subset_small():
    import pytest

    from widgets.pointcloud_view import prepare_cloud, unpack_rgb

    rng = np.random.default_rng(1)
    xyz = rng.random((120_000, 3)).astype(np.float32)
    xyz[5] = np.nan                                   # a depth hole
    rgb = rng.integers(0, 256, xyz.shape).astype(np.uint8)
    c = prepare_cloud(xyz, rgb, lod_points=50_000)
    assert len(c) == 119_999 and c.data.dtype == np.float32 and c.data.shape == (119_999, 4)
    np.testing.assert_array_equal(unpack_rgb(c.data[:, 3]), np.delete(rgb, 5, axis=0))
    np.testing.assert_allclose(c.bounds, [np.nanmin(xyz, 0), np.nanmax(xyz, 0)])
    assert 0 < len(c.lod) <= 50_000 and c.lod.flags.c_contiguous
    assert len(prepare_cloud(xyz[:1000], None, 50_000).lod) == 0   # small clouds need no subset
    with pytest.raises(ValueError, match="rgb must be"):
        prepare_cloud(xyz, rgb[:10])


def test_scene3d_worker_prepares_the_cloud_on_its_own_thread(qapp):
    import threading
    import time

    from widgets.pointcloud_view import PreparedCloud, prepare_cloud
    from widgets.scene3d_panel import CloudRequest, CloudWorker

    k = np.array([[300.0, 0, 80], [0, 300.0, 60], [0, 0, 1]])
    depth = np.full((120, 160), 800, np.uint16)
    rgb = np.zeros((120, 160, 3), np.uint8)
    worker = CloudWorker(stride=1, max_rate_hz=50.0)
    ran_on, got = [], []

    def prepare(xyz, col):
        ran_on.append(threading.get_ident())
        return prepare_cloud(xyz, col, 5_000)

    worker.prepare = prepare
    worker.cloudReady.connect(lambda cloud, col, key: got.append((cloud, col, key)))
    try:
        worker.submit(CloudRequest(depth, rgb, 0.001, k, np.eye(4), key=7), (-5,) * 3, (5,) * 3)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            qapp.processEvents()
            time.sleep(0.01)
    finally:
        worker.stop()
    cloud, col, key = got[0]
    assert isinstance(cloud, PreparedCloud) and col is None and key == 7
    assert len(cloud) == 120 * 160 and len(cloud.lod) <= 5_000
    assert ran_on and threading.get_ident() not in ran_on


def test_recording_keeps_its_rate_while_the_ui_thread_is_blocked(qtbot, tmp_path):
    """The control loop and the episode writer run off the UI thread: a UI thread frozen for
    1.5 s (a long paint, a modal dialog's setup) leaves no hole in the recorded time axis."""
    import time

    from app.collect_controller import CollectController
    from recorder.episode import EpisodeReader

    ctl = CollectController(operator="ci", max_episode_s=30.0)
    try:
        ctl.set_dataset(tmp_path)
        with qtbot.waitSignal(ctl.connectedChanged, timeout=90_000):
            assert ctl.connect_devices("sim-franka", "sim", "keyboard", 20.0)
        qtbot.waitUntil(lambda: ctl.loop is not None and ctl.loop.ticks > 5, timeout=20_000)
        with qtbot.waitSignal(ctl.recordingChanged, timeout=20_000):
            assert ctl.start_recording()
        qtbot.wait(300)
        t_block = time.monotonic()
        time.sleep(1.5)                       # the UI thread does nothing else: no events, no poll
        qtbot.wait(300)
        with qtbot.waitSignal(ctl.outcomeRequested, timeout=20_000):
            ctl.stop_recording()
        with qtbot.waitSignal(ctl.episodeSaved, timeout=20_000) as saved:
            ctl.resolve_outcome("failure")
        assert time.monotonic() - t_block >= 1.5
    finally:
        ctl.shutdown()
    with EpisodeReader(saved.args[0].path) as ep:
        t = np.asarray(ep.time)
    assert t[-1] - t[0] >= 1.8
    # 20 Hz ticks: ~0.05 s apart. A shared 2-core box may stretch a few; a recorder that
    # depended on the UI thread would show one 1.5 s hole.
    assert np.diff(t).max() < 0.5, np.diff(t).max()
    assert len(t) >= 0.5 * 20 * (t[-1] - t[0])


def test_episode_list_appends_a_saved_episode_without_rebuilding(qapp):
    import dataclasses
    from pathlib import Path

    from PySide6 import QtCore

    from recorder.dataset import EpisodeInfo
    from widgets.collect_tab import EpisodeList

    eps = [EpisodeInfo(Path(f"/d/ep_{i:03d}.h5"), True, n_frames=400, duration=20.0, task="pick_cube",
                       outcome="success") for i in range(30)]
    lst = EpisodeList()
    lst.set_episodes(eps[:29])
    marker = QtCore.Qt.UserRole + 7             # survives only on rows that are not rebuilt
    for i in range(29):
        lst.topLevelItem(i).setData(4, marker, "kept")

    def kept(i):
        return lst.topLevelItem(i).data(4, marker) == "kept"

    lst.set_episodes(eps)                       # one more episode saved
    assert lst.names() == [e.name for e in eps]
    assert all(kept(i) for i in range(29)) and not kept(29)
    bad = dataclasses.replace(eps[3], ok=False, error="truncated file")
    changed = eps[:3] + [bad] + eps[4:29]       # a row turned bad and the last one was deleted
    lst.set_episodes(changed)
    fresh = EpisodeList()
    fresh.set_episodes(changed)
    assert [lst.row(n) for n in lst.names()] == [fresh.row(n) for n in fresh.names()]
    assert lst.row("ep_003.h5")["outcome"] == "bad" and not kept(3) and kept(4) and kept(28)
    lst.set_episodes(eps[5:])                   # another dataset: rebuilt
    assert lst.names() == [e.name for e in eps[5:]]


_NONE_REFS: list = []


def _pyside_drains_none() -> bool:
    import sys

    import PySide6

    return sys.version_info < (3, 12) and PySide6.__version__ == "6.12.0"


# Found while profiling the live view: PySide6 6.12.0 on CPython 3.11 drops one reference to None
# per call of any void method (QLabel.setText, QWidget.update, ...). None is not immortal before
# 3.12, so a live CameraView aborts the process ("none_dealloc") after ~30 s in a small process.
# PySide6 6.11.3 on 3.11, and 6.12.0 on 3.12, do not. This test fails once either is fixed
# without updating the condition, and passes on a good pair.
def test_void_qt_calls_keep_none_alive(qapp):
    import sys

    import pytest
    from PySide6 import QtWidgets

    label = QtWidgets.QLabel()
    before = sys.getrefcount(None)
    for _ in range(200):
        label.setText("x")
    lost = before - sys.getrefcount(None)
    _NONE_REFS.extend([None] * max(lost, 0))   # give back what the probe took from this process
    drained = lost > 100
    if _pyside_drains_none():
        assert drained   # the known bug: remove this branch when the pin moves
        pytest.xfail("PySide6 6.12.0 on Python 3.11 drains None's refcount (crash after minutes)")
    assert not drained
