"""Small dialogs of the Collect flow: episode outcome, crashed-episode recovery, error message.

The outcome and recovery dialogs are plain QDialogs with named buttons (``button("success")``) so
tests click them with qtbot exactly as an operator would; they return their answer through
``answered``/``choice`` instead of blocking the caller in ``exec()``.
"""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app import actions
from widgets import style

# The letters are the action registry's (app/actions.py, context "outcome"; fixed there: they also
# answer with Alt from the notes field, which the handling below relies on).
OUTCOME_KEYS = {o: actions.get(f"outcome_{o}").keys[0] for o in ("success", "failure", "discard")}
OUTCOME_LABELS = {"success": "&Success", "failure": "&Failure", "discard": "&Discard"}
OUTCOME_COLORS = {"success": "#3bb273", "failure": style.ERROR, "discard": style.TEXT_DIM}


class OutcomeDialog(QtWidgets.QDialog):
    """Success / Failure / Discard + notes. The sim's verdict is the default (Enter accepts it).

    Keys: the dialog opens with the verdict's button focused, so plain **S / F / D** answer at once
    and **Enter** takes the preselected verdict. The notes field is for typing: click it (or Tab to
    it) and S, F, D are letters there; from the notes **Alt+S / Alt+F / Alt+D** answer and
    **Ctrl+Enter** saves with the preselected verdict. (It used to open with the notes focused, so
    the advertised S typed an "s" instead of answering.)
    """

    answered = QtCore.Signal(str, str)  # outcome, notes

    def __init__(self, request, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Episode outcome")
        self.setModal(True)
        self.setMinimumWidth(440)
        self.request = request
        name = request.path.name if request.path else "episode"
        head = QtWidgets.QLabel(f"<b>{name}</b><br>{request.frames} frames · {request.seconds:.1f} s · "
                                f"ended: {request.reason}"
                                + (f" · <span style='color:{style.WARNING}'>{request.dropped} dropped</span>"
                                   if request.dropped else ""))
        head.setTextFormat(QtCore.Qt.RichText)
        head.setWordWrap(True)
        verdict = QtWidgets.QLabel(
            f"Simulator verdict: <b style='color:{OUTCOME_COLORS[request.default]}'>{request.default}</b>"
            if request.default else "No automatic verdict on hardware — judge the take.")
        verdict.setTextFormat(QtCore.Qt.RichText)
        self.notes = QtWidgets.QPlainTextEdit()
        self.notes.setObjectName("outcome_notes")
        self.notes.setPlaceholderText("Notes (optional, click to type): what went wrong, anything unusual …")
        self.notes.setFixedHeight(80)
        self.notes.setTabChangesFocus(True)
        self.notes.installEventFilter(self)
        hint = QtWidgets.QLabel("S / F / D answer · in the notes: Alt+S / Alt+F / Alt+D, "
                                "or Ctrl+Enter for the preselected answer")
        hint.setObjectName("outcome_hint")
        hint.setWordWrap(True)
        hint.setStyleSheet(f"color: {style.TEXT_DIM}")

        row = QtWidgets.QHBoxLayout()
        self._buttons: dict[str, QtWidgets.QPushButton] = {}
        for outcome in ("success", "failure", "discard"):
            b = QtWidgets.QPushButton(f"{OUTCOME_LABELS[outcome]}   ({OUTCOME_KEYS[outcome]})")
            b.setObjectName(f"outcome_{outcome}")
            b.setMinimumHeight(34)
            b.setStyleSheet(f"QPushButton {{ border-left: 4px solid {OUTCOME_COLORS[outcome]}; }}")
            b.clicked.connect(lambda _=False, o=outcome: self.choose(o))
            row.addWidget(b)
            self._buttons[outcome] = b
        self.default_outcome = request.default or "failure"
        self._buttons[self.default_outcome].setDefault(True)

        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(head)
        lay.addWidget(verdict)
        lay.addWidget(self.notes)
        lay.addLayout(row)
        lay.addWidget(hint)
        self.outcome: str | None = None

    def showEvent(self, event: QtGui.QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        # Qt focuses the first widget of the tab chain (the notes) when the dialog appears; the
        # single-letter answers only work with a button focused.
        self._buttons[self.default_outcome].setFocus(QtCore.Qt.OtherFocusReason)

    def _answer_for(self, event: QtGui.QKeyEvent, *, in_notes: bool) -> str | None:
        """The outcome a key press answers, if any: S/F/D (with Alt inside the notes), Ctrl+Enter."""
        mods = event.modifiers() & ~(QtCore.Qt.ShiftModifier | QtCore.Qt.KeypadModifier)
        if event.key() in (QtCore.Qt.Key_Return, QtCore.Qt.Key_Enter) and mods == QtCore.Qt.ControlModifier:
            return self.default_outcome
        # key(), not text(): Alt+S carries no text on every platform.
        letter = chr(event.key()) if QtCore.Qt.Key_A <= event.key() <= QtCore.Qt.Key_Z else ""
        wanted = (QtCore.Qt.AltModifier,) if in_notes else (QtCore.Qt.NoModifier, QtCore.Qt.AltModifier)
        if mods in wanted:
            for outcome, key in OUTCOME_KEYS.items():
                if letter == key:
                    return outcome
        return None

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if obj is self.notes and event.type() == QtCore.QEvent.KeyPress:
            outcome = self._answer_for(event, in_notes=True)
            if outcome is not None:
                self.choose(outcome)
                return True
        return super().eventFilter(obj, event)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802
        # Plain S / F / D (or with Alt) answer the dialog when a button has the focus; typed into
        # the notes field they are letters (the event filter above sees those first).
        outcome = self._answer_for(event, in_notes=False)
        if outcome is not None:
            self.choose(outcome)
            return
        super().keyPressEvent(event)

    def button(self, outcome: str) -> QtWidgets.QPushButton:
        return self._buttons[outcome]

    def choose(self, outcome: str) -> None:
        if self.outcome is not None:
            return  # one answer per take (a double key press must not resolve twice)
        self.outcome = outcome
        self.answered.emit(outcome, self.notes.toPlainText())
        self.accept()

    def reject(self) -> None:  # Esc is the e-stop, never "discard by accident": keep the dialog
        if self.outcome is not None:
            super().reject()


class RecoveryDialog(QtWidgets.QMessageBox):
    """"N crashed episodes found: Recover / Discard / Later"."""

    def __init__(self, paths: list[Path], parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setIcon(QtWidgets.QMessageBox.Warning)
        self.setWindowTitle("Crashed recording found")
        n = len(paths)
        self.setText(f"{n} episode{'s' if n != 1 else ''} in this dataset {'were' if n != 1 else 'was'} "
                     "being recorded when the app stopped.")
        self.setInformativeText("Recover keeps every frame that reached the disk (outcome 'unknown').\n"
                                + "\n".join(p.name for p in paths[:8]) + (" …" if n > 8 else ""))
        self.buttons = {
            "recover": self.addButton("&Recover", QtWidgets.QMessageBox.AcceptRole),
            "discard": self.addButton("&Discard", QtWidgets.QMessageBox.DestructiveRole),
            "later": self.addButton("&Later", QtWidgets.QMessageBox.RejectRole),
        }
        self.setDefaultButton(self.buttons["recover"])
        self.paths = list(paths)

    def choice(self) -> str:
        clicked = self.clickedButton()
        for name, b in self.buttons.items():
            if b is clicked:
                return name
        return "later"


def show_error(parent: QtWidgets.QWidget | None, message: str, title: str = "ActStudio") -> QtWidgets.QMessageBox:
    """Non-blocking error box with the one-line cause (never a traceback)."""
    line = (message or "unknown error").strip().splitlines()[0]
    box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Critical, title, line, QtWidgets.QMessageBox.Ok, parent)
    box.setObjectName("error_dialog")
    box.setAttribute(QtCore.Qt.WA_DeleteOnClose, True)
    box.setWindowModality(QtCore.Qt.WindowModal)
    box.show()
    return box
