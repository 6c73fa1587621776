"""Annotate tab driven like a user: a dataset with a corrupt file, proposals, a boundary dragged
with real mouse events, undo/redo keys, autosave to the file, split/merge and navigation keys."""
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtTest import QTest
from test_annotate_controller import make_episode

from recorder.annotations import load_annotations
from recorder.primitives import PRIMITIVES
from widgets.annotate_tab import ANNOTATOR_KEY, AnnotateTab

Qt = QtCore.Qt


class Settings:
    """The two methods the tab uses of app.settings.Settings, over a dict."""

    def __init__(self, **values):
        self.values = dict(values)

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = value


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    d = tmp_path_factory.mktemp("tpl")
    return make_episode(d / "a.h5", seed=0), make_episode(d / "b.h5", seed=2, proposals=False)


@pytest.fixture
def dataset(tmp_path, templates):
    shutil.copy(templates[0], tmp_path / "ep_a.h5")
    shutil.copy(templates[1], tmp_path / "ep_b.h5")
    (tmp_path / "ep_0_corrupt.h5").write_bytes(np.random.default_rng(1).bytes(20000))
    return tmp_path


@pytest.fixture
def tab(qtbot, dataset):
    win = QtWidgets.QMainWindow()
    t = AnnotateTab(Settings(**{ANNOTATOR_KEY: "alice"}))
    win.setCentralWidget(t)
    win.resize(1400, 850)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    t.set_dataset(dataset)
    qtbot.waitUntil(lambda: t.controller.episode is not None, timeout=15000)
    yield t
    t.shutdown()


def to_viewport(tl, x, y):
    return tl.plot.mapFromScene(tl.vb.mapViewToScene(QtCore.QPointF(x, y)))


def drag(tl, x0, x1, y, steps=12):
    """A real mouse drag on the timeline's viewport (hover, press, moves, release)."""
    vp = tl.plot.viewport()
    p0, p1 = to_viewport(tl, x0, y), to_viewport(tl, x1, y)

    def send(kind, pos, buttons):
        if kind == QtCore.QEvent.MouseMove:
            time.sleep(0.011)   # pyqtgraph drops moves closer than 10 ms
        ev = QtGui.QMouseEvent(kind, QtCore.QPointF(pos), QtCore.QPointF(vp.mapToGlobal(pos)),
                               Qt.LeftButton, buttons, Qt.NoModifier)
        QtCore.QCoreApplication.sendEvent(vp, ev)

    send(QtCore.QEvent.MouseMove, p0 + QtCore.QPoint(1, 0), Qt.NoButton)
    send(QtCore.QEvent.MouseMove, p0, Qt.NoButton)
    send(QtCore.QEvent.MouseButtonPress, p0, Qt.LeftButton)
    for i in range(1, steps + 1):
        send(QtCore.QEvent.MouseMove, QtCore.QPoint(round(p0.x() + (p1.x() - p0.x()) * i / steps), p0.y()),
             Qt.LeftButton)
    send(QtCore.QEvent.MouseButtonRelease, p1, Qt.NoButton)


def key(tab, k, mods=Qt.NoModifier):
    QTest.keyClick(tab.timeline, k, mods)


def test_corrupt_file_listed_with_message_and_good_ones_open(qtbot, tab, dataset):
    rows = {r["name"]: r for r in tab.browser.rows()}
    assert set(rows) == {"ep_0_corrupt.h5", "ep_a.h5", "ep_b.h5"}
    err = rows["ep_0_corrupt.h5"]["error"]
    assert err.startswith("ep_0_corrupt.h5") and "\n" not in err
    assert tab.browser.error_label.isVisible() and err in tab.browser.error_label.text()
    assert rows["ep_a.h5"]["status"] == "proposed" and rows["ep_b.h5"]["status"] == "new"
    assert tab.controller.episode.path.name == "ep_a.h5"           # first good one opened itself
    # picking the corrupt one shows its message and keeps the open episode
    tab.browser.select(dataset / "ep_0_corrupt.h5")
    qtbot.wait(200)
    assert tab.controller.episode.path.name == "ep_a.h5"
    tab.browser.select(dataset / "ep_b.h5")
    qtbot.waitUntil(lambda: tab.controller.episode.path.name == "ep_b.h5", timeout=10000)
    assert tab.timeline.n_frames == tab.controller.episode.n_frames


def test_propose_button_on_episode_without_proposals(qtbot, tab, dataset):
    tab.browser.select(dataset / "ep_b.h5")
    qtbot.waitUntil(lambda: tab.controller.episode.path.name == "ep_b.h5", timeout=10000)
    assert tab.timeline.segments() == [] and tab.propose_button.isEnabled()
    qtbot.mouseClick(tab.propose_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: len(tab.timeline.segments()) >= 3, timeout=20000)
    assert len(tab.timeline.keyframes()) >= 2
    qtbot.waitUntil(lambda: tab.save_label.text() == "Saved ✓", timeout=2500)
    stored = load_annotations(dataset / "ep_b.h5")
    assert stored["alice"].segments == stored["auto"].segments
    row = {r["name"]: r for r in tab.browser.rows()}["ep_b.h5"]
    assert row["status"] == "proposed" and "alice" in row["annotators"]


def test_drag_boundary_undo_redo_autosave_reopen(qtbot, tab, dataset):
    tl, c = tab.timeline, tab.controller
    tl.vb.setXRange(0, tl.n_frames, padding=0)
    QtCore.QCoreApplication.processEvents()
    b = c.doc[0].end
    kfs = set(tl.keyframes().tolist())
    px = tl.vb.viewPixelSize()[0]
    # a target at least 20 px from any keyframe, so it lands on the frame under the pointer
    target = next(f for f in range(b + 6, c.doc[1].end - 2) if all(abs(f - k) > 20 * px for k in kfs))
    drag(tl, b, target, -0.24)
    assert abs(c.doc[0].end - target) <= 1 and c.doc[1].start == c.doc[0].end
    moved = c.doc[0].end
    assert tl.segments()[0].end == moved                           # the bars follow the model
    key(tab, Qt.Key_Z, Qt.ControlModifier)
    assert c.doc[0].end == b and tl.segments()[0].end == b
    key(tab, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert c.doc[0].end == moved
    t0 = time.monotonic()
    qtbot.waitUntil(lambda: tab.save_label.text() == "Saved ✓", timeout=2500)
    assert time.monotonic() - t0 < 2.5
    assert load_annotations(dataset / "ep_a.h5")["alice"][0].end == moved
    assert {r["name"]: r for r in tab.browser.rows()}["ep_a.h5"]["annotators"] == "alice, auto"


def test_split_and_merge_keys(qtbot, tab):
    c, tl = tab.controller, tab.timeline
    n0 = len(c.doc)
    s0 = c.doc[0]
    c.set_frame(s0.start + s0.length // 2)
    key(tab, Qt.Key_S)
    assert len(c.doc) == n0 + 1 and c.doc[0].end == s0.start + s0.length // 2
    assert len(tl.segments()) == n0 + 1
    key(tab, Qt.Key_Left)                  # the playhead sits on the new segment's first frame
    key(tab, Qt.Key_M)                     # merge the segment under it with the next: undone split
    assert len(c.doc) == n0 and c.doc[0].end == s0.end
    key(tab, Qt.Key_Delete)
    assert len(c.doc) == n0 - 1
    assert c.undo_stack.count() == 3


def test_navigation_primitive_play_and_loop_keys(qtbot, tab):
    c, tl = tab.controller, tab.timeline
    c.set_frame(5)
    key(tab, Qt.Key_Right)
    assert c.frame == 6 and tl.frame == 6
    key(tab, Qt.Key_Right, Qt.ShiftModifier)
    assert c.frame == 16
    key(tab, Qt.Key_Left)
    key(tab, Qt.Key_Left, Qt.ShiftModifier)
    assert c.frame == 5
    b = sorted(tl.boundaries())
    key(tab, Qt.Key_BracketRight)
    assert c.frame == next(x for x in b if x > 5)
    nxt = c.frame
    key(tab, Qt.Key_BracketLeft)
    assert c.frame == max(x for x in b if x < nxt)
    c.set_frame(2)
    for k in range(1, 10):                                         # 1–9 → the legend's primitives
        key(tab, getattr(Qt, f"Key_{k}"))
        assert c.doc[0].primitive == PRIMITIVES[k - 1]
    assert tab.inspector.primitive.currentData() == PRIMITIVES[8]
    key(tab, Qt.Key_Space)
    assert c.is_playing() and not tl.is_playing()                  # the controller's clock plays
    qtbot.waitUntil(lambda: c.frame >= 5, timeout=3000)
    key(tab, Qt.Key_Space)
    assert not c.is_playing()
    key(tab, Qt.Key_L)
    assert c.is_looping() and tab.player.loop_button.isChecked()
    # frames arrived in the player from the worker thread
    qtbot.waitUntil(lambda: tab.player.shown_frame == c.frame, timeout=10000)


def test_inspector_fields_edit_through_undo_stack(qtbot, tab, dataset):
    c, ins = tab.controller, tab.inspector
    tab.timeline.select_segment(1)
    assert ins.index == 1
    ins.instruction.setFocus()
    ins.instruction.selectAll()
    QTest.keyClicks(ins.instruction, "grasp the cube")             # S, M, digits typed, not shortcuts
    QTest.keyClick(ins.instruction, Qt.Key_Return)
    assert c.doc[1].instruction == "grasp the cube" and len(c.doc) == len(c.docs["auto"])
    ins.quality.setCurrentIndex(ins.quality.findData(2))
    ins.quality.activated.emit(ins.quality.currentIndex())
    assert c.doc[1].quality == 2
    tab.timeline.setFocus()
    key(tab, Qt.Key_A, Qt.ControlModifier | Qt.ShiftModifier)      # accept all proposals
    assert all(s.source == "human" for s in c.doc.segments)
    qtbot.waitUntil(lambda: tab.save_label.text() == "Saved ✓", timeout=2500)
    seg = load_annotations(dataset / "ep_a.h5")["alice"][1]
    assert (seg.instruction, seg.quality, seg.source) == ("grasp the cube", 2, "human")
    assert {r["name"]: r for r in tab.browser.rows()}["ep_a.h5"]["status"] == "verified"


def test_view_other_annotator_read_only(qtbot, tab):
    c = tab.controller
    assert tab.agreement_label.text().startswith("Agreement with auto")
    i = tab.view_combo.findData("auto")
    tab.view_combo.setCurrentIndex(i)
    tab.view_combo.activated.emit(i)
    assert c.view == "auto" and not c.is_editable()
    assert not tab.inspector.instruction.isEnabled()
    n = len(c.doc)
    c.set_frame(c.doc[0].start + 3)
    QTest.keyClick(tab.timeline, Qt.Key_S)
    assert len(c.doc) == n and "read-only" in tab.message_label.text()


def test_menu_actions_have_the_listed_shortcuts(tab):
    acts = {a.objectName().removeprefix("annotate_"): a for a in tab.menu_actions() if not a.isSeparator()}
    keys = {n: a.shortcut().toString() for n, a in acts.items()}
    assert keys["play"] == "Space" and keys["split"] == "S" and keys["merge"] == "M"
    assert keys["undo"] == "Ctrl+Z" and keys["redo"] == "Ctrl+Shift+Z" and keys["loop"] == "L"
    assert keys["prev_boundary"] == "[" and keys["next_boundary"] == "]" and keys["delete"] == "Del"
    assert keys["accept_all"] == "Ctrl+Shift+A"
    assert [keys[f"primitive_{k}"] for k in range(1, 10)] == [str(k) for k in range(1, 10)]
    assert acts["primitive_3"].text().endswith(PRIMITIVES[2])


def test_a_shortcut_override_rekeys_the_tab_and_its_timeline(qtbot, tab):
    """An override (Help › Keyboard shortcuts…, app/actions.py Keymap) changes the key that splits:
    the new key works, the old one no longer does — neither as the tab's QAction nor in the timeline."""
    c = tab.controller
    n0, s0 = len(c.doc), c.doc[0]
    c.set_frame(s0.start + s0.length // 2)
    tab.keymap.set_keys("split", ["K"])
    assert tab.action("split").shortcut().toString() == "K"
    key(tab, Qt.Key_S)
    assert len(c.doc) == n0
    key(tab, Qt.Key_K)
    assert len(c.doc) == n0 + 1 and c.doc[0].end == s0.start + s0.length // 2
    assert tab.settings.values["shortcuts/overrides"] == {"actstudio:split": ["K"]}
    tab.keymap.reset("split")
    assert tab.action("split").shortcut().toString() == "S"
    key(tab, Qt.Key_Z, Qt.ControlModifier)
    key(tab, Qt.Key_S)
    assert len(c.doc) == n0 + 1
