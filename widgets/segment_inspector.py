"""Fields of the selected segment (primitive, instruction, object, quality, confidence), the
1–9 primitive key legend and the encoder's label suggestions.

The inspector edits nothing itself: a committed field emits ``fieldEdited(index, name, value)``
and the owner applies it through its undo stack, then calls ``show_segment`` with the result.
Text fields commit on Enter or when focus leaves, so one typed instruction is one undo step.
"""
from __future__ import annotations

from typing import Sequence

from PySide6 import QtCore, QtWidgets

from recorder.primitives import DEFINITION, PRIMITIVES
from widgets import style

QUALITY_TEXT = ("0 — unusable", "1 — poor", "2 — good", "3 — excellent")
CONFIDENCE_TEXT = ("0 — unsure", "1 — fairly sure", "2 — sure")


def _score_combo(texts: Sequence[str]) -> QtWidgets.QComboBox:
    box = QtWidgets.QComboBox()
    box.addItem("—", None)
    for i, t in enumerate(texts):
        box.addItem(t, i)
    return box


class SuggestionPanel(QtWidgets.QFrame):
    """The encoder's top primitives for the shown segment, with confidence bars; the top one is
    accepted with the button or the tab's key (A). Computes nothing: the owner calls ``show``."""

    acceptRequested = QtCore.Signal()
    chooseEncoderRequested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None, rows: int = 3):
        super().__init__(parent)
        self.setObjectName("suggestionPanel")
        self.title = QtWidgets.QLabel("Suggested labels")
        self.title.setStyleSheet(f"color: {style.TEXT}; font-weight: bold;")
        self.encoder = QtWidgets.QLabel("")
        self.encoder.setStyleSheet(f"color: {style.TEXT_DIM};")
        choose = QtWidgets.QToolButton()
        choose.setText("…")
        choose.setToolTip("Choose the encoder checkpoint for suggestions")
        choose.setFocusPolicy(QtCore.Qt.NoFocus)
        choose.clicked.connect(self.chooseEncoderRequested)
        head = QtWidgets.QHBoxLayout()
        head.addWidget(self.title)
        head.addStretch(1)
        head.addWidget(self.encoder)
        head.addWidget(choose)
        self.status = QtWidgets.QLabel("no encoder loaded")
        self.status.setWordWrap(True)
        self.status.setStyleSheet(f"color: {style.TEXT_DIM};")
        grid = QtWidgets.QGridLayout()
        grid.setColumnStretch(1, 1)
        self.names: list[QtWidgets.QLabel] = []
        self.bars: list[QtWidgets.QProgressBar] = []
        for r in range(rows):
            name = QtWidgets.QLabel("")
            bar = QtWidgets.QProgressBar()
            bar.setRange(0, 100)
            bar.setFormat("%p %")
            bar.setMaximumHeight(16)
            grid.addWidget(name, r, 0)
            grid.addWidget(bar, r, 1)
            self.names.append(name)
            self.bars.append(bar)
        self.accept = QtWidgets.QPushButton("Accept top suggestion  [A]")
        self.accept.setFocusPolicy(QtCore.Qt.NoFocus)
        self.accept.clicked.connect(self.acceptRequested)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 8, 0, 0)
        lay.addLayout(head)
        lay.addWidget(self.status)
        lay.addLayout(grid)
        lay.addWidget(self.accept)
        self.show_suggestions(None, "no encoder loaded")

    def set_encoder_name(self, name: str) -> None:
        self.encoder.setText(name or "none")
        self.encoder.setToolTip(name)

    def suggestions(self) -> list[tuple[str, float]]:
        """What is shown (for tests and the accept key)."""
        return [(n.property("primitive"), b.value() / 100) for n, b in zip(self.names, self.bars) if not n.isHidden()]

    def show_suggestions(self, items: list[tuple[str, float]] | None, status: str = "", *,
                         editable: bool = True) -> None:
        items = list(items or [])
        self.status.setText(status)
        self.status.setVisible(bool(status))
        for r, (name, bar) in enumerate(zip(self.names, self.bars)):
            visible = r < len(items)
            name.setVisible(visible)
            bar.setVisible(visible)
            if not visible:
                continue
            prim, conf = items[r]
            name.setProperty("primitive", prim)
            name.setText(f"<span style='background:{style.primitive_color(prim)}; color:white'>&nbsp;{prim}&nbsp;</span>")
            bar.setValue(int(round(100 * conf)))
        self.accept.setEnabled(bool(items) and editable)


class SegmentInspector(QtWidgets.QWidget):
    fieldEdited = QtCore.Signal(int, str, object)   # segment index, field name, value

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, primitive_keys: Sequence[str] = PRIMITIVES[:9]):
        super().__init__(parent)
        self._index = -1
        self._segment = None
        self._loading = False
        self.primitive_keys = list(primitive_keys)[:9]

        self.title = QtWidgets.QLabel("No segment")
        self.title.setStyleSheet(f"color: {style.TEXT}; font-weight: bold; font-size: 11pt;")
        self.span = QtWidgets.QLabel("")
        self.span.setStyleSheet(f"color: {style.TEXT_DIM};")
        self.primitive = QtWidgets.QComboBox()
        for name in PRIMITIVES:
            key = self.primitive_keys.index(name) + 1 if name in self.primitive_keys else None
            self.primitive.addItem(f"{name}" + (f"   [{key}]" if key else ""), name)
            self.primitive.setItemData(self.primitive.count() - 1, DEFINITION[name], QtCore.Qt.ToolTipRole)
        self.instruction = QtWidgets.QLineEdit()
        self.instruction.setPlaceholderText("vision-agnostic instruction")
        self.object = QtWidgets.QLineEdit()
        self.object.setPlaceholderText("object (e.g. red cube)")
        self.quality = _score_combo(QUALITY_TEXT)
        self.confidence = _score_combo(CONFIDENCE_TEXT)
        self.source = QtWidgets.QLabel("")

        form = QtWidgets.QFormLayout()
        form.setLabelAlignment(QtCore.Qt.AlignRight)
        form.addRow("Primitive", self.primitive)
        form.addRow("Instruction", self.instruction)
        form.addRow("Object", self.object)
        form.addRow("Quality", self.quality)
        form.addRow("Confidence", self.confidence)
        form.addRow("Source", self.source)

        self.legend = QtWidgets.QLabel(self._legend_html())
        self.legend.setTextFormat(QtCore.Qt.RichText)
        self.legend.setStyleSheet(f"color: {style.TEXT_DIM}; padding-top: 6px;")

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.title)
        lay.addWidget(self.span)
        lay.addLayout(form)
        lay.addWidget(self.legend)
        self.suggestions = SuggestionPanel()
        lay.addWidget(self.suggestions)
        lay.addStretch(1)
        self.setStyleSheet(
            f"QLabel {{ color: {style.TEXT}; }} QLineEdit, QComboBox {{ color: {style.TEXT}; background: #1b1e23;"
            f" border: 1px solid {style.GRID}; border-radius: 3px; padding: 2px 4px; }}"
            f" QLineEdit:disabled, QComboBox:disabled {{ color: {style.TEXT_DIM}; }}")

        self.primitive.activated.connect(lambda _i: self._emit("primitive", self.primitive.currentData()))
        self.instruction.editingFinished.connect(lambda: self._emit_text("instruction", self.instruction))
        self.object.editingFinished.connect(lambda: self._emit_text("object", self.object))
        self.quality.activated.connect(lambda _i: self._emit("quality", self.quality.currentData()))
        self.confidence.activated.connect(lambda _i: self._emit("confidence", self.confidence.currentData()))
        self.show_segment(-1, None)

    def _legend_html(self) -> str:
        rows = "".join(
            f"<tr><td><b style='color:{style.TEXT}'>{i + 1}</b></td>"
            f"<td><span style='background:{style.primitive_color(n)}; color:white'>&nbsp;{n}&nbsp;</span></td></tr>"
            for i, n in enumerate(self.primitive_keys))
        return f"<div>Keys 1–9 set the primitive:</div><table cellspacing='2'>{rows}</table>"

    # -- state -----------------------------------------------------------------------------------

    @property
    def index(self) -> int:
        return self._index

    def show_segment(self, index: int, segment, *, fps: float = 0.0, editable: bool = True) -> None:
        """Show ``segment`` (a recorder.annotations.Segment) as segment ``index``; None clears."""
        self._loading = True
        same = index == self._index
        try:
            self._index = index if segment is not None else -1
            self._segment = segment
            enabled = segment is not None and editable
            for w in (self.primitive, self.instruction, self.object, self.quality, self.confidence):
                w.setEnabled(enabled)
            if segment is None:
                self.title.setText("No segment")
                self.span.setText("Select a segment on the timeline")
                for w in (self.instruction, self.object):
                    w.clear()
                self.quality.setCurrentIndex(0)
                self.confidence.setCurrentIndex(0)
                self.source.setText("")
                return
            self.title.setText(f"Segment {index + 1}: {segment.primitive}" + ("" if editable else "  (read-only)"))
            secs = f" · {segment.start / fps:.2f}–{segment.end / fps:.2f} s" if fps > 0 else ""
            self.span.setText(f"frames {segment.start}–{segment.end - 1} ({segment.length}){secs}")
            self.primitive.setCurrentIndex(max(0, self.primitive.findData(segment.primitive)))
            # Do not overwrite what the user is typing into this very segment's field.
            for edit, text in ((self.instruction, segment.instruction), (self.object, segment.object)):
                if not (same and edit.hasFocus()):
                    edit.setText(text)
                    edit.setCursorPosition(0)
            self.quality.setCurrentIndex(self.quality.findData(segment.quality) if segment.quality is not None else 0)
            self.confidence.setCurrentIndex(
                self.confidence.findData(segment.confidence) if segment.confidence is not None else 0)
            verified = segment.source == "human"
            self.source.setText("verified (human)" if verified else "proposal (auto)")
            self.source.setStyleSheet(f"color: {'#6fd08c' if verified else style.WARNING};")
        finally:
            self._loading = False

    def _emit_text(self, name: str, edit: QtWidgets.QLineEdit) -> None:
        if self._segment is not None and edit.text() != getattr(self._segment, name):
            self._emit(name, edit.text())

    def _emit(self, name: str, value) -> None:
        if self._loading or self._segment is None or self._index < 0:
            return
        if getattr(self._segment, name) == value:
            return
        self.fieldEdited.emit(self._index, name, value)
