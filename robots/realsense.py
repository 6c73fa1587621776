"""Intel RealSense RGB-D camera through pyrealsense2: a live device by serial, or a recording.

``RealSenseCamera`` implements the ``Camera`` protocol (robots/base.py). A background thread pulls
framesets from an ``rs.pipeline``, aligns depth to the colour stream and publishes ``RGBDFrame``s
whose ``K`` is the colour intrinsics, ``depth_scale`` the depth sensor's units, ``hw_stamp`` the
device timestamp and ``stamp`` that timestamp mapped onto ``time.monotonic()``. Gaps in the
colour frame numbers are counted in ``dropped_frames`` — frames the device made that this process
never saw (USB overrun, a stalled reader, or frames missing from a recording).

Pixels are copied out of the SDK's frames: a numpy view keeps the SDK frame alive, and with ~32
frames held by the app (writer queue, GUI) the SDK's frame pool runs dry and new frames are
silently lost. A live camera that sends nothing for ``frame_timeout_s`` (cable pulled, USB reset)
is marked lost: ``connected`` goes False, ``latest()`` returns None (so no consumer re-uses the
last image as new data) and ``wait_frame`` raises DeviceDisconnected. The frame thread then waits
for the device to come back (librealsense's devices-changed callback wakes it; a slow poll covers
platforms without hotplug events), restarts the stream and counts ``reconnects``.

Recordings: pyrealsense2 2.59 plays ROS1 ``.bag`` files made by older SDKs and writes/plays
rosbag2 ``.db3`` files. ``write_rgbd_recording`` writes a ``.db3`` through the SDK's own
``software_device`` + ``recorder`` — the same writer a real camera uses — so tests and demos can
make real recordings without hardware.

Size (~760 lines): the RealSense driver (start, frame thread, loss and reconnect) plus the SDK
software device and .bag writer the tests and demos drive it with, through the same SDK calls.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from recorder.messages import one_line
from robots.base import DeviceDisconnected, DeviceError, RGBDFrame

log = logging.getLogger(__name__)

PLAYBACK_SUFFIXES = (".bag", ".db3")
# A live camera that sends nothing for this long is treated as unplugged (a 30 fps camera has
# then missed 30 frames; USB hiccups last well under 0.1 s).
LIVE_FRAME_TIMEOUT_S = 1.0
# While unplugged, how often the device list is checked when no hotplug event arrives.
RECONNECT_POLL_S = 0.5
# The device→host clock offset is re-estimated over this window so slow drift is followed.
CLOCK_WINDOW_S = 2.0


def _rs():
    """Import pyrealsense2 lazily: it needs apt libusb-1.0-0, and the sim-only app must not."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise DeviceError(f"pyrealsense2 is not importable ({exc}); install apt libusb-1.0-0") from exc
    return rs


def connected_serials() -> list[str]:
    """Serial numbers of the RealSense devices on this machine."""
    rs = _rs()
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


def load_extrinsics(path: str | Path) -> np.ndarray:
    """Read ``T_base_camera`` (4×4) from a calibration JSON.

    Accepted layouts: ``{"T_base_camera": [[...], ...]}`` or a bare 4×4 nested list. The matrix
    must be a rigid transform (orthonormal rotation, last row 0 0 0 1); anything else is a
    DeviceError naming the file, because a wrong extrinsic silently puts every point cloud in
    the wrong place.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeviceError(f"{path}: cannot read camera extrinsics ({exc})") from exc
    raw = data.get("T_base_camera") if isinstance(data, dict) else data
    try:
        T = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        T = np.zeros(0)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise DeviceError(f"{path}: T_base_camera must be a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6) or not np.allclose(R @ R.T, np.eye(3), atol=1e-4) \
            or np.linalg.det(R) < 0:
        raise DeviceError(f"{path}: T_base_camera is not a rigid transform (rotation not orthonormal "
                          f"or last row not 0 0 0 1)")
    return T


@dataclass
class LiveStream:
    """An open live stream: where framesets come from and what they carry.

    ``frames`` is anything with ``try_wait_for_frames(timeout_ms) -> (ok, frameset)``: an
    ``rs.pipeline`` for a real device, an ``rs.syncer`` fed by a software device's sensors in tests.
    """

    frames: object
    color: object  # rs.video_stream_profile
    depth: object  # rs.video_stream_profile
    device: object  # rs.device
    close: Callable[[], None]


class ClockMapper:
    """Maps device timestamps (seconds) onto the host's monotonic clock.

    A frame reaches the host some latency after capture, so ``arrival - hw`` is the clock offset
    plus a non-negative latency; the smallest value over a recent window is the best estimate of
    the offset (minimum-latency frame). The mapped stamps never exceed the arrival time and stay
    monotonic as long as the device clock is.
    """

    def __init__(self, window_s: float = CLOCK_WINDOW_S):
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()  # (hw, arrival - hw)
        self._last_hw: float | None = None

    def map(self, hw: float, arrival: float) -> float:
        if self._last_hw is not None and hw < self._last_hw:
            self._samples.clear()  # device clock restarted (replug, looped recording)
        self._last_hw = hw
        self._samples.append((hw, arrival - hw))
        while self._samples[0][0] < hw - self.window_s:
            self._samples.popleft()
        return hw + min(off for _, off in self._samples)


class RealSenseCamera:
    """RealSense RGB-D camera (live or playback) behind the ``Camera`` protocol.

    ``serial``: live device to open (None = the only connected one). ``playback``: a ``.bag`` or
    ``.db3`` recording instead of a device. ``realtime`` (playback only): True replays at the
    recorded rate and, like a live camera, keeps only the newest frame; False hands out every
    frame exactly once, paced by the consumer (offline conversion, tests). ``T_base_camera`` or
    ``calibration`` (a JSON file, see ``load_extrinsics``) place the camera in the robot base
    frame; without either the camera sits at identity and ``calibrated`` is False so the UI can
    warn. ``frame_timeout_s``: silence after which a live camera counts as unplugged.
    ``open_live``: opens the live stream (default: the device ``serial`` through ``rs.pipeline``);
    it is called again to reconnect and raises DeviceError while the device is absent.
    """

    def __init__(self, serial: str | None = None, playback: str | Path | None = None, width: int = 640,
                 height: int = 480, fps: int = 30, T_base_camera: np.ndarray | None = None, *,
                 calibration: str | Path | None = None, realtime: bool = True, loop: bool = False,
                 frame_timeout_s: float = LIVE_FRAME_TIMEOUT_S,
                 open_live: Callable[[], LiveStream] | None = None):
        if serial and playback:
            raise DeviceError("RealSense: give either a serial (live camera) or a playback file, not both")
        self.serial = serial or None
        self.playback = Path(playback) if playback else None
        if self.playback is not None:
            if self.playback.suffix.lower() not in PLAYBACK_SUFFIXES:
                raise DeviceError(f"{self.playback}: RealSense recordings must be .bag or .db3 files")
            if not self.playback.is_file():
                raise DeviceError(f"{self.playback}: recording not found")
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.realtime = realtime if self.playback is not None else True
        self.loop = loop
        self.frame_timeout_s = float(frame_timeout_s)
        self._open_live_fn = open_live
        if T_base_camera is not None and calibration is not None:
            raise DeviceError("RealSense: give T_base_camera or a calibration file, not both")
        if calibration is not None:
            T_base_camera = load_extrinsics(calibration)
        self.calibrated = T_base_camera is not None
        self.T_base_camera = np.eye(4) if T_base_camera is None else np.asarray(T_base_camera, float).copy()
        if self.T_base_camera.shape != (4, 4):
            raise DeviceError(f"RealSense: T_base_camera must be 4x4, got {self.T_base_camera.shape}")
        self.calibration = None  # robots.calibration_store.StoredCalibration found for this serial
        if not self.calibrated and self.serial:
            self._load_stored_calibration()
        if not self.calibrated:
            log.warning("RealSense %s: no extrinsics calibration, T_base_camera = identity", self.name)

        self.K: np.ndarray | None = None
        self.depth_scale: float | None = None
        self.model = ""
        self._pipeline = None
        self._align = None
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()
        self._cond = threading.Condition()
        self._frame: RGBDFrame | None = None
        self._seq = 0  # frames published
        self._taken = 0  # seq of the newest frame handed to a consumer
        self._dropped = 0
        self._error: DeviceError | None = None
        self._ended = False
        self._last_index: int | None = None
        self._clock = ClockMapper()
        self._stream: LiveStream | None = None
        self._lost = False  # live camera unplugged / silent; cleared when frames flow again
        self._reconnects = 0
        self._device_event = threading.Event()  # set by librealsense's devices-changed callback
        self._ctx = None  # the rs.context that carries that callback

    # ---------------------------------------------------------------------------------- protocol

    @property
    def name(self) -> str:
        if self.playback is not None:
            return f"bag:{self.playback}"
        return f"realsense:{self.serial}" if self.serial else "realsense"

    @property
    def dropped_frames(self) -> int:
        return self._dropped

    @property
    def ended(self) -> bool:
        """A playback without ``loop`` has delivered its last frame."""
        return self._ended

    @property
    def frames_seen(self) -> int:
        return self._seq

    @property
    def connected(self) -> bool:
        """False while a live camera is unplugged (or silent), or after a fatal error."""
        return not self._lost and self._error is None

    @property
    def reconnects(self) -> int:
        """Times the live stream came back after being lost."""
        return self._reconnects

    def start(self) -> None:
        if self._thread is not None:
            return
        rs = _rs()
        pipeline = rs.pipeline()
        config = rs.config()
        if self.playback is not None:
            config.enable_device_from_file(str(self.playback), repeat_playback=self.loop)
            # The recording dictates size, rate and format.
            config.enable_stream(rs.stream.depth)
            config.enable_stream(rs.stream.color)
            profile = self._start_playback(rs, pipeline, config)
            try:
                self._read_profile(rs, profile.get_stream(rs.stream.color).as_video_stream_profile(),
                                   profile.get_stream(rs.stream.depth).as_video_stream_profile(),
                                   profile.get_device())
            except DeviceError:
                pipeline.stop()
                raise
            self._pipeline = pipeline
        else:
            self._watch_devices(rs)
            stream = self._open_live()
            if not self.calibrated:  # the serial is known only now when none was given
                self._load_stored_calibration()
            try:
                self._read_profile(rs, stream.color, stream.depth, stream.device)
            except DeviceError:
                stream.close()
                raise
            self._stream = stream
        self._stop_evt.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop_evt.set()
        self._device_event.set()  # wakes a reconnect wait
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass  # already stopped by the SDK after an error
            self._pipeline = None
        self._close_stream()
        if self._ctx is not None:
            try:
                self._ctx.set_devices_changed_callback(lambda info: None)
            except RuntimeError:
                pass
            self._ctx = None

    def latest(self) -> RGBDFrame | None:
        """Newest frame, or None before the first one and while the camera is lost: the last
        image of an unplugged camera is never handed out again as if it were current."""
        with self._cond:
            if self._lost:
                return None
            if self._frame is not None and self._taken != self._seq:
                self._taken = self._seq
                self._cond.notify_all()  # releases a consumer-paced playback
            return self._frame

    def wait_frame(self, timeout: float = 1.0) -> RGBDFrame:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._taken == self._seq:
                if self._error is not None:
                    raise self._error
                if self._lost:
                    raise DeviceDisconnected(f"{self.name}: camera lost (unplugged?); waiting for it "
                                             f"to come back")
                if self._ended:
                    raise DeviceDisconnected(f"{self.name}: end of recording after {self._seq} frames")
                if self._thread is None:
                    raise DeviceError(f"{self.name}: camera not started")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.name}: no new frame within {timeout:.2f} s")
                self._cond.wait(remaining)
            self._taken = self._seq
            self._cond.notify_all()
            return self._frame

    def __enter__(self) -> "RealSenseCamera":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ setting up

    def _load_stored_calibration(self) -> None:
        """Take ``T_base_camera`` from this serial's stored hand-eye calibration (robots/calibration_store.py)."""
        from robots.calibration_store import load_quietly

        stored = load_quietly(self.serial)
        if stored is None:
            return
        self.calibration = stored
        if stored.T_base_camera is not None:
            self.T_base_camera = stored.T_base_camera.copy()
            self.calibrated = True
            log.info("RealSense %s: %s", self.serial, stored.summary())
        else:
            log.warning("RealSense %s: stored calibration is eye-in-hand (camera on the wrist); episodes keep "
                        "T_base_camera = identity", self.serial)

    def _select_live_device(self, rs, config) -> None:
        serials = connected_serials()
        if not serials:
            wanted = f" (asked for serial {self.serial})" if self.serial else ""
            raise DeviceError(f"no RealSense camera connected{wanted}")
        if self.serial is None:
            if len(serials) > 1:
                raise DeviceError(f"several RealSense cameras connected ({', '.join(serials)}); "
                                  f"pick one with realsense:SERIAL")
            self.serial = serials[0]
        elif self.serial not in serials:
            raise DeviceError(f"RealSense {self.serial} not found; connected: {', '.join(serials)}")
        config.enable_device(self.serial)

    def _open_live(self) -> LiveStream:
        if self._open_live_fn is not None:
            return self._open_live_fn()
        rs = _rs()
        pipeline = rs.pipeline() if self._ctx is None else rs.pipeline(self._ctx)
        config = rs.config()
        self._select_live_device(rs, config)
        config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        try:
            profile = pipeline.start(config)
        except RuntimeError as exc:
            raise DeviceError(f"{self.name}: cannot start {self.width}x{self.height}@{self.fps} "
                              f"depth+colour ({one_line(exc, first_line=True)})") from exc
        return LiveStream(frames=pipeline,
                          color=profile.get_stream(rs.stream.color).as_video_stream_profile(),
                          depth=profile.get_stream(rs.stream.depth).as_video_stream_profile(),
                          device=profile.get_device(), close=pipeline.stop)

    def _watch_devices(self, rs) -> None:
        """Hotplug events wake the reconnect wait at once (it also polls, for safety)."""
        if self._open_live_fn is not None:
            return
        try:
            self._ctx = rs.context()
            self._ctx.set_devices_changed_callback(lambda info: self._device_event.set())
        except RuntimeError as exc:  # pragma: no cover - depends on the platform's hotplug support
            log.info("%s: no hotplug events (%s); polling for reconnects", self.name, one_line(exc, first_line=True))
            self._ctx = None

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except RuntimeError:
                pass  # the device is already gone

    def _start_playback(self, rs, pipeline, config):
        try:
            # Resolving first gives us the playback device before it plays. Holding it paused
            # until the pipeline is fully started stops the SDK from racing through the file
            # before anyone listens (measured: whole recordings lost on a loaded machine).
            player = config.resolve(rs.pipeline_wrapper(pipeline)).get_device().as_playback()
            player.set_real_time(self.realtime)
            player.pause()
            profile = pipeline.start(config)
        except RuntimeError as exc:
            raise DeviceError(f"{self.playback}: unreadable RealSense recording "
                              f"({one_line(exc, first_line=True)})") from exc
        player = profile.get_device().as_playback()
        player.set_real_time(self.realtime)
        player.resume()
        return profile

    def _read_profile(self, rs, color, depth, device) -> None:
        ci, di = color.get_intrinsics(), depth.get_intrinsics()
        self.width, self.height, self.fps = ci.width, ci.height, color.fps()
        self.K = np.array([[ci.fx, 0.0, ci.ppx], [0.0, ci.fy, ci.ppy], [0.0, 0.0, 1.0]])
        self._color_format = color.format()
        if self._color_format not in (rs.format.rgb8, rs.format.bgr8, rs.format.rgba8, rs.format.bgra8):
            raise DeviceError(f"{self.name}: colour format {self._color_format} is not supported "
                              f"(need rgb8/bgr8/rgba8/bgra8)")
        self.depth_scale = float(device.first_depth_sensor().get_depth_scale())
        if device.supports(rs.camera_info.name):
            self.model = device.get_info(rs.camera_info.name)
        if self.playback is None:
            self._enable_global_time(rs, device)
        try:
            extr = depth.get_extrinsics_to(color)
            rigid_identity = np.allclose(extr.rotation, np.eye(3).ravel(), atol=1e-9) \
                and np.allclose(extr.translation, 0, atol=1e-9)
        except RuntimeError:  # recordings without extrinsics: rs.align assumes identity too
            rigid_identity = True
        same_grid = (di.width, di.height) == (ci.width, ci.height) and np.allclose(
            [di.fx, di.fy, di.ppx, di.ppy], [ci.fx, ci.fy, ci.ppx, ci.ppy], atol=1e-6) \
            and not np.any(di.coeffs) and not np.any(ci.coeffs)
        # rs.align resamples even when depth already lies on the colour grid, punching a hole
        # every few columns; registered streams (e.g. recordings of aligned depth) pass through.
        self.depth_registered = same_grid and rigid_identity
        self._align = None if self.depth_registered else rs.align(rs.stream.color)

    @staticmethod
    def _enable_global_time(rs, device) -> None:
        # Global time puts hardware stamps on the host's clock base, so colour and depth
        # (and several cameras) share one time line.
        for sensor in device.query_sensors():
            if sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1)

    # ---------------------------------------------------------------------------- frame thread

    def _run(self) -> None:
        rs = _rs()
        live = self.playback is None
        source = self._stream.frames if live else self._pipeline
        timeout_ms = int(self.frame_timeout_s * 1000) if live else 200
        while not self._stop_evt.is_set():
            try:
                ok, frames = source.try_wait_for_frames(timeout_ms)
            except RuntimeError as exc:
                if not live:
                    self._fail(DeviceDisconnected(f"{self.name}: {one_line(exc, first_line=True)}"))
                    return
                ok, frames, why = False, None, one_line(exc, first_line=True)
            else:
                why = f"no frames for {self.frame_timeout_s:g} s"
            if not ok:
                if not live:
                    if self._playback_stopped(rs):
                        self._finish()
                        return
                    continue
                self._set_lost(why)
                if not self._reconnect():
                    return  # stopped while waiting
                source = self._stream.frames
                continue
            try:
                frame = self._convert(rs, frames)
            except RuntimeError as exc:  # the SDK failing mid-frame: the device is going away
                if not live:
                    self._fail(DeviceError(f"{self.name}: {one_line(exc, first_line=True)}"))
                    return
                self._set_lost(one_line(exc, first_line=True))
                if not self._reconnect():
                    return
                source = self._stream.frames
                continue
            if frame is not None:
                self._publish(frame)

    def _set_lost(self, why: str) -> None:
        if not self._lost:  # once per loss, not on every silent reopen
            log.error("%s: camera lost (%s; unplugged?), waiting for it to come back", self.name, why)
        with self._cond:
            self._lost = True
            self._cond.notify_all()  # wait_frame callers hear about it now

    def _reconnect(self) -> bool:
        """Frame thread: reopen the live stream until it works or the camera is stopped."""
        self._close_stream()
        while not self._stop_evt.is_set():
            self._device_event.wait(RECONNECT_POLL_S)
            self._device_event.clear()
            if self._stop_evt.is_set():
                break
            try:
                self._stream = self._open_live()
                self._enable_global_time(_rs(), self._stream.device)
            except (DeviceError, RuntimeError) as exc:  # absent, or half enumerated while replugging
                log.debug("%s: not back yet (%s)", self.name, one_line(exc, first_line=True))
                self._close_stream()
                continue
            # A replugged device restarts its frame counter and clock.
            self._last_index = None
            self._clock = ClockMapper()
            # ``lost`` is cleared by the first frame published (and the reconnect counted then),
            # not here: an open stream that sends nothing is still lost.
            return True
        return False

    def _playback_stopped(self, rs) -> bool:
        device = self._pipeline.get_active_profile().get_device().as_playback()
        return device.current_status() == rs.playback_status.stopped

    def _convert(self, rs, frames) -> RGBDFrame | None:
        color = frames.get_color_frame()
        if not color or not frames.get_depth_frame():
            return None
        index = color.get_frame_number()
        if self._last_index is not None and index <= self._last_index:
            # The syncer re-sends the previous colour frame with the next depth frame when a
            # pair is not matched yet; that colour frame has already been published.
            if index >= self._last_index - 1 or not self.loop:
                return None
            self._last_index = None  # looped recording restarted its frame numbers
        if self._last_index is not None:
            self._dropped += index - self._last_index - 1
        self._last_index = index
        arrival = time.monotonic()
        if self._align is not None:
            frames = self._align.process(frames)
        depth = frames.get_depth_frame()
        rgb = np.asanyarray(color.get_data())
        if self._color_format in (rs.format.bgr8, rs.format.bgra8):
            rgb = rgb[..., 2::-1]
        elif self._color_format == rs.format.rgba8:
            rgb = rgb[..., :3]
        hw = color.get_timestamp() / 1000.0
        return RGBDFrame(
            stamp=self._clock.map(hw, arrival),
            index=int(index),
            # Real copies: a view (np.asanyarray / ascontiguousarray of an already contiguous
            # buffer) keeps the SDK frame alive, and once the app holds ~32 of them (writer queue,
            # GUI) the SDK's frame pool is exhausted and new frames are silently lost.
            rgb=np.array(rgb, dtype=np.uint8, order="C", copy=True),
            depth=np.array(depth.get_data(), dtype=np.uint16, order="C", copy=True),
            depth_scale=self.depth_scale,
            K=self.K.copy(),
            T_base_camera=self.T_base_camera.copy(),
            hw_stamp=hw,
        )

    def _publish(self, frame: RGBDFrame) -> None:
        with self._cond:
            if not self.realtime:
                # Consumer-paced playback: hold the next frame until the previous one was taken.
                while self._taken != self._seq and not self._stop_evt.is_set():
                    self._cond.wait(0.1)
            self._frame = frame
            self._seq += 1
            if self._lost:
                self._lost = False
                self._reconnects += 1
                log.warning("%s: camera back (reconnect %d)", self.name, self._reconnects)
            self._cond.notify_all()

    def _fail(self, error: DeviceError) -> None:
        log.error("%s", error)
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def _finish(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()


# ------------------------------------------------------------------------------------------
# Writing recordings through the SDK (tests, demos, converting sim episodes)
# ------------------------------------------------------------------------------------------


def _intrinsics(rs, K: np.ndarray, width: int, height: int):
    intr = rs.intrinsics()
    intr.width, intr.height = width, height
    intr.fx, intr.fy, intr.ppx, intr.ppy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    intr.model = rs.distortion.none
    intr.coeffs = [0.0] * 5
    return intr


class _SoftwareRGBD:
    """A software_device with a depth and a colour sensor (one video stream each)."""

    def __init__(self, rs, K: np.ndarray, size: tuple[int, int], *, depth_scale: float, fps: int,
                 depth_K: np.ndarray | None, depth_size: tuple[int, int] | None,
                 T_color_depth: np.ndarray | None, serial: str = ""):
        self.rs = rs
        w, h = size
        dw, dh = depth_size or size
        depth_K = K if depth_K is None else depth_K
        self.depth_scale = float(depth_scale)
        self.device = device = rs.software_device()
        if serial:
            device.register_info(rs.camera_info.serial_number, serial)
        device.register_info(rs.camera_info.name, "Software RGB-D")
        self.depth_sensor, self.color_sensor = device.add_sensor("Depth"), device.add_sensor("Color")
        dstream, cstream = rs.video_stream(), rs.video_stream()
        for st, kind, uid, (sw, sh), bpp, fmt, intr in (
                (dstream, rs.stream.depth, 0, (dw, dh), 2, rs.format.z16, _intrinsics(rs, depth_K, dw, dh)),
                (cstream, rs.stream.color, 1, (w, h), 3, rs.format.rgb8, _intrinsics(rs, K, w, h))):
            st.type, st.index, st.uid, st.width, st.height = kind, 0, uid, sw, sh
            st.fps, st.bpp, st.fmt, st.intrinsics = fps, bpp, fmt, intr
        self.dprofile = self.depth_sensor.add_video_stream(dstream).as_video_stream_profile()
        self.cprofile = self.color_sensor.add_video_stream(cstream).as_video_stream_profile()
        # A real camera always carries its depth→colour extrinsics; without them rs.align guesses.
        T_color_depth = np.eye(4) if T_color_depth is None else np.asarray(T_color_depth, float)
        extr = rs.extrinsics()
        extr.rotation = T_color_depth[:3, :3].T.ravel().tolist()  # the SDK stores it column-major
        extr.translation = T_color_depth[:3, 3].tolist()
        self.dprofile.register_extrinsics_to(self.cprofile, extr)
        self.depth_sensor.add_read_only_option(rs.option.depth_units, self.depth_scale)
        device.create_matcher(rs.matchers.default)

    def open(self, sink) -> None:
        self.depth_sensor.open(self.dprofile)
        self.color_sensor.open(self.cprofile)
        self.depth_sensor.start(sink)
        self.color_sensor.start(sink)

    def close(self) -> None:
        for sensor in (self.depth_sensor, self.color_sensor):
            sensor.stop()
            sensor.close()

    def push(self, rgb: np.ndarray, depth: np.ndarray, number: int, stamp_ms: float) -> None:
        rs = self.rs
        for sensor, profile, pixels, bpp in ((self.depth_sensor, self.dprofile, depth, 2),
                                             (self.color_sensor, self.cprofile, rgb, 3)):
            pixels = np.ascontiguousarray(pixels, dtype=np.uint16 if bpp == 2 else np.uint8)
            f = rs.software_video_frame()
            f.pixels, f.bpp, f.stride = pixels, bpp, pixels.shape[1] * bpp  # the binding copies
            f.timestamp, f.domain, f.frame_number = float(stamp_ms), rs.timestamp_domain.hardware_clock, int(number)
            f.profile = profile
            if bpp == 2:
                f.depth_units = self.depth_scale
            sensor.on_video_frame(f)


class SoftwareRGBDDevice:
    """A live RGB-D camera made of the SDK's own software_device, for tests and demos.

    Frames pushed with ``push`` travel the same SDK path as a USB camera's (software sensors →
    ``rs.syncer`` matching depth and colour by frame number → framesets). ``unplug`` closes the
    sensors and makes ``open_stream`` fail, like a pulled cable; ``replug`` brings it back. Pass
    ``open_stream`` as ``RealSenseCamera(open_live=...)``.
    """

    def __init__(self, K: np.ndarray, size: tuple[int, int], *, depth_scale: float = 0.001, fps: int = 30,
                 serial: str = "software"):
        self._sw = _SoftwareRGBD(_rs(), K, size, depth_scale=depth_scale, fps=fps, depth_K=None,
                                 depth_size=None, T_color_depth=None, serial=serial)
        self.serial = serial
        self.plugged = True
        self._open = False
        self._lock = threading.Lock()

    def open_stream(self) -> LiveStream:
        rs = self._sw.rs
        with self._lock:
            if not self.plugged:
                raise DeviceError(f"RealSense {self.serial} not found")
            if self._open:
                raise DeviceError(f"RealSense {self.serial} is busy (stream already open)")
            sync = rs.syncer()
            self._sw.open(sync)
            self._open = True
        return LiveStream(frames=sync, color=self._sw.cprofile, depth=self._sw.dprofile,
                          device=self._sw.device, close=self._close)

    def _close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                self._sw.close()

    def push(self, rgb: np.ndarray, depth: np.ndarray, number: int, stamp_ms: float) -> bool:
        """Deliver one frame pair; False when nobody can receive it (unplugged or not open)."""
        with self._lock:
            if not (self.plugged and self._open):
                return False
            self._sw.push(rgb, depth, number, stamp_ms)
            return True

    def unplug(self) -> None:
        self._close()
        with self._lock:
            self.plugged = False

    def replug(self) -> None:
        with self._lock:
            self.plugged = True


def write_rgbd_recording(path: str | Path, frames: Iterable[tuple[np.ndarray, np.ndarray, int, float]], *,
                         K: np.ndarray, depth_scale: float = 0.001, fps: int = 30,
                         depth_K: np.ndarray | None = None, depth_size: tuple[int, int] | None = None,
                         T_color_depth: np.ndarray | None = None, pace: bool = False) -> Path:
    """Record RGB-D frames to a rosbag2 ``.db3`` with the SDK's software device and recorder.

    ``frames`` yields ``(rgb (H,W,3) uint8, depth (h,w) uint16, frame_number, timestamp_ms)``;
    a frame number that skips values makes a recording with dropped frames. Depth uses
    ``depth_K``/``depth_size`` (default: the colour ones) and sits at ``T_color_depth`` (4×4,
    depth frame in the colour frame; default identity) so recordings can need real alignment.
    The recorder stamps messages with their arrival time, which real-time playback follows;
    ``pace`` spaces the frames by their timestamps so such playback runs at the recorded rate.
    """
    rs = _rs()
    path = Path(path)
    if path.suffix != ".db3":
        raise DeviceError(f"{path}: pyrealsense2 {rs.__version__} records only .db3 files")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise DeviceError(f"{path}: no frames to record")
    h, w = first[0].shape[:2]
    dh, dw = depth_size[::-1] if depth_size else first[1].shape[:2]
    sw = _SoftwareRGBD(rs, K, (w, h), depth_scale=depth_scale, fps=fps, depth_K=depth_K,
                       depth_size=(dw, dh), T_color_depth=T_color_depth)
    recorder = rs.recorder(str(path), sw.device)
    sw.open(lambda f: None)  # the recorder taps the sensors; nobody else listens
    t0_host = t0_stamp = None
    try:
        for rgb, depth, number, stamp_ms in _chain(first, frames):
            if pace:
                if t0_host is None:
                    t0_host, t0_stamp = time.monotonic(), stamp_ms
                time.sleep(max(0.0, t0_host + (stamp_ms - t0_stamp) / 1000.0 - time.monotonic()))
            sw.push(rgb, depth, number, stamp_ms)
    finally:
        sw.close()
        del recorder  # flushes and closes the file
    return path


def _chain(first, rest):
    yield first
    yield from rest
