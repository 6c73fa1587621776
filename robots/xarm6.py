"""UFactory xArm6 (+ xArm Gripper) through the vendor SDK ``xarm.wrapper.XArmAPI``.

Streaming uses the controller's servo-Cartesian mode (``set_mode(1)`` + ``set_servo_cartesian``).
That mode executes only the *latest* point and jumps to it as fast as it can, so the driver never
sends a point further than ``max_step_m`` (< 10 mm, UFactory's guidance for servo mode) from the
previous one: ``servo()`` only stores the target, and a streaming thread at ``stream_hz`` walks the
commanded point toward it in bounded steps (several SDK calls per 20 Hz control tick when the
target is far). The step is also capped by ``limits.max_linear_speed / stream_hz`` so the walk
respects the speed limit.

SDK units: millimetres and (with ``is_radian=True``, passed explicitly on every call) radians,
orientation as roll/pitch/yaw about the fixed base axes (R = Rz·Ry·Rx, scipy "xyz").
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from recorder.messages import SDK_MESSAGE_LIMIT, one_line
from robots.base import ArmBase, ArmLimits, ArmState, DeviceDisconnected, DeviceError, GripperBase
from robots.lab_config import DEFAULT_TCP_OFFSET
from robots.safety import check_target, default_limits

GRIPPER_MAX_PULSE = 850.0  # xArm Gripper: 0 closed … 850 open
XARM_STATE_STOPPED = 4  # XArmAPI.state: 1 moving, 2 sleeping, 3 suspended, 4 stopped (e-stop, error)
HOME_POSE = np.array([0.30, 0.0, 0.30, 1.0, 0.0, 0.0, 0.0])  # m + xyzw: TCP above the table, pointing down

# One source of truth for each robot's limits: the safety filter's table (robots/safety.py).
DEFAULT_LIMITS = default_limits("xarm6")


def pose_to_sdk(pose: np.ndarray) -> list[float]:
    """(7,) m + quat xyzw → [x, y, z (mm), roll, pitch, yaw (rad)]."""
    rpy = Rotation.from_quat(pose[3:7]).as_euler("xyz")
    return [float(v) for v in (*(np.asarray(pose[:3]) * 1000.0), *rpy)]


def pose_from_sdk(values) -> np.ndarray:
    v = np.asarray(values, dtype=float)[:6]
    return np.concatenate([v[:3] / 1000.0, Rotation.from_euler("xyz", v[3:6]).as_quat()])


def split_steps(start: np.ndarray, goal: np.ndarray, max_step_m: float, max_step_rad: float) -> list[np.ndarray]:
    """Poses from start (exclusive) to goal (inclusive), each ≤ max_step_m / max_step_rad apart."""
    dist = float(np.linalg.norm(goal[:3] - start[:3]))
    r0, r1 = Rotation.from_quat(start[3:]), Rotation.from_quat(goal[3:])
    ang = float((r1 * r0.inv()).magnitude())
    n = max(1, math.ceil(dist / max_step_m - 1e-9), math.ceil(ang / max_step_rad - 1e-9))
    fr = np.arange(1, n + 1) / n
    quats = Slerp([0.0, 1.0], Rotation.concatenate([r0, r1]))(fr).as_quat()
    return [np.concatenate([start[:3] + f * (goal[:3] - start[:3]), q]) for f, q in zip(fr, quats)]


class XArmGripper(GripperBase):
    """xArm Gripper via set_gripper_position (pulses 0 … 850); non-blocking (wait=False)."""

    def __init__(self, owner: "XArm6", speed_rpm: float = 3000):
        self._owner = owner
        self.speed_rpm = speed_rpm
        self._last_pulse: float | None = None

    def setup(self) -> None:
        api = self._owner._require()
        self._owner._check(api.set_gripper_mode(0), "set_gripper_mode(0)")
        self._owner._check(api.set_gripper_enable(True), "set_gripper_enable")
        self._owner._check(api.set_gripper_speed(self.speed_rpm), "set_gripper_speed")

    def width(self) -> float:
        code, pulse = self._owner._require().get_gripper_position()
        self._owner._check(code, "get_gripper_position")
        return float(np.clip(float(pulse) / GRIPPER_MAX_PULSE, 0.0, 1.0))


    def command(self, opening: float) -> None:
        """Position command; closing on an object stalls it there under the gripper's current limit."""
        opening = float(opening)
        if not np.isfinite(opening):
            raise ValueError(f"gripper opening must be a number in 0..1, got {opening}")
        pulse = float(np.clip(opening, 0.0, 1.0)) * GRIPPER_MAX_PULSE
        # The control loop repeats the same command every tick; the controller only needs changes.
        if self._last_pulse is not None and abs(pulse - self._last_pulse) < 10.0:
            return
        api = self._owner._require()
        self._owner._check(api.set_gripper_position(pulse, wait=False), "set_gripper_position")
        self._last_pulse = pulse


class XArm6(ArmBase):
    """Arm protocol for a real xArm6 (``xarm6:<ip>``)."""

    name = "xarm6"
    dof = 6

    def __init__(
        self,
        host: str,
        *,
        limits: ArmLimits = DEFAULT_LIMITS,
        stream_hz: float = 100.0,
        max_step_m: float = 0.009,
        move_speed_mm_s: float = 100.0,
        move_acc_mm_s2: float = 1000.0,
        api_factory: Callable[..., object] | None = None,
        tcp_offset: tuple[float, float, float] | None = DEFAULT_TCP_OFFSET["xarm6"],
    ):
        if not 0 < max_step_m < 0.010:
            raise ValueError(f"max_step_m must be below 10 mm for servo mode, got {max_step_m}")
        self.host = host
        self.limits = limits
        self.stream_hz = float(stream_hz)
        # Per SDK call: the servo-mode bound, and the speed limits spread over the stream rate.
        self.max_step_m = min(max_step_m, limits.max_linear_speed / self.stream_hz)
        self.max_step_rad = limits.max_angular_speed / self.stream_hz
        self.move_speed_mm_s = move_speed_mm_s
        self.move_acc_mm_s2 = move_acc_mm_s2
        self._api_factory = api_factory
        # Flange → TCP (m), written to the controller at connect (set_tcp_offset) so that
        # get_position / set_servo_cartesian / set_position all speak fingertip poses. None keeps
        # whatever the controller has (xArm Studio's setting).
        self.tcp_offset = None if tcp_offset is None else tuple(float(v) for v in tcp_offset)
        self.gripper = XArmGripper(self)
        self._api = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._target: np.ndarray | None = None  # latest servo target
        self._cmd: np.ndarray | None = None  # last point sent with set_servo_cartesian
        self._thread: threading.Thread | None = None
        self._running = False
        self._error_code = 0
        self._warn_code = 0
        self._stream_error = ""
        self._estopped = ""  # set by estop(), cleared by recover()
        self.calls_per_tick_max = 0  # diagnostics: most SDK servo calls one target needed

    # -- lifecycle ------------------------------------------------------------------------
    def connect(self) -> None:
        factory = self._api_factory
        if factory is None:
            from xarm.wrapper import XArmAPI as factory
        try:
            api = factory(self.host, is_radian=True)
        except Exception as exc:
            raise DeviceDisconnected(f"xArm6 at {self.host}: cannot connect ({one_line(exc, limit=SDK_MESSAGE_LIMIT)})") from None
        if not api.connected:
            raise DeviceDisconnected(f"xArm6 at {self.host}: cannot connect (no answer from the controller)")
        self._api = api
        api.register_error_warn_changed_callback(self._on_error_warn)
        self._error_code, self._warn_code = int(api.error_code), int(api.warn_code)
        self._estopped = ""
        if self.tcp_offset is not None:
            self._apply_tcp_offset(api)
        self._enter_servo_mode()
        self.gripper.setup()
        self._running = True
        self._thread = threading.Thread(target=self._stream_loop, name=f"xarm6-servo-{self.host}", daemon=True)
        self._thread.start()

    def _apply_tcp_offset(self, api) -> None:
        """set_tcp_offset in position mode (the SDK waits for the arm to be still first)."""
        self._check(api.motion_enable(True), "motion_enable")
        self._check(api.set_mode(0), "set_mode(0)")
        self._check(api.set_state(0), "set_state(0)")
        mm = [float(v) * 1000.0 for v in self.tcp_offset]
        self._check(api.set_tcp_offset([*mm, 0.0, 0.0, 0.0], is_radian=True, wait=True),
                    f"set_tcp_offset({[round(v, 1) for v in mm]} mm)")

    def disconnect(self) -> None:
        self._running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._thread = None
        api, self._api = self._api, None
        if api is not None:
            try:
                api.release_error_warn_changed_callback(self._on_error_warn)
                api.disconnect()
            except Exception:
                pass


    # -- state ----------------------------------------------------------------------------
    def state(self) -> ArmState:
        api = self._require()
        code, pos = api.get_position(is_radian=True)
        self._check(code, "get_position")
        code, angles = api.get_servo_angle(is_radian=True)
        self._check(code, "get_servo_angle")
        try:
            grip = self.gripper.width()
        except DeviceError:
            grip = float("nan")
        moving = self._target is not None and self._cmd is not None and not np.allclose(self._target, self._cmd)
        return ArmState(stamp=time.monotonic(), ee_pose=pose_from_sdk(pos),
                        joint_pos=np.asarray(angles, dtype=float)[: self.dof], gripper=grip,
                        moving=moving, error=self._error_text(api),
                        warning=f"warning {self._warn_code}" if self._warn_code else "")

    # -- motion ---------------------------------------------------------------------------
    def servo(self, target: np.ndarray) -> None:
        pose = check_target(target, self.limits.workspace, "xArm6")
        self._require()
        if self._stream_error:
            raise DeviceError(self._stream_error)
        if self._error_code or self._estopped:
            raise DeviceError(f"xArm6 at {self.host}: {self._error_text(None)}; recover() first")
        with self._lock:
            self._target = pose
        self._wake.set()

    def move_to(self, target: np.ndarray, timeout: float = 10.0) -> None:
        pose = check_target(target, self.limits.workspace, "xArm6")
        api = self._require()
        with self._lock:
            self._target = None
            self._check(api.set_mode(0), "set_mode(0)")
            self._check(api.set_state(0), "set_state(0)")
            x, y, z, r, p, yw = pose_to_sdk(pose)
            code = api.set_position(x=x, y=y, z=z, roll=r, pitch=p, yaw=yw, speed=self.move_speed_mm_s,
                                    mvacc=self.move_acc_mm_s2, is_radian=True, wait=True, timeout=timeout)
            self._check(code, f"set_position to {np.round(pose[:3], 3).tolist()}")
            self._enter_servo_mode()

    def home(self) -> None:
        self.move_to(HOME_POSE, timeout=20.0)

    def stop(self) -> None:
        """Stop streaming; the arm holds the last point it was sent (≤ one step ahead)."""
        with self._lock:
            self._target = None

    def recover(self) -> None:
        """UFactory's recovery sequence: clean_error, clean_warn, motion_enable(True), then the mode
        and set_state(0) (clean_error leaves the arm disabled and stopped; after emergency_stop the
        state is 4 until set_state(0)). Raises DeviceError if an error code survives it."""
        api = self._require()
        with self._lock:
            self._target = None
            self._check(api.clean_error(), "clean_error")
            self._check(api.clean_warn(), "clean_warn")
            self._check(api.motion_enable(True), "motion_enable")
            self._stream_error = ""
            self._estopped = ""
            self._error_code, self._warn_code = int(api.error_code), int(api.warn_code)
            if self._error_code:
                raise DeviceError(f"xArm6 at {self.host}: controller error {self._error_code} persists after "
                                  "clean_error; see the xArm error code table (a collision, a joint limit?)")
            self._enter_servo_mode()

    def estop(self) -> None:
        """Controller emergency stop (``XArmAPI.emergency_stop``: state 4, motion aborted). Not under
        the command lock: it must not wait behind a blocking move_to/home."""
        self._target = None
        self._estopped = "e-stopped on the controller (state 4); Recover to re-enable"
        api = self._require()
        try:
            api.emergency_stop()
        except Exception as exc:
            raise DeviceError(f"xArm6 at {self.host}: emergency_stop failed ({one_line(exc, limit=SDK_MESSAGE_LIMIT)})") from None

    # -- internals ------------------------------------------------------------------------
    def _enter_servo_mode(self) -> None:
        api = self._require()
        self._check(api.motion_enable(True), "motion_enable")
        self._check(api.set_mode(1), "set_mode(1)")
        self._check(api.set_state(0), "set_state(0)")
        # The walk starts from where the arm is, never from a stale command.
        code, pos = api.get_position(is_radian=True)
        self._check(code, "get_position")
        self._cmd = pose_from_sdk(pos)

    def _stream_loop(self) -> None:
        period = 1.0 / self.stream_hz
        next_t = time.monotonic()
        while self._running:
            with self._lock:
                target, cmd = self._target, self._cmd
                if target is not None and cmd is not None and not np.allclose(target, cmd, atol=1e-7):
                    self._send_step(target, cmd)
                    next_t += period
                    wait = next_t - time.monotonic()
                else:
                    wait = None
            if wait is None:
                self._wake.wait(0.05)
                self._wake.clear()
                next_t = time.monotonic()
            elif wait > 0:
                time.sleep(wait)
            else:
                next_t = time.monotonic()  # fell behind: do not burst to catch up

    def _send_step(self, target: np.ndarray, cmd: np.ndarray) -> None:
        steps = split_steps(cmd, target, self.max_step_m, self.max_step_rad)
        self.calls_per_tick_max = max(self.calls_per_tick_max, len(steps))
        step = steps[0]
        try:
            code = self._api.set_servo_cartesian(pose_to_sdk(step), is_radian=True)
        except Exception as exc:
            code, msg = -1, one_line(exc, limit=SDK_MESSAGE_LIMIT)
        else:
            msg = ""
        if code != 0:
            self._target = None
            self._stream_error = (f"xArm6 at {self.host}: set_servo_cartesian failed with code {code}"
                                  + (f" ({msg})" if msg else "")
                                  + (f", controller error {self._error_code}" if self._error_code else ""))
            return
        self._cmd = step

    def _on_error_warn(self, data: dict) -> None:
        self._error_code = int(data.get("error_code", 0) or 0)
        self._warn_code = int(data.get("warn_code", 0) or 0)
        if self._error_code:
            with self._lock:
                self._target = None  # the controller stopped; do not resume on our own

    def _error_text(self, api) -> str:
        """The fault that stops the arm, '' if none (warnings are not faults)."""
        if self._error_code:
            return f"controller error {self._error_code}"
        if self._estopped:
            return self._estopped
        if self._stream_error:
            return self._stream_error
        state = getattr(api, "state", None) if api is not None else None
        if state == XARM_STATE_STOPPED:
            return "controller stopped (state 4, e.g. the pendant's stop); Recover to re-enable"
        return ""

    def _require(self):
        api = self._api
        if api is None:
            raise DeviceError(f"xArm6 at {self.host} is not connected; call connect() first")
        if not api.connected:
            raise DeviceDisconnected(f"xArm6 at {self.host}: connection lost")
        return api

    def _check(self, code, what: str) -> None:
        if code != 0:
            if self._api is not None and not self._api.connected:
                raise DeviceDisconnected(f"xArm6 at {self.host}: connection lost during {what}")
            extra = f", controller error {self._error_code}" if self._error_code else ""
            raise DeviceError(f"xArm6 at {self.host}: {what} returned code {code}{extra}")
