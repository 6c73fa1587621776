"""The Annotate tab's model: one open episode, its annotators' documents, undo, autosave, frames.

Nothing here draws. The UI thread only calls methods that return at once: episode loading,
frame decoding, saving and proposing all run on worker threads and report back through
signals (queued into the UI thread because this object lives there).

Edits are ``recorder.annotations`` operations wrapped in ``QUndoCommand``s: redo applies the
operation, undo applies the inverse the document returned, so the command holds no editing logic.
Only the current annotator's document is editable; other annotators' documents are views.

Autosave: an edit arms a debounce timer; the save runs on the single file-worker thread (which
also runs proposals, so two writers never touch one file). The first unsaved edit is on disk
within ``AUTOSAVE_MAX_S`` even while edits keep coming.

(``QUndoStack`` lives in QtGui in Qt 6; it needs no display and no widget.)
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6 import QtCore
from PySide6.QtGui import QUndoCommand, QUndoStack

from recorder.annotations import (
    STORE_PATH,
    AcceptAll,
    AnnotationDoc,
    AnnotationError,
    Delete,
    Merge,
    MoveBoundary,
    Relabel,
    Replace,
    SetField,
    Split,
    boundary_agreement,
    load_annotations,
    quality_alpha,
    save_annotations,
)
from recorder.messages import one_line

AUTOSAVE_DEBOUNCE_MS = 700     # quiet time after an edit before saving
AUTOSAVE_MAX_S = 1.5           # ... but never let the first unsaved edit wait longer than this
AGREEMENT_TOL = 3              # boundary F1 tolerance in frames (DESIGN: ±3)
PROPOSALS = "auto"             # annotator name of the automatic proposals (annotate-propose)


# ------------------------------------------------------------------------------------------------
# Episode data (what the UI needs, read once off the UI thread)
# ------------------------------------------------------------------------------------------------


@dataclass
class EpisodeData:
    path: Path
    n_frames: int
    fps: float
    time: np.ndarray
    ee_pose: np.ndarray
    gripper: np.ndarray
    keyframes: list[tuple[int, str]]
    docs: dict[str, AnnotationDoc]
    has_images: bool
    depth_scale: float = 0.001
    has_store: bool = False
    meta: dict = field(default_factory=dict)

    def curves(self) -> dict[str, np.ndarray]:
        """Gripper opening, EE speed (m/s) and height (m) per frame, for the timeline."""
        pos = self.ee_pose[:, :3]
        if self.n_frames > 1:
            dt = np.gradient(self.time) if np.all(np.diff(self.time) > 0) else np.full(self.n_frames, 1.0 / self.fps)
            speed = np.linalg.norm(np.gradient(pos, axis=0), axis=1) / dt
        else:
            speed = np.zeros(self.n_frames)
        return {"gripper": self.gripper.astype(float), "speed": speed, "height": pos[:, 2].copy()}


def load_episode(path: Path) -> EpisodeData:
    """Read everything but the images (raises EpisodeError / StoreError with one-line messages)."""
    import h5py

    from recorder.episode import EpisodeReader

    with EpisodeReader(path) as r:
        data = EpisodeData(
            path=Path(path), n_frames=r.n_frames, fps=float(r.meta["fps"]), time=np.asarray(r.time, float),
            ee_pose=np.asarray(r.ee_pose, float), gripper=np.asarray(r.gripper, float),
            keyframes=[(k["index"], k["kind"]) for k in r.keyframes], docs={}, has_images=r.has_images,
            depth_scale=r.camera.depth_scale if r.camera is not None else 0.001, meta=dict(r.meta))
    with h5py.File(path, "r") as f:
        data.has_store = STORE_PATH in f
    data.docs = load_annotations(path)
    return data


def annotation_status(docs: dict[str, AnnotationDoc]) -> tuple[str, list[str]]:
    """(new | proposed | verified, annotators with segments) — the dataset browser's column,
    computed from the crash-safe store (the dataset index reads only the older layout)."""
    names = sorted(n for n, d in docs.items() if len(d))
    if not names:
        return "new", []
    human = any(s.source == "human" for n in names for s in docs[n].segments)
    return ("verified" if human else "proposed"), names


# ------------------------------------------------------------------------------------------------
# Frame cache
# ------------------------------------------------------------------------------------------------


class FrameCache:
    """Decodes frames of one episode on its own thread into a small LRU.

    ``request(i)`` replaces any earlier request that has not started (the newest wins: while
    scrubbing, frames the playhead already passed are never decoded). After serving a request
    the thread prefetches a few frames ahead in the direction of travel until a new request comes.
    Decoding happens in a child process (``use_process``), see ``_Decoder``.
    ``on_frame(i, rgb, depth)`` is called on the worker thread.
    """

    def __init__(self, path: Path, on_frame: Callable[[int, np.ndarray, np.ndarray | None], None], *,
                 capacity: int = 48, prefetch: int = 4, with_depth: bool = False,
                 on_error: Callable[[str], None] | None = None, use_process: bool = True):
        self.path = Path(path)
        self.use_process = bool(use_process)
        self.capacity = int(capacity)
        self.prefetch = int(prefetch)
        self._with_depth = bool(with_depth)
        self._on_frame = on_frame
        self._on_error = on_error
        self._lru: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = collections.OrderedDict()
        self._cond = threading.Condition()
        self._want: int | None = None
        self._last = 0
        self._closed = False
        self.decoded = 0          # frames read from the file (for the bench and tests)
        self.dropped_requests = 0  # requests superseded before they were served
        self._thread = threading.Thread(target=self._run, name=f"frames {self.path.name}", daemon=True)
        self._thread.start()

    def set_with_depth(self, on: bool) -> None:
        with self._cond:
            if on != self._with_depth:
                self._with_depth = bool(on)
                self._lru.clear()

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        with self._cond:
            hit = self._lru.get(i)
            if hit is not None:
                self._lru.move_to_end(i)
            return hit

    def request(self, i: int) -> None:
        with self._cond:
            if self._want is not None and self._want != i:
                self.dropped_requests += 1
            self._want = int(i)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=2.0)

    def _store(self, i: int, item) -> None:
        with self._cond:
            self._lru[i] = item
            self._lru.move_to_end(i)
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)

    def _run(self) -> None:
        try:
            reader = _Decoder(self.path) if self.use_process else _InThreadReader(self.path)
        except Exception as exc:  # reported once; the view then shows no images
            if self._on_error:
                self._on_error(one_line(exc))
            return
        try:
            n = reader.n_frames
            while True:
                with self._cond:
                    while self._want is None and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    i, self._want = self._want, None
                    direction = 1 if i >= self._last else -1
                    # Prefetch serves playback and frame steps; while scrubbing (big jumps) it
                    # would only keep the decoder busy when the next request arrives.
                    prefetch = self.prefetch if abs(i - self._last) <= 2 else 0
                    self._last = i
                    item = self._lru.get(i)
                    depth_on = self._with_depth
                if item is None:
                    item = self._decode(reader, i, depth_on)
                    if item is None:
                        continue
                    self._store(i, item)
                self._on_frame(i, *item)
                for k in range(1, prefetch + 1):
                    j = i + direction * k
                    with self._cond:
                        if self._want is not None or self._closed or not 0 <= j < n:
                            break
                        if j in self._lru:
                            continue
                    item = self._decode(reader, j, depth_on)
                    if item is not None:
                        self._store(j, item)
        finally:
            reader.close()

    def _decode(self, reader, i: int, depth_on: bool):
        try:
            item = reader.read(i, depth_on)
        except Exception as exc:
            if self._on_error:
                self._on_error(one_line(exc))
            return None
        self.decoded += 1
        return item


class _InThreadReader:
    """Decode on the calling thread (h5py keeps the GIL while decompressing: the UI thread
    stalls for each frame; used where no child process can be started)."""

    def __init__(self, path: Path):
        from recorder.episode import EpisodeReader
        self._r = EpisodeReader(path, migrate=False)
        self.n_frames = self._r.n_frames

    def read(self, i: int, depth_on: bool):
        return self._r.rgb(i), (self._r.depth(i) if depth_on else None)

    def close(self) -> None:
        self._r.close()


def _decoder_main(path: str, conn) -> None:
    """Child process: serve (frame, with_depth) requests with decoded frames over a pipe."""
    from recorder.episode import EpisodeReader
    try:
        reader = EpisodeReader(path, migrate=False)
    except Exception as exc:
        conn.send(("error", one_line(exc)))
        return
    conn.send(("ready", reader.n_frames))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        i, depth_on = msg
        try:
            conn.send(("frame", reader.rgb(i), reader.depth(i) if depth_on else None))
        except Exception as exc:
            conn.send(("error", one_line(exc)))
    reader.close()


class _Decoder:
    """Frames decoded in a child process. h5py holds the GIL while it decompresses a frame, so a
    decoding thread would stall the UI thread for as long (bench/gui_annotate.py); a process
    decodes on the other core and the UI thread only pays for receiving the array."""

    def __init__(self, path: Path):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")   # no fork: the parent runs Qt and other threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_decoder_main, args=(str(path), child), daemon=True,
                                 name=f"frames {path.name}")
        self._proc.start()
        child.close()
        kind, value = self._recv()
        if kind != "ready":
            self.close()
            raise RuntimeError(value)
        self.n_frames = int(value)

    def _recv(self):
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"frame decoder process ended (exit code {self._proc.exitcode})") from None

    def read(self, i: int, depth_on: bool):
        self._conn.send((int(i), bool(depth_on)))
        msg = self._recv()
        if msg[0] != "frame":
            raise RuntimeError(msg[1])
        return msg[1], msg[2]

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._proc.join(timeout=2.0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=1.0)
        self._conn.close()


# ------------------------------------------------------------------------------------------------
# Undo commands
# ------------------------------------------------------------------------------------------------


def describe(op) -> str:
    """Undo-history text for an operation."""
    names = {MoveBoundary: "Move boundary", Split: "Split segment", Merge: "Merge segments",
             Relabel: "Set primitive", SetField: "Edit field", Delete: "Delete segment",
             AcceptAll: "Accept all proposals", Replace: "Replace segments"}
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


class SuggestionService(QtCore.QObject):
    """Label suggestions (policies.suggest.Suggester: the encoder's top primitives with confidence)
    for segments, computed on a worker thread and cached per episode + segment span, so moving the
    selection back to a segment is instant and an edited boundary asks again. The model loads on the
    worker too (the first request after a checkpoint change), never on the UI thread."""

    ready = QtCore.Signal(object, object)          # key (path, start, end), [(primitive, confidence), …]
    failed = QtCore.Signal(str)                    # one line (unreadable checkpoint, episode without camera …)
    _done = QtCore.Signal(int, object, object, str)

    def __init__(self, parent: QtCore.QObject | None = None, *, k: int = 3):
        super().__init__(parent)
        self.k = k
        self.checkpoint: Path | None = None
        self.error = ""                            # why the checkpoint cannot be used ("" when fine)
        self._suggester = None                     # (generation, Suggester), built on the worker
        self._generation = 0                       # a checkpoint change drops results still in flight
        self._cache: dict[tuple, list] = {}
        self._inflight: set[tuple] = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="annotate-suggest")
        self._done.connect(self._on_done)

    def set_checkpoint(self, path: str | Path | None) -> None:
        self._generation += 1
        self.checkpoint = Path(path) if path else None
        self._suggester, self.error = None, ""
        self._cache.clear()
        self._inflight.clear()

    @staticmethod
    def key(path: Path, start: int, end: int) -> tuple:
        return (str(path), int(start), int(end))

    def cached(self, path: Path, start: int, end: int) -> list | None:
        return self._cache.get(self.key(path, start, end))

    def request(self, path: Path, start: int, end: int) -> list | None:
        """The cached suggestions, or None after queueing their computation (``ready`` follows)."""
        key = self.key(path, start, end)
        if key in self._cache:
            return self._cache[key]
        if self.checkpoint is None or self.error or key in self._inflight:
            return None
        self._inflight.add(key)
        gen, checkpoint = self._generation, self.checkpoint

        def job():
            try:
                from policies.suggest import Suggester

                if self._suggester is None or self._suggester[0] != gen:
                    self._suggester = (gen, Suggester(checkpoint))
                result = self._suggester[1].suggest(key[0], [(key[1], key[2])], k=self.k)[0]
                self._done.emit(gen, key, result, "")
            except Exception as exc:
                self._done.emit(gen, key, None, one_line(exc))

        self._pool.submit(job)
        return None

    def _on_done(self, gen: int, key: tuple, result, error: str) -> None:
        if gen != self._generation:
            return
        self._inflight.discard(key)
        if error:
            if "segment" not in error:   # a bad span is that segment's problem; anything else the model's
                self.error = error
            self.failed.emit(error)
            return
        self._cache[key] = result
        self.ready.emit(key, result)

    def shutdown(self) -> None:
        self._generation += 1
        self._pool.shutdown(wait=False, cancel_futures=True)


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
    _saved = QtCore.Signal(object, int, str, object)
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
        self._revision = 0          # bumps on every change of the editable document
        self._saved_revision = 0
        self._save_inflight = False
        self._first_dirty: float | None = None
        self._pending: list[concurrent.futures.Future] = []
        self.save_state = ("idle", "")
        self.last_save_s = 0.0
        self._save_timer = QtCore.QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.timeout.connect(self.save_now)
        self._play_timer = QtCore.QTimer(self)
        self._play_timer.setTimerType(QtCore.Qt.PreciseTimer)
        self._play_timer.timeout.connect(self._on_play_tick)
        self._loop = False
        self._loop_span: tuple[int, int] | None = None
        self._busy = ""
        self._loaded.connect(self._on_loaded)
        self._saved.connect(self._on_saved)
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
        self._revision = self._saved_revision = 0
        self._first_dirty = None
        self.frame = 0
        self._loop_span = None
        if data.has_images:
            self._cache = FrameCache(data.path, self._deliver_frame, capacity=self.cache_frames,
                                     with_depth=self._with_depth,
                                     on_error=self._frameError.emit)
        self._set_save_state("idle", "")
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
        auto = self.docs.get(PROPOSALS)
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
        self._revision += 1
        if self._first_dirty is None:
            self._first_dirty = time.monotonic()
        waited = time.monotonic() - self._first_dirty
        self._save_timer.start(int(max(0.0, min(AUTOSAVE_DEBOUNCE_MS / 1000.0, AUTOSAVE_MAX_S - waited)) * 1000))
        if self.save_state[0] != "saving":
            self._set_save_state("dirty", "Unsaved changes")
        self.segmentsChanged.emit()

    # -- saving ----------------------------------------------------------------------------------

    def is_dirty(self) -> bool:
        return self._revision != self._saved_revision

    def save_now(self, *, queue_behind: bool = False) -> None:
        """Queue a save of my document on the file worker (no-op when nothing changed).
        ``queue_behind``: do not wait for a running save's result (the worker runs saves in order)."""
        self._save_timer.stop()
        if self.episode is None or not self.is_dirty():
            return
        if self._save_inflight and not queue_behind:
            self._save_timer.start(100)   # the running save's result decides; then save again
            return
        doc, revision, path = self._doc, self._revision, self.episode.path
        first = not self.episode.has_store
        self._save_inflight = True
        self._first_dirty = None
        self._set_save_state("saving", "Saving… (first save prepares the episode's annotation store)"
                             if first else "Saving…")

        def job():
            t = time.perf_counter()
            try:
                save_annotations(path, doc)
                self._saved.emit(path, revision, "", time.perf_counter() - t)
            except Exception as exc:
                self._saved.emit(path, revision, one_line(exc), time.perf_counter() - t)

        self._pending.append(self._io.submit(job))

    def _on_saved(self, path: Path, revision: int, error: str, seconds: float) -> None:
        self._save_inflight = False
        self._pending = [f for f in self._pending if not f.done()]
        self.last_save_s = float(seconds)
        current = self.episode is not None and self.episode.path == path
        if error:
            self._set_save_state("failed", f"Save failed: {error}")
            if current and self._first_dirty is None:
                self._first_dirty = time.monotonic()
            return
        if current:
            self.episode.has_store = True
            self._saved_revision = max(self._saved_revision, revision)
            if self.is_dirty():
                self.save_now()
            else:
                self._set_save_state("saved", "Saved ✓")
            status, names = annotation_status(self.docs)
            self.statusChanged.emit(path, status, names)
        else:
            self._set_save_state("saved", f"Saved ✓ ({path.name})")

    def flush(self) -> None:
        """Queue any unsaved edit now (before switching episodes or exiting)."""
        if self.episode is not None and self.is_dirty():
            self.save_now(queue_behind=True)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Save what is unsaved and wait for the file worker (application exit)."""
        self.set_playing(False)
        self.flush()
        concurrent.futures.wait(self._pending, timeout=timeout)
        QtCore.QCoreApplication.sendPostedEvents(self)   # deliver the result (status, revision)
        self._close_cache()
        self._io.shutdown(wait=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self.suggestions.shutdown()

    def _set_save_state(self, state: str, text: str) -> None:
        self.save_state = (state, text)
        self.saveStateChanged.emit(state, text)

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
        self._set_busy("Proposing segments…")

        def job():
            from recorder.keyframes import detect_keyframes, write_keyframes
            from recorder.segments import propose_doc
            try:
                kfs = detect_keyframes(ep.ee_pose, ep.gripper)
                doc = propose_doc(ep.ee_pose, ep.gripper, ep.fps, annotator=PROPOSALS)
                write_keyframes(ep.path, kfs)   # structural change: also creates the store
                save_annotations(ep.path, doc)
                self._proposed.emit(ep.path, [(k.frame, k.kind) for k in kfs], doc, "")
            except Exception as exc:
                self._proposed.emit(ep.path, None, None, one_line(exc))

        self._pending.append(self._io.submit(job))
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
        return self._play_timer.isActive()

    def set_playing(self, on: bool) -> None:
        if self.episode is None or on == self.is_playing():
            return
        if on:
            if self._loop:
                self._loop_span = self._segment_span(self.frame)
            elif self.frame >= self.episode.n_frames - 1:
                self.set_frame(0)
            self._play_timer.start(max(1, int(round(1000.0 / self.episode.fps))))
        else:
            self._play_timer.stop()
        self.playingChanged.emit(bool(on))

    def toggle_playing(self) -> None:
        self.set_playing(not self.is_playing())

    def set_loop(self, on: bool) -> None:
        """Loop the segment under the playhead while playing (it is picked when looping starts)."""
        self._loop = bool(on)
        self._loop_span = self._segment_span(self.frame) if on else None
        self.loopChanged.emit(self._loop)

    def is_looping(self) -> bool:
        return self._loop

    def _segment_span(self, frame: int) -> tuple[int, int] | None:
        doc = self.shown_doc()
        i = doc.segment_at(frame) if doc is not None else None
        return (doc[i].start, doc[i].end) if i is not None else None

    def _on_play_tick(self) -> None:
        nxt = self.frame + 1
        if self._loop and self._loop_span is not None:
            start, end = self._loop_span
            if not start <= nxt < end:
                nxt = start
        elif nxt >= self.episode.n_frames:
            self.set_playing(False)
            return
        self.set_frame(nxt)
