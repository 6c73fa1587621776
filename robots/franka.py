"""Franka FR3 (arm + hand) through the real ``franky`` client.

The same class drives a physical FR3 (``franka:172.16.0.2``) and franky-sim on loopback
(``127.0.0.2``): franky speaks libfranka's network protocol and franky-sim serves it, so the code
path tested here is the hardware one.

Streaming (``servo``) uses Cartesian *velocity* motions: each tick sends
``CartesianVelocityMotion(Twist(feed-forward + P·error), duration=hold)`` asynchronously, which
franky blends into the running motion without stopping. Two properties decided this over
re-sending absolute ``CartesianMotion`` targets each tick (measured in bench/franka_servo.py and
tests/test_franka.py):

* a pose motion plans to *arrive at rest* at every target, so at 20 Hz each new target cuts in on a
  decelerating profile and the arm lags a full tick; the velocity stream carries the target's
  velocity (feed-forward) so it tracks without that lag;
* the velocity motion ends by itself ``hold`` after the last update, so a stalled caller (frozen UI,
  dead teleop thread) makes the arm stop on its own — a dead-man switch built into the command.

franky's trajectory generator (Ruckig) still enforces the robot's velocity/acceleration/jerk limits
scaled by ``relative_dynamics_factor`` for every command.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from recorder.messages import SDK_MESSAGE_LIMIT, one_line
from robots.base import ArmBase, ArmLimits, ArmState, DeviceDisconnected, DeviceError, GripperBase
from robots.lab_config import DEFAULT_TCP_OFFSET
from robots.safety import check_target, default_limits

# FR3 ready pose of franky-sim (and a common lab ready pose): hand above the table, pointing down.
HOME_Q = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)
FRANKA_HAND_MAX_WIDTH = 0.08  # m

# One source of truth for each robot's limits: the safety filter's table (robots/safety.py).
DEFAULT_LIMITS = default_limits("franka")


@dataclass(frozen=True)
class ServoGains:
    """Velocity-streaming controller: twist = feed-forward + kp · pose error, clamped to limits."""

    kp_linear: float = 10.0  # 1/s: a 1 cm error asks for 10 cm/s (0.5 of the error per 20 Hz tick)
    kp_angular: float = 8.0  # 1/s
    # Each velocity command is held this many nominal ticks; then franky brings the arm to rest.
    hold_ticks: float = 2.5
    min_hold_s: float = 0.08


@dataclass(frozen=True)
class GraspParams:
    """Force-limited grasp. Width 0 with a wide outer epsilon closes on any object up to the full
    opening (the fingers stop at contact and press with ``force``); in franky-sim the force comes
    from a spring toward the commanded width, so a target of 0 also squeezes hardest."""

    width: float = 0.0  # m
    speed: float = 0.05  # m/s
    force: float = 40.0  # N
    epsilon_inner: float = 0.0
    epsilon_outer: float = 0.075
    open_speed: float = 0.05  # m/s


CONNECT_TIMEOUT_S = 20.0  # a controller answers in ~1 s; libfranka itself waits forever


def open_with_timeout(factory, timeout: float, what: str):
    """Run a blocking SDK constructor on a helper thread and give up after ``timeout`` s.

    libfranka's connect has no timeout: a controller (or franky-sim) that accepts the TCP connection
    but is still serving another client never answers, and the caller hung for good (seen in CI when
    a failed test's traceback kept the previous client alive). The helper thread is left behind
    (daemon) if it never returns; the error names the likely cause."""
    box: dict = {}

    def run():
        try:
            box["value"] = factory()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, name=f"connect {what}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise DeviceDisconnected(f"{what}: no answer within {timeout:.0f} s (is another client connected? "
                                 f"the controller serves one at a time)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def pose_from_affine(affine) -> np.ndarray:
    """franky.Affine → (7,) xyz + quat xyzw (franky already uses xyzw)."""
    q = np.asarray(affine.quaternion, dtype=float).reshape(4)
    return np.concatenate([np.asarray(affine.translation, dtype=float).reshape(3), q / np.linalg.norm(q)])


def affine_from_pose(pose: np.ndarray):
    import franky

    pose = np.asarray(pose, dtype=float)
    return franky.Affine(pose[:3], pose[3:7] / np.linalg.norm(pose[3:7]))


def _matrix(affine) -> np.ndarray:
    """franky.Affine (or a column-major 16-vector) → 4x4."""
    if hasattr(affine, "matrix"):
        return np.asarray(affine.matrix, dtype=float).reshape(4, 4)
    return np.asarray(affine, dtype=float).reshape(4, 4, order="F")


class FrankaGripper(GripperBase):
    """Franka Hand through ``franky.Gripper``; opening normalised to 0 … 1 of 0.08 m.

    Commands are non-blocking: a worker thread issues the (blocking) franky calls so the control
    loop never waits on the hand, and only the newest request matters — a command that arrives
    while the hand is still moving stops the old one first.
    """

    def __init__(self, host: str, params: GraspParams = GraspParams()):
        self.host = host
        self.params = params
        self._gripper = None
        self._max_width = FRANKA_HAND_MAX_WIDTH
        self._cv = threading.Condition()
        self._wanted: float | None = None  # normalised opening requested, None = nothing new
        self._busy = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._stop = False
        self.last_result: bool | None = None  # outcome of the last finished grasp/move
        self.last_error = ""

    # -- lifecycle ------------------------------------------------------------------------
    def connect(self) -> None:
        import franky

        try:
            self._gripper = open_with_timeout(lambda: franky.Gripper(self.host), CONNECT_TIMEOUT_S,
                                              f"Franka hand at {self.host}")
        except DeviceDisconnected:
            raise
        except Exception as exc:
            raise DeviceDisconnected(f"Franka hand at {self.host}: cannot connect ({one_line(exc, limit=SDK_MESSAGE_LIMIT)})") from None
        # max_width is 0 until the hand was homed once; keep the nominal opening then.
        mw = float(self._gripper.max_width)
        self._max_width = mw if mw > 0.01 else FRANKA_HAND_MAX_WIDTH
        self._stop = False
        self._thread = threading.Thread(target=self._worker, name=f"franka-hand-{self.host}", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._thread = None
        self._gripper = None

    # -- Gripper protocol -----------------------------------------------------------------
    def width(self) -> float:
        g = self._require()
        try:
            w = float(g.width)
        except Exception as exc:
            raise DeviceDisconnected(f"Franka hand at {self.host}: {one_line(exc, limit=SDK_MESSAGE_LIMIT)}") from None
        return float(np.clip(w / self._max_width, 0.0, 1.0))

    def width_m(self) -> float:
        return self.width() * self._max_width

    @property
    def is_grasped(self) -> bool:
        return bool(self._require().is_grasped)


    def command(self, opening: float) -> None:
        """opening < 0.5 → force-limited grasp; otherwise move to that opening. Non-blocking."""
        self._require()
        opening = float(opening)
        if not np.isfinite(opening):
            raise ValueError(f"gripper opening must be a number in 0..1, got {opening}")
        opening = float(np.clip(opening, 0.0, 1.0))
        with self._cv:
            if self._redundant(opening):
                return
            self._wanted = opening
            self._cv.notify_all()
            if self._busy:
                # Preempt the running grasp/move so the newest command takes effect now. Under the
                # lock: the worker takes a new request only while holding it, so the operation
                # running now is the old one. Stopping after releasing the lock raced the worker,
                # which could already have started *this* command (a close right after the reset's
                # open was stopped at once and the fingers stayed half open: sim-franka
                # press_button 0/5).
                try:
                    self._gripper.stop_async()
                except Exception:
                    pass

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until the last command finished (tests, scripted moves). True if idle in time."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._busy or self._wanted is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    # -- internals ------------------------------------------------------------------------
    def _require(self):
        if self._gripper is None:
            raise DeviceError(f"Franka hand at {self.host} is not connected")
        return self._gripper

    def _redundant(self, opening: float) -> bool:
        """Teleop and policies resend the same command every tick; only changes reach the hand."""
        pending = self._wanted
        if pending is not None:
            return (pending < 0.5) == (opening < 0.5) and abs(pending - opening) < 0.05
        if opening < 0.5:
            return self._closing
        return not self._closing and self._last_open is not None and abs(self._last_open - opening) < 0.05

    _last_open: float | None = None

    def _worker(self) -> None:
        while True:
            with self._cv:
                while self._wanted is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                opening, self._wanted = self._wanted, None
                self._busy = True
                self._closing = opening < 0.5
                self._last_open = None if self._closing else opening
            p = self.params
            try:
                if self._closing:
                    ok = self._gripper.grasp(p.width, p.speed, p.force, p.epsilon_inner, p.epsilon_outer)
                else:
                    ok = self._gripper.move(opening * self._max_width, p.open_speed)
                self.last_result, self.last_error = bool(ok), ""
            except Exception as exc:  # a preempting stop() also ends up here; keep the thread alive
                self.last_result, self.last_error = False, one_line(exc, limit=SDK_MESSAGE_LIMIT)
            with self._cv:
                self._busy = False
                self._cv.notify_all()


class FrankaArm(ArmBase):
    """Arm protocol for a Franka FR3 through franky (hardware or franky-sim)."""

    name = "franka"
    dof = 7

    def __init__(
        self,
        host: str,
        *,
        limits: ArmLimits = DEFAULT_LIMITS,
        rate_hz: float = 20.0,
        dynamics_factor: float = 0.2,
        gains: ServoGains = ServoGains(),
        grasp: GraspParams = GraspParams(),
        home_q: tuple[float, ...] = HOME_Q,
        servo_mode: str = "velocity",
        tcp_offset: tuple[float, float, float] | None = DEFAULT_TCP_OFFSET["franka"],
    ):
        if servo_mode not in ("velocity", "pose"):
            raise ValueError(f"servo_mode must be 'velocity' or 'pose', got {servo_mode!r}")
        self.host = host
        self.limits = limits
        self.rate_hz = float(rate_hz)
        self.dynamics_factor = float(dynamics_factor)
        self.gains = gains
        self.home_q = tuple(home_q)
        self.servo_mode = servo_mode
        # Flange → TCP (m). None keeps the end-effector frame configured in Desk (franky-sim's lab
        # uses that: its scripted tasks were written for the hand's own TCP).
        self.tcp_offset = None if tcp_offset is None else tuple(float(v) for v in tcp_offset)
        self.gripper = FrankaGripper(host, grasp)
        self._robot = None
        self._lock = threading.RLock()
        self._prev_target: np.ndarray | None = None
        self._prev_target_t = 0.0
        self._streaming = False
        self._lost = ""  # why the connection dropped, so later calls say the same one line
        self._estopped = ""  # set by estop(), cleared by recover(): reported as ArmState.error

    # -- lifecycle ------------------------------------------------------------------------
    def connect(self) -> None:
        import franky

        try:
            robot = open_with_timeout(lambda: franky.Robot(self.host, realtime_config=franky.RealtimeConfig.Ignore),
                                      CONNECT_TIMEOUT_S, f"Franka at {self.host}")
        except DeviceDisconnected:
            raise
        except Exception as exc:
            raise DeviceDisconnected(f"Franka at {self.host}: cannot connect ({one_line(exc, limit=SDK_MESSAGE_LIMIT)})") from None
        # franky switches the calling thread to SCHED_FIFO 99 when it may; every thread started
        # from here later would inherit it and starve the rest of the app (DESIGN.md). libfranka's
        # own control thread keeps its priority; only this (app) thread is put back.
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (PermissionError, OSError):
            pass
        robot.relative_dynamics_factor = self.dynamics_factor
        self._robot = robot
        self._lost = ""
        self._estopped = ""
        try:
            if self.tcp_offset is not None:
                self._apply_tcp_offset(robot)
            self.gripper.connect()
        except DeviceError:
            self._robot = None
            raise

    def _apply_tcp_offset(self, robot) -> None:
        """Make O_T_EE the fingertip centre: F_T_EE = F_T_NE · NE_T_EE with its origin at
        ``tcp_offset`` (flange frame) and the orientation of the nominal EE frame kept, so poses keep
        the same axes as before (the hand's −45° about z) and only the point moves."""
        try:
            f_t_ne = _matrix(robot.state.F_T_NE)
            ne_t_ee = np.eye(4)
            ne_t_ee[:3, 3] = f_t_ne[:3, :3].T @ (np.asarray(self.tcp_offset) - f_t_ne[:3, 3])
            robot.set_ee(ne_t_ee.flatten(order="F").tolist())
        except Exception as exc:
            raise DeviceError(f"Franka at {self.host}: cannot set the TCP offset {list(self.tcp_offset)} "
                              f"({one_line(exc, limit=SDK_MESSAGE_LIMIT)})") from None

    def flange_to_tcp(self) -> np.ndarray:
        """F_T_EE the controller uses now (4x4), to check the TCP offset took effect."""
        return _matrix(self._require().state.F_T_EE)

    def disconnect(self) -> None:
        if self._robot is not None:
            try:
                self.stop()
            except DeviceError:
                pass
        self.gripper.disconnect()
        self._robot = None


    # -- state ----------------------------------------------------------------------------
    def state(self) -> ArmState:
        robot = self._require()
        try:
            rs = robot.state
            ee = pose_from_affine(rs.O_T_EE)
            q = np.asarray(rs.q, dtype=float).reshape(7)
            mode = rs.robot_mode
            errors = repr(rs.current_errors)
            moving = bool(robot.is_in_control)
        except Exception as exc:
            raise self._translate(exc) from None
        error = ""
        if errors not in ("", "[]", "Errors([])", "None"):
            error = f"{mode.name}: {errors}"
        elif mode.name in ("Reflex", "UserStopped", "AutomaticErrorRecovery"):
            # UserStopped: the external activation device (the lab's hardware e-stop) is pressed.
            error = mode.name
        elif self._estopped:
            error = self._estopped
        try:
            grip = self.gripper.width()
        except DeviceError:
            grip = float("nan")
        return ArmState(stamp=time.monotonic(), ee_pose=ee, joint_pos=q, gripper=grip, moving=moving, error=error)

    # -- motion ---------------------------------------------------------------------------
    def servo(self, target: np.ndarray) -> None:
        pose = check_target(target, self.limits.workspace, "Franka")
        with self._lock:
            robot = self._require()
            if self.servo_mode == "pose":
                self._servo_pose(robot, pose)
            else:
                self._servo_velocity(robot, pose)
            self._streaming = True

    def _servo_pose(self, robot, pose: np.ndarray) -> None:
        import franky

        motion = franky.CartesianMotion(affine_from_pose(pose), franky.ReferenceType.Absolute)
        self._move(robot, motion, asynchronous=True)

    def twist_for(self, pose: np.ndarray, current: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Feed-forward from successive targets + P on the pose error, clamped to the arm limits."""
        g = self.gains
        period = 1.0 / self.rate_hz
        ff_v = np.zeros(3)
        ff_w = np.zeros(3)
        prev, dt = self._prev_target, now - self._prev_target_t
        # Only a recent previous target says how fast the target moves; after a pause it is stale.
        if prev is not None and 0.3 * period < dt < 3.0 * period:
            ff_v = (pose[:3] - prev[:3]) / dt
            ff_w = (Rotation.from_quat(pose[3:]) * Rotation.from_quat(prev[3:]).inv()).as_rotvec() / dt
        self._prev_target, self._prev_target_t = pose.copy(), now
        err_v = pose[:3] - current[:3]
        # Angular velocity is about the EE origin, axes parallel to the base frame (franky's Twist).
        err_w = (Rotation.from_quat(pose[3:]) * Rotation.from_quat(current[3:]).inv()).as_rotvec()
        v = ff_v + g.kp_linear * err_v
        w = ff_w + g.kp_angular * err_w
        v *= min(1.0, self.limits.max_linear_speed / max(np.linalg.norm(v), 1e-12))
        w *= min(1.0, self.limits.max_angular_speed / max(np.linalg.norm(w), 1e-12))
        return v, w

    def _servo_velocity(self, robot, pose: np.ndarray) -> None:
        import franky

        try:
            current = pose_from_affine(robot.current_pose.end_effector_pose)
        except Exception as exc:
            raise self._translate(exc) from None
        v, w = self.twist_for(pose, current, time.monotonic())
        hold_ms = int(round(1000 * max(self.gains.min_hold_s, self.gains.hold_ticks / self.rate_hz)))
        motion = franky.CartesianVelocityMotion(franky.Twist(v, w), duration=franky.Duration(hold_ms))
        self._move(robot, motion, asynchronous=True)

    def move_to(self, target: np.ndarray, timeout: float = 10.0) -> None:
        import franky

        pose = check_target(target, self.limits.workspace, "Franka")
        with self._lock:
            robot = self._require()
            self._end_stream(robot)
            motion = franky.CartesianMotion(affine_from_pose(pose), franky.ReferenceType.Absolute)
            self._move(robot, motion, asynchronous=True)
            self._join(robot, timeout, f"move to {np.round(pose[:3], 3).tolist()}")
            self._wait_still(robot)

    def home(self, timeout: float = 15.0) -> None:
        import franky

        with self._lock:
            robot = self._require()
            self._end_stream(robot)
            self._move(robot, franky.JointMotion(np.asarray(self.home_q)), asynchronous=True)
            self._join(robot, timeout, "home")
            self._wait_still(robot)

    def stop(self) -> None:
        """Bring the arm to rest now (a stop motion of the running control type, then join)."""
        with self._lock:
            robot = self._require()
            self._end_stream(robot)
            try:
                robot.join_motion(timeout=3.0)
            except Exception as exc:
                raise self._translate(exc) from None

    def estop(self) -> None:
        """franky ``Robot.stop()``: libfranka's StopMove aborts whatever motion runs (the stream, a
        home move in another thread) on the controller. Reported as a fault until ``recover()``."""
        self._estopped = "e-stopped: motion aborted on the controller; Recover to re-enable"
        robot = self._robot
        if robot is None:
            return
        try:
            robot.stop()  # deliberately without self._lock: a blocking move_to/home holds it
        except Exception as exc:
            raise self._translate(exc) from None
        finally:
            self._streaming = False
            self._prev_target = None

    def recover(self) -> None:
        """``recover_from_errors`` (libfranka automatic error recovery) and forget the e-stop;
        raises DeviceError when the controller still reports an error afterwards."""
        with self._lock:
            robot = self._require()
            try:
                robot.recover_from_errors()
            except Exception as exc:
                raise self._translate(exc) from None
            self._prev_target = None
            self._streaming = False
            self._estopped = ""
        left = self.state().error
        if left:
            raise DeviceError(f"Franka at {self.host}: still faulted after recovery ({left}); "
                              "check the arm (hardware e-stop released? joints in limits?)")

    # -- internals ------------------------------------------------------------------------
    def _require(self):
        if self._robot is None:
            if self._lost:
                raise DeviceDisconnected(self._lost)
            raise DeviceError(f"Franka at {self.host} is not connected; call connect() first")
        return self._robot

    def _end_stream(self, robot) -> None:
        """A pose/joint motion cannot replace a running velocity motion; stop that one first."""
        import franky

        if not robot.is_in_control:
            self._streaming = False
            self._prev_target = None
            return
        signal = robot.current_control_signal_type
        stop = (franky.CartesianVelocityStopMotion() if signal is not None and "Velocit" in signal.name
                and "Cartesian" in signal.name else None)
        try:
            if stop is not None:
                robot.move(stop, asynchronous=True)
            robot.join_motion(timeout=3.0)
        except Exception as exc:
            raise self._translate(exc) from None
        self._streaming = False
        self._prev_target = None

    def _move(self, robot, motion, asynchronous: bool) -> None:
        try:
            robot.move(motion, asynchronous=asynchronous)
        except Exception as exc:
            raise self._translate(exc) from None

    def _join(self, robot, timeout: float, what: str) -> None:
        try:
            done = robot.join_motion(timeout=timeout)
        except Exception as exc:
            raise self._translate(exc) from None
        if not done:
            self.stop()
            raise DeviceError(f"Franka at {self.host}: {what} did not finish within {timeout:.1f} s")

    def _wait_still(self, robot, timeout: float = 1.0, dq_tol: float = 0.02) -> None:
        """join_motion returns when the *trajectory* ends; the joints may still be settling
        (franky-sim: ~0.3 rad/s for ~0.2 s, mostly null-space). A velocity stream started then
        inherits that motion as a 1–2 cm jump, so a blocking move returns only once at rest."""
        deadline = time.monotonic() + timeout
        try:
            while np.max(np.abs(np.asarray(robot.state.dq))) > dq_tol and time.monotonic() < deadline:
                time.sleep(0.01)
        except Exception as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: BaseException) -> DeviceError:
        import franky

        msg = one_line(exc, limit=SDK_MESSAGE_LIMIT)
        if isinstance(exc, franky.NetworkException):
            self._robot = None
            self._lost = f"Franka at {self.host}: connection lost ({msg})"
            return DeviceDisconnected(self._lost)
        return DeviceError(f"Franka at {self.host}: {type(exc).__name__}: {msg}")
