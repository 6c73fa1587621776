"""Frames of one recorded episode for scrubbing and playback: a small LRU filled by one decoding thread.

The newest request wins (frames the playhead already passed are never decoded) and the thread
prefetches a few frames in the direction of travel. Decoding runs in a child process by default:
h5py holds the GIL while it decompresses a frame, so a decoding *thread* would stall the UI thread for
as long (bench/gui_annotate.py). Qt-free: the owner gets frames through a callback on the worker thread.
"""
from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from recorder.messages import one_line


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


def _InThreadReader(path: Path):
    """Decode on the calling thread (h5py keeps the GIL while decompressing: the UI thread
    stalls for each frame; used where no child process can be started)."""
    from app.episode_source import source_for
    return source_for(path).frames()


def _decoder_main(path: str, conn) -> None:
    """Child process: serve (frame, with_depth) requests with decoded frames over a pipe."""
    from app.episode_source import source_for
    try:
        reader = source_for(path).frames()
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
            conn.send(("frame", *reader.read(i, depth_on)))
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
