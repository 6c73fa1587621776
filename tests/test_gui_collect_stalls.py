"""Collect tab while recording: per-poll updates must not re-lay out or repaint the whole tab.

bench/gui_collect.py found the REC status text (a QLabel updated at the controller's 30 Hz poll)
re-laying out the Episode box, the left pane and the splitter and repainting the Collect tab on
every poll. These tests pin the cure: a new status text posts no layout request to any ancestor and
repaints only the status widget.
"""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from app.collect_controller import CollectController, LiveStats
from widgets.collect_tab import CollectTab, StatusText


class EventCounter(QtCore.QObject):
    def __init__(self, kinds):
        super().__init__()
        self.kinds = set(kinds)
        self.seen: list[tuple[str, QtCore.QEvent.Type]] = []

    def eventFilter(self, obj, ev):  # noqa: N802
        if ev.type() in self.kinds:
            self.seen.append((obj.objectName() or type(obj).__name__, ev.type()))
        return False


def _stats(seconds: float, frames: int) -> LiveStats:
    return LiveStats(rate_hz=20.0, target_hz=20.0, dropped=0, lag=0, recording=True, frames=frames,
                     seconds=seconds, overruns=0, fault="", estopped=False)


def _settle() -> None:
    # Showing a widget leaves layout requests queued; they are not what the tests count.
    for _ in range(3):
        QtWidgets.QApplication.processEvents()


def _watch(widget: QtWidgets.QWidget, kinds) -> EventCounter:
    counter = EventCounter(kinds)
    w = widget
    while w is not None:
        w.installEventFilter(counter)
        w = w.parentWidget()
    return counter


def test_status_text_keeps_its_size_and_layout(qtbot):
    host = QtWidgets.QWidget()
    lay = QtWidgets.QHBoxLayout(host)
    status = StatusText("ready")
    lay.addWidget(QtWidgets.QPushButton("x"))
    lay.addWidget(status, 1)
    qtbot.addWidget(host)
    host.show()
    qtbot.waitExposed(host)
    _settle()
    hint = status.sizeHint()
    counter = _watch(status, [QtCore.QEvent.LayoutRequest])
    for i in range(20):
        status.set_text(f"{i * 1.37:5.1f} s · {i * 27} frames", lead="● REC")
        QtWidgets.QApplication.processEvents()
    assert status.sizeHint() == hint
    assert counter.seen == []
    assert status.text() == f"● REC {19 * 1.37:5.1f} s · {19 * 27} frames"

    # A QLabel in the same place does post layout requests: the test can tell the difference.
    label = QtWidgets.QLabel("ready")
    lay.addWidget(label)
    _settle()
    counter = _watch(label, [QtCore.QEvent.LayoutRequest])
    for i in range(5):
        label.setText(f"<b>REC</b> {i * 1.37:5.1f} s")
        QtWidgets.QApplication.processEvents()
    assert counter.seen


def test_recording_stats_repaint_only_the_status(qtbot):
    ctl = CollectController()
    tab = CollectTab(ctl, {"pick_cube": "pick up the cube"})
    qtbot.addWidget(tab)
    tab.resize(1200, 700)
    tab.show()
    qtbot.waitExposed(tab)
    tab._on_stats(_stats(0.0, 0))
    qtbot.wait(300)   # deferred work after show (header sizing) posts its own layout requests
    # Siblings only: the status widget is not opaque, so its ancestors paint its rectangle's
    # background (clipped to it), which is cheap; a re-layout would repaint the siblings.
    painted = EventCounter([QtCore.QEvent.Paint])
    for w in (tab.instruction, tab.record_button, tab.task, tab.view_tabs.tabBar(), tab.episode_list.viewport()):
        w.installEventFilter(painted)
    layouts = _watch(tab.rec_status, [QtCore.QEvent.LayoutRequest])
    status_paints = EventCounter([QtCore.QEvent.Paint])
    tab.rec_status.installEventFilter(status_paints)
    for i in range(1, 15):
        tab._on_stats(_stats(i / 30, i))
        QtWidgets.QApplication.processEvents()
        tab.rec_status.repaint()   # offscreen: make sure a pending update is delivered
    assert "REC" in tab.rec_status.text() and "14 frames" in tab.rec_status.text()
    assert layouts.seen == []
    assert painted.seen == []
    assert len(status_paints.seen) >= 14
    ctl.shutdown()


def test_writer_lag_repaints_only_the_badge_band(qtbot):
    import numpy as np

    from widgets.camera_view import CameraView

    view = CameraView()
    qtbot.addWidget(view)
    view.set_mode("both")
    view.resize(900, 400)
    view.set_frame(np.zeros((480, 640, 3), np.uint8), np.full((480, 640), 800, np.uint16))
    view.show()
    qtbot.waitExposed(view)
    qtbot.wait(50)
    rects: list[QtCore.QRect] = []

    class Grab(QtCore.QObject):
        def eventFilter(self, obj, ev):  # noqa: N802
            if ev.type() == QtCore.QEvent.Paint:
                rects.append(ev.rect())
            return False

    grab = Grab()
    view.installEventFilter(grab)
    for lag in (1, 2, 3, 0):
        view.set_dropped(2, lag)
        view.repaint(view.badge_band())   # deliver now; the offscreen platform may defer it
        QtWidgets.QApplication.processEvents()
    assert rects and all(r.height() <= view.badge_band().height() and r.top() == 0 for r in rects)
    # The badge is really drawn inside the band: the dropped text's red shows up there.
    img = view.grab(view.badge_band()).toImage()
    assert any(QtGui.QColor(img.pixel(x, y)).red() > 200 and QtGui.QColor(img.pixel(x, y)).green() < 140
               for y in range(32, 50) for x in range(8, 120))
