"""The outcome dialog answers to the keys it advertises: S / F / D (issue 12: S typed into the notes).

Real key events go to whatever widget has the keyboard focus, as they would for an operator.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6 import QtCore, QtWidgets
from PySide6.QtTest import QTest

from app.collect_controller import OutcomeRequest
from widgets.dialogs import OutcomeDialog

Qt = QtCore.Qt


@pytest.fixture
def open_dialog(qtbot):
    parent = QtWidgets.QMainWindow()
    qtbot.addWidget(parent)
    parent.show()
    qtbot.waitExposed(parent)

    def make(default="success"):
        dlg = OutcomeDialog(OutcomeRequest(Path("take.h5"), default, "stopped by operator", 142, 7.1, 0), parent)
        answers = []
        dlg.answered.connect(lambda outcome, notes: answers.append((outcome, notes)))
        dlg.open()
        qtbot.waitExposed(dlg)
        qtbot.waitUntil(lambda: QtWidgets.QApplication.focusWidget() is not None, timeout=2000)
        return dlg, answers

    return make


def focused():
    return QtWidgets.QApplication.focusWidget()


@pytest.mark.parametrize("key,outcome", [(Qt.Key_S, "success"), (Qt.Key_F, "failure"), (Qt.Key_D, "discard")])
def test_single_letter_answers_when_the_dialog_opens(open_dialog, key, outcome):
    dlg, answers = open_dialog(default="failure")
    assert focused() is not dlg.notes          # the notes field must not swallow the letters
    QTest.keyClick(focused(), key)
    assert answers == [(outcome, "")]
    assert dlg.notes.toPlainText() == ""


def test_enter_takes_the_preselected_verdict(open_dialog):
    _dlg, answers = open_dialog(default="success")
    QTest.keyClick(focused(), Qt.Key_Return)
    assert answers == [("success", "")]


def test_letters_type_into_notes_then_alt_or_ctrl_enter_answer(qtbot, open_dialog):
    dlg, answers = open_dialog(default="success")
    qtbot.mouseClick(dlg.notes.viewport(), Qt.LeftButton)
    assert focused() is dlg.notes
    QTest.keyClicks(focused(), "slipped, fixed")    # s, f and d are plain letters here
    assert answers == [] and dlg.notes.toPlainText() == "slipped, fixed"
    QTest.keyClick(focused(), Qt.Key_F, Qt.AltModifier)   # the button's mnemonic: an animated click
    qtbot.waitUntil(lambda: answers == [("failure", "slipped, fixed")], timeout=2000)

    dlg2, answers2 = open_dialog(default="success")
    qtbot.mouseClick(dlg2.notes.viewport(), Qt.LeftButton)
    QTest.keyClicks(focused(), "ok")
    QTest.keyClick(focused(), Qt.Key_Return, Qt.ControlModifier)
    assert answers2 == [("success", "ok")]


def test_one_answer_per_take(open_dialog):
    dlg, answers = open_dialog(default="success")
    dlg.choose("success")
    dlg.choose("discard")
    assert answers == [("success", "")]
