"""Timeline: keys → intents, playhead scrubbing, boundary drags that snap and that the owner
applies (or that snap back), undo through a real QUndoStack."""
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PySide6 import QtCore, QtGui
from PySide6.QtTest import QTest

from widgets.timeline import ACTIONS, SegmentSpan, Timeline

Qt = QtCore.Qt
SEGS = [(0, 100, "move"), (100, 150, "grasp"), (150, 200, "lift"), (220, 300, "transport")]


@pytest.fixture
def tl(qtbot):
    t = Timeline(fps=20.0)
    qtbot.addWidget(t)
    t.resize(1000, 240)
    t.set_n_frames(300)
    t.set_segments(SEGS)
    t.set_keyframes([100, 150, 180, 200], ["static", "gripper_close", "static", "static"])
    t.show()
    qtbot.waitExposed(t)
    t.vb.setXRange(0, 300, padding=0)
    QtCore.QCoreApplication.processEvents()
    return t


def to_viewport(t, x, y):
    scene = t.vb.mapViewToScene(QtCore.QPointF(x, y))
    return t.plot.mapFromScene(scene)


def drag(t, x0, x1, y, steps=12):
    """A real mouse drag on the plot's viewport (press, several moves, release)."""
    vp = t.plot.viewport()
    p0, p1 = to_viewport(t, x0, y), to_viewport(t, x1, y)

    def send(kind, pos, buttons):
        if kind == QtCore.QEvent.MouseMove:
            time.sleep(0.011)   # pyqtgraph drops moves closer than 10 ms (mouseRateLimit)
        ev = QtGui.QMouseEvent(kind, QtCore.QPointF(pos), QtCore.QPointF(vp.mapToGlobal(pos)),
                               Qt.LeftButton, buttons, Qt.NoModifier)
        QtCore.QCoreApplication.sendEvent(vp, ev)

    # pyqtgraph hands a drag to the item that accepted it in the last hover, as a real pointer does.
    send(QtCore.QEvent.MouseMove, p0 + QtCore.QPoint(1, 0), Qt.NoButton)
    send(QtCore.QEvent.MouseMove, p0, Qt.NoButton)
    send(QtCore.QEvent.MouseButtonPress, p0, Qt.LeftButton)
    for i in range(1, steps + 1):
        p = QtCore.QPoint(round(p0.x() + (p1.x() - p0.x()) * i / steps), p0.y())
        send(QtCore.QEvent.MouseMove, p, Qt.LeftButton)
    send(QtCore.QEvent.MouseButtonRelease, p1, Qt.NoButton)


def test_every_action_has_a_key_and_help():
    names = {name for name, _, _ in Timeline.shortcuts()}
    assert names == set(ACTIONS)
    assert {"play", "split", "merge", "delete", "undo", "redo", "primitive_9"} <= names


def test_frame_keys(tl, qtbot):
    seen = []
    tl.frameChanged.connect(seen.append)
    tl.setFocus()
    tl.set_frame(50)
    QTest.keyClick(tl, Qt.Key_Right)
    QTest.keyClick(tl, Qt.Key_Right, Qt.ShiftModifier)
    QTest.keyClick(tl, Qt.Key_Left)
    QTest.keyClick(tl, Qt.Key_BracketRight)     # next boundary after 60 → 100
    QTest.keyClick(tl, Qt.Key_BracketRight)     # → 150
    QTest.keyClick(tl, Qt.Key_BracketLeft)      # → 100
    assert seen == [51, 61, 60, 100, 150, 100]
    tl.set_frame(0)
    QTest.keyClick(tl, Qt.Key_Left)             # clamped at 0: nothing to report
    assert seen[-1] == 100 and tl.frame == 0


def test_edit_keys_emit_intents_for_selected_segment(tl, qtbot):
    got = []
    tl.splitRequested.connect(lambda f: got.append(("split", f)))
    tl.mergeRequested.connect(lambda i: got.append(("merge", i)))
    tl.deleteRequested.connect(lambda i: got.append(("delete", i)))
    tl.primitiveRequested.connect(lambda i, p: got.append(("prim", i, p)))
    tl.set_frame(120)                           # inside segment 1 (grasp)
    for key in (Qt.Key_S, Qt.Key_M, Qt.Key_3, Qt.Key_Delete):
        QTest.keyClick(tl, key)
    tl.select_segment(3)                        # explicit selection wins over the playhead
    QTest.keyClick(tl, Qt.Key_1)
    QTest.keyClick(tl, Qt.Key_M)                # last segment: nothing to merge with
    tl.select_segment(-1)
    tl.set_frame(210)                           # in the gap: no segment
    QTest.keyClick(tl, Qt.Key_Delete)
    assert got == [("split", 120), ("merge", 1), ("prim", 1, "lift"), ("delete", 1), ("prim", 3, "grasp")]


def test_undo_redo_drive_the_undo_stack(tl):
    stack = QtGui.QUndoStack()
    state = {"v": 0}

    class Bump(QtGui.QUndoCommand):
        def redo(self):
            state["v"] += 1

        def undo(self):
            state["v"] -= 1

    stack.push(Bump())
    tl.set_undo_stack(stack)
    signals = []
    tl.undoRequested.connect(lambda: signals.append("undo"))
    tl.redoRequested.connect(lambda: signals.append("redo"))
    QTest.keyClick(tl, Qt.Key_Z, Qt.ControlModifier)
    assert state["v"] == 0
    QTest.keyClick(tl, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert state["v"] == 1 and signals == ["undo", "redo"]


def test_space_plays_and_stops_at_end(tl, qtbot):
    tl.set_n_frames(30, fps=200.0)
    frames = []
    tl.frameChanged.connect(frames.append)
    tl.set_frame(20)
    QTest.keyClick(tl, Qt.Key_Space)
    assert tl.is_playing()
    qtbot.waitUntil(lambda: not tl.is_playing(), timeout=3000)
    assert frames == list(range(21, 30))


def test_segments_accept_model_types_and_reject_reversed(tl):
    tl.set_segments([SimpleNamespace(start=0, end=10, primitive="grasp"),
                     {"start": 10, "end": 20, "primitive": "lift"}, SegmentSpan(30, 40, "place")])
    assert [(s.start, s.end, s.primitive) for s in tl.segments()] == [(0, 10, "grasp"), (10, 20, "lift"), (30, 40, "place")]
    assert tl.boundaries() == [0, 10, 20, 30, 40]
    with pytest.raises(ValueError, match="empty or reversed"):
        tl.set_segments([(5, 5, "wait")])
    with pytest.raises(ValueError, match="curve 'speed' has 3 values for 300 frames"):
        tl.set_curves({"speed": np.zeros(3)})


def test_snap_frame_to_keyframe_only_when_close_on_screen(tl):
    px = tl.vb.viewPixelSize()[0]               # frames per pixel
    assert 0.2 < px < 0.5                       # 300 frames over ~1000 px
    assert tl.snap_frame(180 + 5 * px) == 180   # 5 px away: captured by the keyframe
    assert tl.snap_frame(180 + 12 * px) == round(180 + 12 * px)  # 12 px: just the frame
    assert tl.snap_frame(176.6, lo=0, hi=170) == 170              # clamp wins


def test_playhead_drag_scrubs_whole_frames(tl):
    seen = []
    tl.frameChanged.connect(seen.append)
    tl.set_frame(20)
    drag(tl, 20, 80, 0.5)
    assert seen and seen[-1] == tl.frame
    assert abs(tl.frame - 80) <= 1
    assert all(isinstance(f, int) for f in seen) and seen == sorted(seen)


def test_boundary_drag_snaps_to_keyframe_and_owner_applies(tl):
    moves = []

    def apply(seg, edge, frame):
        moves.append((seg, edge, frame))
        segs = [list(s) for s in SEGS]
        segs[seg][1 if edge == "end" else 0] = frame
        if edge == "end" and seg + 1 < len(segs) and segs[seg + 1][0] == SEGS[seg][1]:
            segs[seg + 1][0] = frame           # keep the neighbour touching
        tl.set_segments(segs)

    tl.boundaryMoved.connect(apply)
    lane_y = -0.24
    px = tl.vb.viewPixelSize()[0]
    drag(tl, 150, 180 + 4 * px, lane_y)         # shared grasp|lift boundary, released 4 px off 180
    assert moves == [(1, "end", 180)]
    assert tl.segments()[1].end == 180 and tl.segments()[2].start == 180
    drag(tl, 220, 213.2, lane_y)                # transport start, far from keyframes → frame
    assert moves[-1][0:2] == (3, "start") and abs(moves[-1][2] - 213) <= 1


def test_unapplied_boundary_drag_snaps_back(tl):
    moves = []
    tl.boundaryMoved.connect(lambda *a: moves.append(a))   # owner rejects: no set_segments
    drag(tl, 100, 120, -0.24)
    assert moves and moves[0][:2] == (0, "end")
    line = [ln for ln in tl._boundary_lines if ln.isVisible() and abs(ln.value() - 100) < 1e-9]
    assert line, "boundary line should be back at the model's frame 100"


def test_boundary_cannot_invert_segment(tl):
    moves = []
    tl.boundaryMoved.connect(lambda *a: moves.append(a))
    drag(tl, 300, 230, -0.24)                   # last segment's end dragged below its start+1?
    drag(tl, 300, 150, -0.24)                   # far past the start (220): clamped to 221
    assert moves[-1] == (3, "end", 221)


def test_click_in_lane_selects_segment(tl, qtbot):
    sel = []
    tl.segmentSelected.connect(sel.append)
    vp = tl.plot.viewport()
    QTest.mouseClick(vp, Qt.LeftButton, Qt.NoModifier, to_viewport(tl, 125, -0.24))
    assert sel == [1] and tl.selected_segment() == 1
    frames = []
    tl.frameChanged.connect(frames.append)
    QTest.mouseClick(vp, Qt.LeftButton, Qt.NoModifier, to_viewport(tl, 240, 0.5))
    assert frames and abs(frames[-1] - 240) <= 1
