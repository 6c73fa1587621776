"""Help › Keyboard shortcuts…: the dialog lists every action of the registry, searches, refuses a
conflicting key with the reason, and a key changed there re-keys the live QActions; Esc inside it is
still the E-STOP."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6 import QtCore, QtWidgets
from PySide6.QtTest import QTest

from app import actions
from app.actions import Keymap
from app.settings import Settings
from widgets.main_window import MainWindow, apply_theme
from widgets.shortcuts import ShortcutsDialog, make_action

Qt = QtCore.Qt


@pytest.fixture
def host(qtbot):
    """A shown window with a focused child, as a tab would be; records the Evaluate bodies' calls."""
    win = QtWidgets.QWidget()
    field = QtWidgets.QPushButton("focus here", win)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    field.setFocus()
    calls = []
    target = SimpleNamespace(operator_outcome=lambda ok: calls.append(ok), confirm_reset=lambda: calls.append("reset"))
    return win, field, target, calls


def test_an_override_changes_the_key_that_triggers_the_action(qtbot, tmp_path, host):
    win, field, target, calls = host
    km = Keymap(Settings(tmp_path / "s.ini"))
    act = make_action(km, "trial_success", target, win)
    assert act.shortcut().toString() == "S" and act.shortcutContext() == Qt.WidgetWithChildrenShortcut
    QTest.keyClick(field, Qt.Key_S)
    assert calls == [True]
    km.set_keys("trial_success", ["G"])
    QTest.keyClick(field, Qt.Key_S)
    assert calls == [True]                       # the old key is free again
    QTest.keyClick(field, Qt.Key_G)
    assert calls == [True, True]
    assert Keymap(Settings(tmp_path / "s.ini")).keys("trial_success") == ("G",)   # persisted


def test_dialog_lists_every_action_searches_and_refuses_a_conflict(qtbot, tmp_path, host):
    apply_theme(QtWidgets.QApplication.instance())
    win, _field, target, _calls = host
    km = Keymap(Settings(tmp_path / "s.ini"))
    act = make_action(km, "trial_failure", target, win)
    dlg = ShortcutsDialog(km)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    rows = dlg.rows()
    assert [r["name"] for r in rows] == [a.name for a in actions.ACTIONS]          # every action, once
    by = {r["name"]: r for r in rows}
    assert by["actstudio:redo"]["keys"] == "Ctrl+Shift+Z / Ctrl+Y" and by["actstudio:estop"]["where"] == "Everywhere"
    assert by["actstudio:estop"]["action"].endswith("(fixed)")

    QTest.keyClicks(dlg.search, "split")
    assert [r["name"] for r in dlg.rows()] == ["actstudio:split"]
    dlg.search.setText("ctrl+shift annotate")
    assert {r["name"] for r in dlg.rows()} == {"actstudio:redo", "actstudio:propose", "actstudio:accept_all"}
    dlg.search.clear()

    assert not dlg.assign("split", "M")                                         # M merges
    assert dlg.message.text().startswith("Refused: M is already 'Merge segment with the next'")
    assert km.keys("split") == ("S",)
    dlg.select("estop")
    assert not dlg.assign_button.isEnabled() and "fixed" in dlg.message.text()

    assert dlg.assign("trial_failure", "Shift+F")
    assert act.shortcut().toString() == "Shift+F"                                # the live QAction follows
    assert {r["name"]: r for r in dlg.rows()}["actstudio:trial_failure"]["keys"] == "Shift+F"

    assert "1 changed from the default" in dlg.summary.text() and "no conflicts" in dlg.summary.text()

    # For the screenshot: a changed key (bold) and a refused one with its reason, in view.
    assert dlg.assign("loop", "K")
    dlg.select("split")
    dlg.key_edit.setKeySequence("M")
    qtbot.mouseClick(dlg.assign_button, Qt.LeftButton)
    assert dlg.message.text().startswith("Refused: M is already") and km.keys("split") == ("S",)
    shots = Path(os.environ.get("ACTSTUDIO_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert dlg.grab().save(str(shots / "shortcuts.png"))


def test_dialog_shows_conflicts(qtbot):
    """The registry never takes a conflict from the dialog, but one in the table (a new action given a
    taken default, say) is shown: a red row with the other action in its tooltip, and the count."""
    table = [actions.Action("actstudio:one", "One", "annotate", ("S",), print),
             actions.Action("actstudio:two", "Two", "window", ("S",), print),
             actions.Action("actstudio:three", "Three", "evaluate", ("T",), print)]
    dlg = ShortcutsDialog(Keymap(None, table))
    qtbot.addWidget(dlg)
    assert "1 conflict" in dlg.summary.text()
    assert "S also actstudio:two" in dlg.table.item(0, 2).toolTip()
    assert dlg.table.item(0, 0).background().color() != dlg.table.item(2, 0).background().color()


def test_help_menu_opens_the_dialog_and_esc_in_it_is_still_the_estop(qtbot, tmp_path):
    s = Settings(tmp_path / "settings.ini")
    win = MainWindow(s, dataset=tmp_path / "data", devices=("sim-xarm6", "sim", "keyboard", 20.0))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    stops = []
    win.controller.estop = lambda: stops.append("estop")
    try:
        help_menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Help")
        assert win.act_shortcuts in help_menu.actions() and win.act_shortcuts.shortcut().toString() == "F1"
        win.act_shortcuts.trigger()
        dlg = win.shortcuts_dialog
        qtbot.waitExposed(dlg)
        assert len(dlg.rows()) == len(actions.ACTIONS)
        dlg.activateWindow()
        dlg.search.setFocus()
        QTest.keyClick(dlg.search, Qt.Key_Escape)
        assert stops == ["estop"] and dlg.isVisible()          # E-STOP, and the dialog stays open
        # A key changed in the dialog re-keys the window's action and the button that names it.
        assert dlg.assign("recover", "Ctrl+Alt+R")
        assert win.act_recover.shortcut().toString() == "Ctrl+Alt+R"
        assert win.device_bar.recover_button.text() == "Recover  (Ctrl+Alt+R)"
        assert "Ctrl+Alt+R" not in win.device_bar.home_button.toolTip()
        assert s.get(actions.OVERRIDES_KEY, {}) == {"actstudio:recover": ["Ctrl+Alt+R"]}
    finally:
        win.close()


def test_evaluate_tab_keys_and_button_labels_follow_an_override(qtbot, tmp_path):
    from widgets.evaluate_tab import EvaluateTab
    from widgets.shortcuts import keymap_for

    s = Settings(tmp_path / "s.ini")
    tab = EvaluateTab(s)
    qtbot.addWidget(tab)
    try:
        acts = {a.data(): a for a in tab.actions()}
        assert {n: acts[n].shortcut().toString() for n in ("actstudio:trial_success", "actstudio:trial_failure",
                                                           "actstudio:confirm_reset")} == {
            "actstudio:trial_success": "S", "actstudio:trial_failure": "F", "actstudio:confirm_reset": "Return"}
        assert tab.success_btn.text() == "Success  (S)"
        keymap_for(s).set_keys("trial_success", ["G"])
        assert acts["actstudio:trial_success"].shortcut().toString() == "G"
        assert tab.success_btn.text() == "Success  (G)"
    finally:
        tab.shutdown()
