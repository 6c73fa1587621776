"""The Annotate tab's model: one open episode, its annotators' documents, undo, edits, proposals.

Nothing here draws. The UI thread only calls methods that return at once: episode loading,
frame decoding, saving and proposing all run on worker threads and report back through
signals (queued into the UI thread because this object lives there).

Edits are ``recorder.annotations`` operations wrapped in ``QUndoCommand``s: redo applies the
operation, undo applies the inverse the document returned, so the command holds no editing logic.
Only the current annotator's document is editable; other annotators' documents are views.

The other concerns live beside it, one per module: what is read of an episode
(app/annotate_episode.py), frames (app/frame_cache.py), autosave (app/annotate_autosave.py: the save
runs on this controller's single file-worker thread, which also runs proposals, so two writers never
touch one file), playback (app/playback.py) and label suggestions (app/label_suggestions.py).

(``QUndoStack`` lives in QtGui in Qt 6; it needs no display and no widget.)
"""
from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
from PySide6 import QtCore
from PySide6.QtGui import QUndoCommand, QUndoStack

from app.annotate_autosave import AUTOSAVE_DEBOUNCE_MS, AUTOSAVE_MAX_S, Autosave  # noqa: F401  (re-exported)
from app.annotate_episode import EpisodeData, annotation_status, load_episode
from app.episode_source import source_for
from app.frame_cache import FrameCache
from app.label_suggestions import SuggestionService
from app.playback import Playback
from recorder.annotations import (
    AcceptAll,
    AnnotationDoc,
    AnnotationError,
    Delete,
    Insert,
    Merge,
    MoveBoundary,
    Relabel,
    Replace,
    Segment,
    SetField,
    Split,
    boundary_agreement,
    quality_alpha,
)
from recorder.lerobot_annotations import IMPORTED
from recorder.messages import one_line

__all__ = ["AnnotateController", "EpisodeData", "FrameCache", "SuggestionService", "annotation_status",
           "load_episode", "describe", "PROPOSALS"]

AGREEMENT_TOL = 3              # boundary F1 tolerance in frames (DESIGN: ±3)
PROPOSALS = "auto"             # annotator name of the automatic proposals (annotate-propose)


# ------------------------------------------------------------------------------------------------
# Undo commands
# ------------------------------------------------------------------------------------------------


def describe(op) -> str:
    """Undo-history text for an operation."""
    names = {MoveBoundary: "Move boundary", Split: "Split segment", Merge: "Merge segments",
             Relabel: "Set primitive", SetField: "Edit field", Delete: "Delete segment",
             AcceptAll: "Accept all proposals", Replace: "Replace segments", Insert: "Add segment"}
    text = names.get(type(op), type(op).__name__)
    if isinstance(op, SetField):
        text = f"Set {op.name}"
    return text


class OpCommand(QUndoCommand):
    """redo = doc.apply(op), undo = doc.apply(inverse); the document's own checks guard both."""

    def __init__(self, controller: "AnnotateController", op, doc_after: AnnotationDoc, inverse):
        super().__init__(describe(op))
        self._c = controller
        self._op = op
        self._inverse = inverse
        self._after = doc_after
        self._first = True

    def redo(self) -> None:
        if self._first:   # push() calls redo; the edit was already validated by applying it
            self._first = False
            self._c._set_doc(self._after)
            return
        doc, self._inverse = self._c.doc.apply(self._op)
        self._c._set_doc(doc)

    def undo(self) -> None:
        doc, _ = self._c.doc.apply(self._inverse)
        self._c._set_doc(doc)


# ------------------------------------------------------------------------------------------------
# Controller
# ------------------------------------------------------------------------------------------------


class AnnotateController(QtCore.QObject):
    episodeOpened = QtCore.Signal(object)          # EpisodeData
    episodeFailed = QtCore.Signal(object, str)     # path, one-line message
    segmentsChanged = QtCore.Signal()              # the shown document changed
    frameChanged = QtCore.Signal(int)
    frameReady = QtCore.Signal(int, object, object)  # frame, rgb, depth (None unless asked for)
    playingChanged = QtCore.Signal(bool)
    loopChanged = QtCore.Signal(bool)
    saveStateChanged = QtCore.Signal(str, str)     # "saved" | "saving" | "failed" | "idle", text
    busyChanged = QtCore.Signal(str)               # "" when idle, else what runs (proposals)
    message = QtCore.Signal(str)                   # one-line notice (rejected edit, read-only …)
    statusChanged = QtCore.Signal(object, str, list)  # path, new|proposed|verified, annotators
    keyframesChanged = QtCore.Signal()
    viewChanged = QtCore.Signal(str, bool)         # annotator shown, editable

    # Internal cross-thread hops (emitted on workers, delivered on the UI thread).
    _loaded = QtCore.Signal(object, int, object, str)
    _proposed = QtCore.Signal(object, object, object, str)
    _frameError = QtCore.Signal(str)

    def __init__(self, annotator: str, parent: QtCore.QObject | None = None, *, cache_frames: int = 48):
        super().__init__(parent)
        if not annotator:
            raise AnnotationError("annotator name must not be empty")
        self.annotator = annotator
        self.cache_frames = cache_frames
        self.episode: EpisodeData | None = None
        self.docs: dict[str, AnnotationDoc] = {}
        self._doc: AnnotationDoc | None = None
        self._view = annotator
        self.frame = 0
        self.undo_stack = QUndoStack(self)
        self._cache: FrameCache | None = None
        self._with_depth = False
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="annotate-io")
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="annotate-load")
        self._load_token = 0
        self._pending: list[concurrent.futures.Future] = []
        self._autosave = Autosave(self._save_target, self._submit_io, self)
        self._autosave.stateChanged.connect(self.saveStateChanged)
        self._autosave.savedCurrent.connect(self._on_saved_current)
        self._playback = Playback(lambda: self.frame, self.set_frame, span_at=self._segment_span, parent=self)
        self._playback.playingChanged.connect(self.playingChanged)
        self._busy = ""
        self._loaded.connect(self._on_loaded)
        self._proposed.connect(self._on_proposed)
        self._frameError.connect(lambda text: self.message.emit(f"frames: {text}"))
        self.suggestions = SuggestionService(self)

    # -- episode ---------------------------------------------------------------------------------

    def open_episode(self, path: str | Path) -> None:
        """Start loading; ``episodeOpened`` or ``episodeFailed`` follows. Pending edits of the
        current episode are saved first (the save is queued ahead of the load)."""
        self.flush()
        self.set_playing(False)
        self._load_token += 1
        token, path = self._load_token, Path(path)

        def job():
            try:
                self._loaded.emit(path, token, load_episode(path), "")
            except Exception as exc:
                self._loaded.emit(path, token, None, one_line(exc))

        self._loader.submit(job)

    def _on_loaded(self, path: Path, token: int, data: EpisodeData | None, error: str) -> None:
        if token != self._load_token:
            return   # the user already picked another episode
        if data is None:
            self.episodeFailed.emit(path, error)
            return
        self._close_cache()
        self.episode = data
        self.docs = dict(data.docs)
        self._doc = self._initial_doc()
        self._view = self.annotator
        self.undo_stack.clear()
        self._autosave.reset()
        self.frame = 0
        self._playback.loop_span = None
        if data.has_images:
            self._cache = FrameCache(data.path, self._deliver_frame, capacity=self.cache_frames,
                                     with_depth=self._with_depth,
                                     on_error=self._frameError.emit)
        self.episodeOpened.emit(data)
        self.viewChanged.emit(self._view, True)
        self.segmentsChanged.emit()
        self.set_frame(0, force=True)

    def _initial_doc(self) -> AnnotationDoc:
        """My document; a first pass starts from the automatic proposals (saved once edited)."""
        n = self.episode.n_frames
        mine = self.docs.get(self.annotator)
        if mine is not None:
            return mine
        auto = self.docs.get(PROPOSALS) or self.docs.get(IMPORTED)   # proposals, else a dataset's own subtasks
        return AnnotationDoc(self.annotator, n, auto.segments if auto is not None else ())

    def close_episode(self) -> None:
        self.flush()
        self.set_playing(False)
        self._close_cache()
        self.episode = None
        self._doc = None
        self.docs = {}
        self.undo_stack.clear()

    def _close_cache(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    @property
    def doc(self) -> AnnotationDoc | None:
        """The editable document (the current annotator's)."""
        return self._doc

    def shown_doc(self) -> AnnotationDoc | None:
        """The document on screen: mine, or another annotator's (read-only)."""
        if self._view == self.annotator:
            return self._doc
        return self.docs.get(self._view)

    # -- annotators ------------------------------------------------------------------------------

    def annotators(self) -> list[str]:
        names = set(self.docs) | ({self.annotator} if self.episode is not None else set())
        return sorted(names, key=lambda n: (n != self.annotator, n == PROPOSALS, n))

    @property
    def view(self) -> str:
        return self._view

    def is_editable(self) -> bool:
        return self.episode is not None and self._view == self.annotator

    def set_view(self, annotator: str) -> None:
        if annotator not in self.annotators():
            raise AnnotationError(f"no annotator {annotator!r} in this episode")
        if annotator != self._view:
            self._view = annotator
            self.viewChanged.emit(annotator, annotator == self.annotator)
            self.segmentsChanged.emit()

    def agreement(self) -> dict | None:
        """Boundary F1 (±3 frames) and quality α between my document and the viewed one (or the
        first other annotator's); None with fewer than two documents."""
        if self.episode is None or self._doc is None:
            return None
        other_name = self._view if self._view != self.annotator else next(
            (n for n in self.annotators() if n != self.annotator and n != PROPOSALS),
            PROPOSALS if PROPOSALS in self.docs else None)
        if other_name is None or other_name not in self.docs:
            return None
        other = self.docs[other_name]
        f1 = boundary_agreement(self._doc, other, AGREEMENT_TOL)
        try:
            alpha: float | None = quality_alpha([self._doc, other])
        except ValueError:
            alpha = None   # fewer than two scored units: α undefined
        return {"other": other_name, "boundary_f1": f1, "quality_alpha": alpha, "tol": AGREEMENT_TOL}

    # -- edits -----------------------------------------------------------------------------------

    def apply(self, op) -> bool:
        """Apply an operation to my document through the undo stack; False (and a message) when
        it is rejected — the document is then unchanged."""
        if self.episode is None or self._doc is None:
            self.message.emit("open an episode first")
            return False
        if not self.is_editable():
            self.message.emit(f"{self._view}'s segments are read-only; switch the view to {self.annotator} to edit")
            return False
        try:
            after, inverse = self._doc.apply(op)
        except AnnotationError as exc:
            self.message.emit(f"{describe(op)}: {one_line(exc)}")
            return False
        self.undo_stack.push(OpCommand(self, op, after, inverse))
        return True

    def move_boundary(self, index: int, edge: str, frame: int) -> bool:
        return self.apply(MoveBoundary(int(index), int(frame), edge))

    def split_at(self, frame: int) -> bool:
        doc = self._doc
        i = doc.segment_at(frame) if doc is not None else None
        if i is None:
            self.message.emit(f"split: no segment at frame {frame}")
            return False
        return self.apply(Split(i, int(frame)))

    def fill_gap(self, frame: int, primitive: str = "move") -> bool:
        """A new human segment over the unsegmented span around ``frame``: how an episode without
        proposals (e.g. a LeRobot dataset without EE poses) is segmented by hand — fill, then
        split (S) and label (1–9)."""
        doc = self._doc
        if doc is None:
            self.message.emit("open an episode first")
            return False
        if doc.segment_at(frame) is not None:
            self.message.emit(f"frame {frame} is already in a segment; split it instead (S)")
            return False
        start = max((s.end for s in doc.segments if s.end <= frame), default=0)
        end = min((s.start for s in doc.segments if s.start > frame), default=doc.n_frames)
        return self.apply(Insert(Segment(start, end, primitive, source="human")))

    def merge(self, index: int) -> bool:
        return self.apply(Merge(int(index)))

    def delete(self, index: int) -> bool:
        return self.apply(Delete(int(index)))

    def relabel(self, index: int, primitive: str) -> bool:
        return self.apply(Relabel(int(index), primitive))

    def set_field(self, index: int, name: str, value) -> bool:
        if name == "primitive":
            return self.relabel(index, value)
        return self.apply(SetField(int(index), name, value))

    def accept_suggestion(self, index: int) -> bool:
        """Relabel segment ``index`` with the encoder's top suggestion (one undoable step)."""
        doc = self._doc
        if self.episode is None or doc is None or not 0 <= index < len(doc):
            self.message.emit("select a segment first")
            return False
        seg = doc[index]
        got = self.suggestions.cached(self.episode.path, seg.start, seg.end)
        if not got:
            self.message.emit("no suggestion for this segment yet" if self.suggestions.checkpoint else
                              "no encoder loaded: choose one in Annotate ▸ Choose encoder for suggestions")
            return False
        return self.relabel(index, got[0][0])

    def accept_all(self) -> bool:
        if self._doc is not None and not any(s.source == "auto" for s in self._doc.segments):
            self.message.emit("no unverified proposals to accept")
            return False
        return self.apply(AcceptAll())

    def undo(self) -> None:
        if self.is_editable():
            self.undo_stack.undo()

    def redo(self) -> None:
        if self.is_editable():
            self.undo_stack.redo()

    def _set_doc(self, doc: AnnotationDoc) -> None:
        self._doc = doc
        self.docs[self.annotator] = doc
        self._autosave.changed()
        self.segmentsChanged.emit()

    # -- saving (app/annotate_autosave.py) -------------------------------------------------------

    @property
    def save_state(self) -> tuple[str, str]:
        """(idle | dirty | saving | saved | failed, the status bar's text)."""
        return self._autosave.state

    @property
    def last_save_s(self) -> float:
        return self._autosave.last_save_s

    def is_dirty(self) -> bool:
        return self._autosave.is_dirty()

    def save_now(self, *, queue_behind: bool = False) -> None:
        """Queue a save of my document on the file worker (no-op when nothing changed).
        ``queue_behind``: do not wait for a running save's result (the worker runs saves in order)."""
        self._autosave.save_now(queue_behind=queue_behind)

    def flush(self) -> None:
        """Queue any unsaved edit now (before switching episodes or exiting)."""
        self._autosave.flush()

    def _save_target(self) -> tuple[Path, AnnotationDoc, bool] | None:
        if self.episode is None:
            return None
        return self.episode.path, self._doc, self.episode.has_store

    def _submit_io(self, job) -> None:
        """Run ``job`` on the single file-worker thread (saves and proposals, in order)."""
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._io.submit(job))

    def _on_saved_current(self, path: Path) -> None:
        self.episode.has_store = True
        status, names = annotation_status(self.docs)
        self.statusChanged.emit(path, status, names)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Save what is unsaved and wait for the file worker (application exit)."""
        self.set_playing(False)
        self.flush()
        concurrent.futures.wait(self._pending, timeout=timeout)
        for receiver in (self._autosave, self):   # deliver the results (revision, status)
            QtCore.QCoreApplication.sendPostedEvents(receiver)
        self._close_cache()
        self._io.shutdown(wait=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self.suggestions.shutdown()

    # -- proposals -------------------------------------------------------------------------------

    def propose(self) -> bool:
        """Keyframes + automatic segment proposals on the file worker; the proposals become the
        ``auto`` document, and my document when it is still empty (an undoable step)."""
        if self.episode is None:
            self.message.emit("open an episode first")
            return False
        if self._busy:
            self.message.emit(f"busy: {self._busy}")
            return False
        ep = self.episode
        if ep.cannot_propose:
            self.message.emit(f"propose: {ep.cannot_propose}")
            return False
        self._set_busy("Proposing segments…")
        src = source_for(ep.path)

        def job():
            from recorder.keyframes import detect_keyframes
            from recorder.segments import propose_doc
            try:
                kfs = detect_keyframes(ep.ee_pose, ep.gripper)
                doc = propose_doc(ep.ee_pose, ep.gripper, ep.fps, annotator=PROPOSALS)
                src.store_proposals(kfs, doc)   # HDF5: /keyframes + store; LeRobot: the sidecar
                self._proposed.emit(ep.path, [(k.frame, k.kind) for k in kfs], doc, "")
            except Exception as exc:
                self._proposed.emit(ep.path, None, None, one_line(exc))

        self._submit_io(job)
        return True

    def _on_proposed(self, path: Path, keyframes, doc: AnnotationDoc | None, error: str) -> None:
        self._set_busy("")
        if error:
            self.message.emit(f"propose: {error}")
            return
        if self.episode is None or self.episode.path != path:
            return
        self.episode.keyframes = list(keyframes)
        self.episode.has_store = True
        self.docs[PROPOSALS] = doc
        self.keyframesChanged.emit()
        if self._doc is not None and len(self._doc) == 0 and len(doc):
            self.apply(Replace(0, 0, doc.segments))
        else:
            self.segmentsChanged.emit()
        status, names = annotation_status(self.docs)
        self.statusChanged.emit(path, status, names)
        self.message.emit(f"proposed {len(doc)} segments from {len(keyframes)} keyframes")

    def _set_busy(self, text: str) -> None:
        self._busy = text
        self.busyChanged.emit(text)

    # -- frames and playback ---------------------------------------------------------------------

    def set_frame(self, frame: int, *, force: bool = False) -> None:
        if self.episode is None:
            return
        frame = int(np.clip(frame, 0, self.episode.n_frames - 1))
        if frame == self.frame and not force:
            return
        self.frame = frame
        self.frameChanged.emit(frame)
        if self._cache is not None:
            hit = self._cache.get(frame)
            if hit is not None:
                self.frameReady.emit(frame, *hit)
            else:
                self._cache.request(frame)

    def cached_frame(self, frame: int):
        return self._cache.get(frame) if self._cache is not None else None

    @property
    def frame_cache(self) -> FrameCache | None:
        return self._cache

    def set_depth_enabled(self, on: bool) -> None:
        self._with_depth = bool(on)
        if self._cache is not None:
            self._cache.set_with_depth(on)
            self.set_frame(self.frame, force=True)

    def _deliver_frame(self, i: int, rgb, depth) -> None:
        self.frameReady.emit(i, rgb, depth)   # worker thread → queued to the UI thread

    def is_playing(self) -> bool:
        return self._playback.is_playing()

    def set_playing(self, on: bool) -> None:
        if self.episode is None or on == self.is_playing():
            return
        self._playback.n_frames, self._playback.fps = self.episode.n_frames, self.episode.fps
        self._playback.set_playing(on)

    def toggle_playing(self) -> None:
        self.set_playing(not self.is_playing())

    def set_loop(self, on: bool) -> None:
        """Loop the segment under the playhead while playing (it is picked when looping starts)."""
        self._playback.set_loop(on)
        self.loopChanged.emit(self._playback.loop)

    def is_looping(self) -> bool:
        return self._playback.loop

    def _segment_span(self, frame: int) -> tuple[int, int] | None:
        doc = self.shown_doc()
        i = doc.segment_at(frame) if doc is not None else None
        return (doc[i].start, doc[i].end) if i is not None else None
