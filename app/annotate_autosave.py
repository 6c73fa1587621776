"""Autosave of the Annotate tab's editable document.

An edit arms a debounce timer (``AUTOSAVE_DEBOUNCE_MS`` of quiet), but the first unsaved edit is on
disk within ``AUTOSAVE_MAX_S`` even while edits keep coming. The save itself
(``recorder.annotations.save_annotations``: one pwrite + fsync into the episode's A/B store) runs on
the owner's single file-worker thread, which also runs proposals, so two writers never touch one file.
Revisions tell a result apart from newer edits: a save finishing while the user kept editing leaves
the document dirty and saves again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from PySide6 import QtCore

from app.episode_source import source_for
from recorder.annotations import AnnotationDoc
from recorder.messages import one_line

AUTOSAVE_DEBOUNCE_MS = 700     # quiet time after an edit before saving
AUTOSAVE_MAX_S = 1.5           # ... but never let the first unsaved edit wait longer than this


class Autosave(QtCore.QObject):
    """Save state of one editable document.

    ``target()`` returns ``(path, doc, has_store)`` of what to save now, or None when no episode is
    open; ``submit(job)`` runs ``job`` on the file worker. ``stateChanged(state, text)``: state is
    idle | dirty | saving | saved | failed. ``savedCurrent(path)`` follows a successful save of the
    episode that is still open (the owner marks its store as present and refreshes its status).
    """

    stateChanged = QtCore.Signal(str, str)
    savedCurrent = QtCore.Signal(object)
    _saved = QtCore.Signal(object, int, str, object)   # worker → UI thread: path, revision, error, seconds

    def __init__(self, target: Callable[[], tuple[Path, AnnotationDoc, bool] | None],
                 submit: Callable[[Callable[[], None]], None], parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._target = target
        self._submit = submit
        self.revision = 0          # bumps on every change of the editable document
        self.saved_revision = 0
        self._inflight = False
        self._first_dirty: float | None = None
        self.state = ("idle", "")
        self.last_save_s = 0.0
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.save_now)
        self._saved.connect(self._on_saved)

    def reset(self) -> None:
        """A freshly opened document: nothing unsaved."""
        self.revision = self.saved_revision = 0
        self._first_dirty = None
        self._set_state("idle", "")

    def is_dirty(self) -> bool:
        return self.revision != self.saved_revision

    def changed(self) -> None:
        """The editable document changed: arm the save."""
        self.revision += 1
        if self._first_dirty is None:
            self._first_dirty = time.monotonic()
        waited = time.monotonic() - self._first_dirty
        self._timer.start(int(max(0.0, min(AUTOSAVE_DEBOUNCE_MS / 1000.0, AUTOSAVE_MAX_S - waited)) * 1000))
        if self.state[0] != "saving":
            self._set_state("dirty", "Unsaved changes")

    def save_now(self, *, queue_behind: bool = False) -> None:
        """Queue a save on the file worker (no-op when nothing changed). ``queue_behind``: do not
        wait for a running save's result (the worker runs saves in order)."""
        self._timer.stop()
        target = self._target()
        if target is None or not self.is_dirty():
            return
        if self._inflight and not queue_behind:
            self._timer.start(100)   # the running save's result decides; then save again
            return
        path, doc, has_store = target
        revision = self.revision
        self._inflight = True
        self._first_dirty = None
        self._set_state("saving", "Saving… (first save prepares the episode's annotation store)"
                        if not has_store else "Saving…")

        src = source_for(path)   # HDF5 A/B store, or a LeRobot dataset's subtasks + sidecar

        def job():
            t = time.perf_counter()
            try:
                src.save_doc(doc)
                self._saved.emit(path, revision, "", time.perf_counter() - t)
            except Exception as exc:
                self._saved.emit(path, revision, one_line(exc), time.perf_counter() - t)

        self._submit(job)

    def flush(self) -> None:
        """Queue any unsaved edit now (before switching episodes or exiting)."""
        if self._target() is not None and self.is_dirty():
            self.save_now(queue_behind=True)

    def _on_saved(self, path: Path, revision: int, error: str, seconds: float) -> None:
        self._inflight = False
        self.last_save_s = float(seconds)
        target = self._target()
        current = target is not None and target[0] == path
        if error:
            self._set_state("failed", f"Save failed: {error}")
            if current and self._first_dirty is None:
                self._first_dirty = time.monotonic()
            return
        if current:
            self.saved_revision = max(self.saved_revision, revision)
            self.savedCurrent.emit(path)
            if self.is_dirty():
                self.save_now()
            else:
                self._set_state("saved", "Saved ✓")
        else:
            self._set_state("saved", f"Saved ✓ ({path.name})")

    def _set_state(self, state: str, text: str) -> None:
        self.state = (state, text)
        self.stateChanged.emit(state, text)
