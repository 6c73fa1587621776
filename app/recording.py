"""Recording service: turns control-loop ticks into episode files.

It listens to a ``ControlLoop`` (it runs on the control thread, so it only hands frames to the
episode writer's bounded queue — the writer thread does the disk I/O). One tick = one recorded frame
at the control rate; the camera frame carried by the tick is the newest one the camera had, and its
own stamp and index are kept in ``/extras`` so a reader can tell repeated or late camera frames;
``/extras/frame_repeated`` is 1 on a tick whose image was already written on the previous tick
(camera slower than the control rate), so a repeat is never taken for new data.

A camera lost mid-take (``latest()`` None after frames came in: unplugged, USB reset) is not
papered over with its last image: those ticks are not written, ``camera_lost`` is set, the
``on_camera_lost`` callbacks fire once (the GUI stops the take, the episode loop ends it) and the
episode's notes say when and for how many ticks.

Start/stop come from the caller (GUI button, CLI) or from the teleop device's ``record`` button,
whose presses are reported through ``on_record_button`` so the owner decides (the GUI asks for the
outcome; the CLI just stops).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from app.config import APP_VERSION
from app.teleop import Tick
from recorder.episode import EpisodeWriter
from robots.base import Camera, RGBDFrame

log = logging.getLogger(__name__)


@dataclass
class RecordingStatus:
    recording: bool
    path: Path | None
    frames: int  # frames accepted by the writer
    dropped: int  # frames the writer refused (queue full) plus ticks without a camera frame
    lag: int  # frames waiting for the writer thread
    seconds: float  # the take's duration: first to latest control tick (stops when the loop stops)
    camera_lost: bool = False  # the camera dropped out during this take


def episode_name(task: str, when: datetime | None = None) -> str:
    when = when or datetime.now()
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in (task or "episode"))
    return f"{safe}_{when:%Y%m%d-%H%M%S-%f}"[:-3] + ".h5"


def camera_meta(frame: RGBDFrame, camera: Camera | None) -> dict:
    """The /camera attributes of an episode, taken from a real frame (so K and T match the pixels)."""
    h, w = frame.depth.shape
    return {"K": np.asarray(frame.K, dtype=np.float64), "width": int(w), "height": int(h),
            "T_base_camera": np.asarray(frame.T_base_camera, dtype=np.float64),
            "depth_scale": float(frame.depth_scale),
            "model": str(getattr(camera, "model", None) or getattr(camera, "name", "camera")),
            "serial": str(getattr(camera, "serial", "") or "")}


class RecordingService:
    def __init__(self, out_dir: str | Path, *, robot: str, camera: Camera | None = None,
                 operator: str = "", compression: str | None = None):
        self.out_dir = Path(out_dir)
        self.robot = robot
        self.camera = camera
        self.operator = operator
        self.compression = compression
        self.on_record_button: list[Callable[[], None]] = []
        self.on_camera_lost: list[Callable[[], None]] = []  # called on the control thread; be quick
        self._lock = threading.Lock()
        self._writer: EpisodeWriter | None = None
        self._t0: float | None = None
        self._last_t: float | None = None
        self._missing_frames = 0
        self._take_frames = 0  # camera frames written in this take
        self._last_key: tuple[float, int] | None = None
        self._lost_at: float | None = None  # take time of the first tick without a frame after frames
        self._lost_ticks = 0
        self._last_button = False

    # ------------------------------------------------------------------ control
    @property
    def recording(self) -> bool:
        return self._writer is not None

    @property
    def camera_lost(self) -> bool:
        """The camera dropped out during the current take."""
        return self._lost_at is not None

    def start(self, task: str, instruction: str = "", fps: float = 20.0, *,
              frame_timeout: float = 3.0, name: str | None = None) -> Path:
        """Open a new episode; the next tick is its first frame. Needs one camera frame for /camera."""
        if self._writer is not None:
            raise RuntimeError(f"already recording {self._writer.path.name}")
        cam_meta = None
        if self.camera is not None:
            frame = self.camera.latest() or self.camera.wait_frame(timeout=frame_timeout)
            cam_meta = camera_meta(frame, self.camera)
        meta = {"robot": self.robot, "task": task, "instruction": instruction, "fps": float(fps),
                "operator": self.operator, "app_version": APP_VERSION}
        kwargs = {"compression": self.compression} if self.compression else {}
        path = self.out_dir / (name or episode_name(task))
        writer = EpisodeWriter(path, meta, cam_meta, **kwargs)
        with self._lock:
            self._writer, self._t0, self._last_t, self._missing_frames = writer, None, None, 0
            self._take_frames, self._last_key = 0, None
            self._lost_at, self._lost_ticks = None, 0
        log.info("recording %s", path)
        return path

    def stop(self, outcome: str = "unknown", notes: str = "") -> Path:
        """Finalise the episode with its outcome; returns its path."""
        writer = self._detach()
        extra = []
        if self._missing_frames:
            extra.append(f"{self._missing_frames} ticks had no camera frame")
        if self._lost_at is not None:
            extra.append(f"camera lost at t={self._lost_at:.2f} s: {self._lost_ticks} ticks without a "
                         f"camera frame were not recorded")
        if extra:
            notes = "\n".join(([notes] if notes else []) + extra)
        return writer.finalize(outcome, notes)

    def discard(self) -> None:
        self._detach().discard()

    def _detach(self) -> EpisodeWriter:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is None:
            raise RuntimeError("not recording")
        return writer

    def status(self) -> RecordingStatus:
        w = self._writer
        if w is None:
            return RecordingStatus(False, None, 0, 0, 0, 0.0)
        # Ticks, not the wall clock: the loop stops when the take stops, so the duration shown
        # while the outcome dialog is open stays the take's (a wall clock since start() kept
        # counting: 44.9 s shown for a 7.1 s take).
        t0, last = self._t0, self._last_t
        seconds = last - t0 if t0 is not None and last is not None else 0.0
        return RecordingStatus(True, w.path, w.appended, w.dropped + self._missing_frames + self._lost_ticks,
                               w.lag, seconds, self._lost_at is not None)

    # ------------------------------------------------------------------ control thread
    def __call__(self, tick: Tick) -> None:
        pressed = bool(tick.buttons.get("record", False))
        if pressed and not self._last_button:
            for fn in list(self.on_record_button):
                fn()
        self._last_button = pressed
        with self._lock:
            writer = self._writer
            if writer is None:
                return
            if self._t0 is None:
                self._t0 = tick.t
            self._last_t = tick.t
        frame = tick.frame
        if self.camera is not None and frame is None:
            # Never written as a fake or repeated image: before the camera's first frame it is
            # counted; after frames came in, the camera was lost and the take is marked.
            if not self._take_frames:
                self._missing_frames += 1
                return
            self._lost_ticks += 1
            if self._lost_at is None:
                self._lost_at = tick.t - self._t0
                log.warning("camera lost %.2f s into the take", self._lost_at)
                for fn in list(self.on_camera_lost):
                    fn()
            return
        extras = {"tick_index": float(tick.index)}
        if frame is not None:
            key = (float(frame.stamp), int(frame.index))
            repeated = key == self._last_key
            self._last_key = key
            self._take_frames += 1
            extras["frame_stamp"] = float(frame.stamp)
            extras["frame_index"] = float(frame.index)
            extras["frame_repeated"] = float(repeated)
        phase = tick.info.get("expert_phase") if tick.info else None
        if phase is not None:
            extras["expert_phase"] = str(phase)
        state = tick.state
        for key, value in (getattr(state, "sim_state", None) or {}).items():
            extras[f"sim_{key}"] = np.asarray(value, dtype=np.float64)
        writer.append(tick.t - self._t0,
                      None if frame is None else frame.rgb, None if frame is None else frame.depth,
                      state.ee_pose, state.joint_pos, state.gripper, tick.action, extras)
