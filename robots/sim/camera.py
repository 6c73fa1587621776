"""SimCamera: the Camera protocol over the sim process's shared-memory RGB-D frames (D435-like 640x480)."""
from __future__ import annotations

import time

import numpy as np

from robots.base import DeviceDisconnected, DeviceError, RGBDFrame
from robots.sim.frames import FrameBuffer

DEPTH_SCALE = 0.001  # uint16 millimetres, like the RealSense default


class SimCamera:
    def __init__(self, lab, cam_name: str, buffer: FrameBuffer, K: np.ndarray):
        self._lab = lab
        self.name = f"sim:{cam_name}"
        self._buffer = buffer
        self.K = np.asarray(K, dtype=float)
        self.width = buffer.layout.width
        self.height = buffer.layout.height
        self.depth_scale = DEPTH_SCALE
        self._started = False
        self._seen_seq = 0
        self._last_index: int | None = None
        self._dropped = 0
        self._latest: RGBDFrame | None = None
        # The simulator knows where its cameras are: every frame carries the true T_base_camera.
        self.calibrated = True

    def start(self) -> None:
        self._started = True

    def stop(self) -> None:
        self._started = False

    def latest(self) -> RGBDFrame | None:
        self._require()
        got = self._buffer.read(newer_than=self._seen_seq)
        if got is not None:
            self._accept(got)
        return self._latest

    def wait_frame(self, timeout: float = 1.0) -> RGBDFrame:
        self._require()
        deadline = time.monotonic() + timeout
        while True:
            got = self._buffer.read(newer_than=self._seen_seq)
            if got is not None:
                return self._accept(got)
            if time.monotonic() >= deadline:
                if not self._lab.alive:
                    raise DeviceDisconnected(f"{self.name}: simulated lab process is not running")
                raise TimeoutError(f"{self.name}: no new frame within {timeout:g} s")
            time.sleep(0.002)

    @property
    def dropped_frames(self) -> int:
        return self._dropped

    @property
    def T_base_camera(self) -> np.ndarray | None:
        return None if self._latest is None else self._latest.T_base_camera

    def _require(self) -> None:
        if not self._started:
            raise DeviceError(f"{self.name} is not started (call start())")

    def _accept(self, got) -> RGBDFrame:
        seq, index, stamp, rgb, depth, T = got
        if self._last_index is not None and index > self._last_index + 1:
            self._dropped += index - self._last_index - 1
        self._last_index = index
        self._seen_seq = seq
        self._latest = RGBDFrame(stamp=stamp, index=index, rgb=rgb, depth=depth, depth_scale=DEPTH_SCALE,
                                 K=self.K.copy(), T_base_camera=np.array(T), hw_stamp=stamp)
        return self._latest
