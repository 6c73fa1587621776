"""Label suggestions for the Annotate tab: the encoder's top primitives for a segment, off the UI thread."""
from __future__ import annotations

import concurrent.futures
from pathlib import Path

from PySide6 import QtCore

from app.episode_source import frames_for_suggester
from recorder.messages import one_line


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
                frames = frames_for_suggester(key[0])   # the path (HDF5) or decoded frames (LeRobot)
                try:
                    result = self._suggester[1].suggest(frames, [(key[1], key[2])], k=self.k)[0]
                finally:
                    if hasattr(frames, "close"):
                        frames.close()
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
