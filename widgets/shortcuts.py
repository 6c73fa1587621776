"""Qt side of the action registry (app/actions.py): QActions built from it and kept in step with the
user's overrides, key hints on buttons, and the *Keyboard shortcuts* dialog (Help menu).

One :class:`~app.actions.Keymap` per settings object (``keymap_for``), so the main window, its tabs
and a dialog opened from it all see the same overrides, and a change made in the dialog re-keys every
QAction at once.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from app.actions import CONTEXT_TITLES, Action, Keymap, ShortcutError
from widgets import style

_DEFAULT_KEYMAP: list[Keymap] = []

# Qt shortcut context per registry context: the window's keys while the window is active, the tabs'
# while focus is inside the tab (a text field still takes its typing keys first), Esc everywhere.
QT_CONTEXT = {"app": QtCore.Qt.ApplicationShortcut, "window": QtCore.Qt.WindowShortcut,
              "annotate": QtCore.Qt.WidgetWithChildrenShortcut, "evaluate": QtCore.Qt.WidgetWithChildrenShortcut,
              "outcome": QtCore.Qt.WindowShortcut}


def keymap_for(settings) -> Keymap:
    """The keymap of this settings object (created with its overrides on first use); None: defaults."""
    if settings is None:
        if not _DEFAULT_KEYMAP:
            _DEFAULT_KEYMAP.append(Keymap(None))
        return _DEFAULT_KEYMAP[0]
    km = getattr(settings, "_actstudio_keymap", None)
    if km is None:
        km = Keymap(settings)
        settings._actstudio_keymap = km   # lives and dies with its settings (no global table to leak)
    return km


def sequences(keymap: Keymap, name: str) -> list[QtGui.QKeySequence]:
    return [QtGui.QKeySequence(k) for k in keymap.keys(name)]


def follow(keymap: Keymap, owner: QtCore.QObject, name: str, apply: Callable[[], None]) -> None:
    """Call ``apply()`` now and whenever ``name``'s keys change, while ``owner`` lives."""
    full = keymap.action(name).name

    def changed(changed_name: str) -> None:
        if changed_name == full:
            try:
                apply()
            except RuntimeError:   # the C++ object went away between destroyed and here
                unsubscribe()

    unsubscribe = keymap.subscribe(changed)
    owner.destroyed.connect(lambda *_: unsubscribe())
    apply()


def make_action(keymap: Keymap, name: str, target: Any, parent: QtWidgets.QWidget, *,
                text: str | None = None, object_name: str | None = None,
                on_trigger: Callable[[], None] | None = None) -> QtGui.QAction:
    """A QAction for the registry action ``name`` running its body on ``target`` (or ``on_trigger()``
    instead); added to ``parent`` (so its keys work without a menu) with the Qt shortcut context of
    the action's context. Checkable actions run nothing on trigger: the owner connects ``toggled``."""
    spec: Action = keymap.action(name)
    act = QtGui.QAction(text or spec.title, parent)
    act.setObjectName(object_name or f"action_{spec.short}")
    act.setData(spec.name)
    if spec.tip:
        act.setStatusTip(spec.tip)
        act.setToolTip(spec.tip)
    act.setShortcutContext(QT_CONTEXT.get(spec.context, QtCore.Qt.WindowShortcut))
    act.setCheckable(spec.checkable)
    if on_trigger is not None:
        act.triggered.connect(lambda _=False: on_trigger())
    elif spec.run is not None and not spec.checkable:
        act.triggered.connect(lambda _=False: spec.run(target))
    follow(keymap, act, spec.name, lambda: act.setShortcuts(sequences(keymap, spec.name)))
    parent.addAction(act)
    return act


def hint_button(keymap: Keymap, button: QtWidgets.QAbstractButton, name: str, label: str) -> None:
    """``label  (key)`` on ``button``, following the action's current key."""
    def apply() -> None:
        keys = keymap.key_text(name, " / ")
        button.setText(f"{label}  ({keys})" if keys else label)
    follow(keymap, button, name, apply)


def hint_tooltip(keymap: Keymap, widget: QtWidgets.QWidget, name: str, text: str) -> None:
    """``text`` with "{key}" replaced by the action's current key, as the widget's tooltip (for
    buttons whose label changes, or with no room for the key)."""
    def apply() -> None:
        widget.setToolTip(text.format(key=keymap.key_text(name, " / ") or "no key"))
    follow(keymap, widget, name, apply)


# ---------------------------------------------------------------------------------------- dialog
class ShortcutsDialog(QtWidgets.QDialog):
    """Every action of the registry: search, see the keys and any conflict, change a key.

    A new key is recorded in the key field and set with *Assign*; one that another action already
    uses where this one acts is refused with the reason under the table, and nothing changes."""

    COLUMNS = ("Action", "Where", "Keys", "Default", "Name")

    def __init__(self, keymap: Keymap, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.keymap = keymap
        self.setWindowTitle("Keyboard shortcuts")
        self.setObjectName("shortcuts_dialog")
        self.resize(820, 620)
        self.search = QtWidgets.QLineEdit()
        self.search.setObjectName("shortcuts_search")
        self.search.setPlaceholderText("Search actions or keys (e.g. 'split', 'Ctrl+S', 'annotate')")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._filter)
        self.table = QtWidgets.QTableWidget(0, len(self.COLUMNS))
        self.table.setObjectName("shortcuts_table")
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        hdr = self.table.horizontalHeader()
        hdr.setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)
        for c in range(1, len(self.COLUMNS)):
            hdr.setSectionResizeMode(c, QtWidgets.QHeaderView.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._on_select)

        self.key_edit = QtWidgets.QKeySequenceEdit()
        self.key_edit.setObjectName("shortcuts_key_edit")
        self.key_edit.setToolTip("click, then press the new key combination")
        self.key_edit.setMaximumSequenceLength(1)   # one combination per shortcut (the registry's rule)
        self.assign_button = QtWidgets.QPushButton("Assign")
        self.clear_button = QtWidgets.QPushButton("No key")
        self.reset_button = QtWidgets.QPushButton("Reset to default")
        self.reset_all_button = QtWidgets.QPushButton("Reset all")
        self.assign_button.clicked.connect(self._assign)
        self.clear_button.clicked.connect(lambda: self._apply(lambda n: self.keymap.set_keys(n, ())))
        self.reset_button.clicked.connect(lambda: self._apply(self.keymap.reset))
        self.reset_all_button.clicked.connect(self._reset_all)
        self.summary = QtWidgets.QLabel("")
        self.summary.setObjectName("shortcuts_summary")
        self.message = QtWidgets.QLabel("")
        self.message.setObjectName("shortcuts_message")
        self.message.setWordWrap(True)
        close = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
        close.rejected.connect(self.close)

        edit_row = QtWidgets.QHBoxLayout()
        edit_row.addWidget(QtWidgets.QLabel("New key:"))
        edit_row.addWidget(self.key_edit, 1)
        for b in (self.assign_button, self.clear_button, self.reset_button):
            edit_row.addWidget(b)
        edit_row.addSpacing(16)
        edit_row.addWidget(self.reset_all_button)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.search)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        lay.addLayout(edit_row)
        lay.addWidget(self.message)
        lay.addWidget(close)
        self._names: list[str] = []
        self.populate()
        self._unsubscribe = keymap.subscribe(lambda _n: self.populate())
        self.destroyed.connect(lambda *_: self._unsubscribe())
        for line in keymap.problems:
            self._say(line, error=True)

    # -- table
    def populate(self) -> None:
        selected = self.selected_name()
        conflicts = self.keymap.conflicts()
        clashing = {n for c in conflicts for n in (c.first, c.second)}
        acts = list(self.keymap.actions.values())
        self._names = [a.name for a in acts]
        self.table.setRowCount(len(acts))
        dim = QtGui.QColor(style.TEXT_DIM)
        for row, a in enumerate(acts):
            keys = self.keymap.key_text(a.name, " / ")
            cells = (a.label + ("  (fixed)" if a.fixed else ""), CONTEXT_TITLES[a.context], keys or "—",
                     " / ".join(a.keys) or "—", a.name)
            for col, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                if a.tip:
                    item.setToolTip(a.tip)
                if a.fixed:
                    item.setForeground(dim)
                if col == 2 and self.keymap.is_overridden(a.name):
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                if a.name in clashing:
                    item.setBackground(QtGui.QColor(style.ERROR).darker(250))
                    item.setToolTip("conflict: " + "; ".join(
                        f"{c.key} also {c.second if c.first == a.name else c.first}"
                        for c in conflicts if a.name in (c.first, c.second)))
                self.table.setItem(row, col, item)
        self._filter(self.search.text())
        if selected in self._names:
            self.table.selectRow(self._names.index(selected))
        changed = len(self.keymap.overrides())
        state = (f"<span style='color:{style.ERROR}'><b>{len(conflicts)} conflict"
                 f"{'s' * (len(conflicts) != 1)}</b> (red rows; hover for the other action)</span>"
                 if conflicts else "no conflicts")
        self.summary.setText(f"{len(acts)} actions · {changed} changed from the default (bold) · {state}")

    def rows(self) -> list[dict]:
        """The table as shown (visible rows only), for tests and the screenshot check."""
        out = []
        for r, name in enumerate(self._names):
            if not self.table.isRowHidden(r):
                out.append({"name": name, **{c.lower(): self.table.item(r, i).text()
                                             for i, c in enumerate(self.COLUMNS)}})
        return out

    def _filter(self, text: str) -> None:
        words = text.lower().split()
        for r in range(self.table.rowCount()):
            hay = " ".join(self.table.item(r, c).text().lower() for c in range(self.table.columnCount()))
            self.table.setRowHidden(r, not all(w in hay for w in words))

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self._names[rows[0].row()] if rows else None

    def select(self, name: str) -> None:
        row = self._names.index(self.keymap.action(name).name)
        self.table.selectRow(row)
        self.table.scrollToItem(self.table.item(row, 0), QtWidgets.QAbstractItemView.PositionAtCenter)

    def _on_select(self) -> None:
        name = self.selected_name()
        a = self.keymap.action(name) if name else None
        editable = a is not None and not a.fixed
        for w in (self.key_edit, self.assign_button, self.clear_button, self.reset_button):
            w.setEnabled(editable)
        if a is not None:
            self.key_edit.setKeySequence(QtGui.QKeySequence(self.keymap.key_text(a.name)))
            if a.fixed:
                self._say(f"{a.label}: fixed, cannot be changed")

    # -- editing
    def assign(self, name: str, key: str) -> bool:
        """Give ``name`` the single key ``key`` (what Assign does); False with the reason shown."""
        return self._apply(lambda n: self.keymap.set_keys(n, (key,) if key else ()), name)

    def _assign(self) -> None:
        name = self.selected_name()
        if name is None:
            self._say("select an action first", error=True)
            return
        seq = self.key_edit.keySequence()
        if seq.count() > 1:
            self._say("one key combination per shortcut", error=True)
            return
        self.assign(name, seq.toString(QtGui.QKeySequence.PortableText))

    def _apply(self, change, name: str | None = None) -> bool:
        name = name or self.selected_name()
        if name is None:
            self._say("select an action first", error=True)
            return False
        try:
            change(name)
        except ShortcutError as exc:
            self._say(f"Refused: {exc}", error=True)
            return False
        keys = self.keymap.key_text(name, " / ") or "no key"
        self._say(f"{self.keymap.action(name).label}: {keys}")
        return True

    def _reset_all(self) -> None:
        self.keymap.reset_all()
        self._say("all shortcuts back to their defaults")

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(f"color: {style.ERROR if error else style.TEXT_DIM}")
