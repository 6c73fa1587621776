"""RGB-D frames from the sim process to the app through shared memory.

Two slots and a publication counter: the writer fills slot ``n % 2`` and then publishes ``n``; a reader
copies the slot of the newest ``n`` and accepts the copy only if the slot still carries ``n`` afterwards
(a seqlock). The writer reuses a slot only two frames later, so a reader normally has a whole frame
period (≥ 50 ms) for a 1 ms copy and never blocks the renderer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

_META = 20  # per slot: seq, index, stamp, hw_stamp, T_base_camera (16)
_CTRL = 4  # published counter, width, height, reserved


@dataclass(frozen=True)
class FrameLayout:
    width: int
    height: int

    @property
    def rgb_bytes(self) -> int:
        return self.width * self.height * 3

    @property
    def depth_bytes(self) -> int:
        return self.width * self.height * 2

    @property
    def slot_bytes(self) -> int:
        return self.rgb_bytes + self.depth_bytes

    @property
    def header_bytes(self) -> int:
        return 8 * (_CTRL + 2 * _META)

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + 2 * self.slot_bytes


class FrameBuffer:
    """A view of one camera's shared-memory block (writer and reader share this class)."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: FrameLayout, owner: bool):
        self.shm = shm
        self.layout = layout
        self._owner = owner
        buf = shm.buf
        self._ctrl = np.ndarray((_CTRL,), np.int64, buf, 0)
        self._meta = np.ndarray((2, _META), np.float64, buf, 8 * _CTRL)
        h, w = layout.height, layout.width
        self._rgb = []
        self._depth = []
        for s in range(2):
            off = layout.header_bytes + s * layout.slot_bytes
            self._rgb.append(np.ndarray((h, w, 3), np.uint8, buf, off))
            self._depth.append(np.ndarray((h, w), np.uint16, buf, off + layout.rgb_bytes))

    @classmethod
    def create(cls, layout: FrameLayout) -> "FrameBuffer":
        shm = shared_memory.SharedMemory(create=True, size=layout.total_bytes)
        fb = cls(shm, layout, owner=True)
        fb._ctrl[:] = [0, layout.width, layout.height, 0]
        return fb

    @classmethod
    def attach(cls, name: str, layout: FrameLayout) -> "FrameBuffer":
        shm = shared_memory.SharedMemory(name=name)
        # The creating process owns cleanup; without this the attaching process's resource tracker
        # would unlink the block when it exits (Python < 3.13 registers attachments too).
        try:
            from multiprocessing import resource_tracker

            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        except Exception:
            pass
        return cls(shm, layout, owner=False)

    @property
    def name(self) -> str:
        return self.shm.name

    @property
    def published(self) -> int:
        return int(self._ctrl[0])

    def write(self, index: int, stamp: float, rgb: np.ndarray, depth: np.ndarray, T_base_camera: np.ndarray) -> None:
        n = self.published + 1
        s = n % 2
        self._meta[s, 0] = -1.0  # slot is being written
        np.copyto(self._rgb[s], rgb)
        np.copyto(self._depth[s], depth)
        self._meta[s, 1] = index
        self._meta[s, 2] = stamp
        self._meta[s, 3] = stamp
        self._meta[s, 4:20] = np.asarray(T_base_camera, np.float64).reshape(16)
        self._meta[s, 0] = n
        self._ctrl[0] = n

    def read(self, newer_than: int = 0, retries: int = 3):
        """(seq, index, stamp, rgb, depth, T) of the newest frame with seq > newer_than, else None."""
        for _ in range(retries):
            n = self.published
            if n <= newer_than:
                return None
            s = n % 2
            if self._meta[s, 0] != n:
                time.sleep(0.0005)
                continue
            rgb = self._rgb[s].copy()
            depth = self._depth[s].copy()
            meta = self._meta[s].copy()
            if self._meta[s, 0] == n and meta[0] == n:
                return n, int(meta[1]), float(meta[2]), rgb, depth, meta[4:20].reshape(4, 4)
        return None

    def close(self) -> None:
        # Drop numpy views first: SharedMemory.close() refuses while buffers are exported.
        self._ctrl = self._meta = None  # type: ignore[assignment]
        self._rgb = self._depth = []
        try:
            self.shm.close()
        except BufferError:
            pass
        if self._owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass
