"""Fixed-rate control loop: source -> safety filter -> arm, with a watchdog and a latching e-stop.

One control thread ticks on absolute deadlines of ``time.monotonic()`` (tick k is due at
``start + k / rate``), so the rate never drifts; when a tick is late by more than a whole period
the missed deadlines are skipped and counted as overruns instead of being run back to back.

Per tick: read the arm state and the newest camera frame (non-blocking), ask the source for a target
(a TeleopDevice twist integrated onto the last target, or a TargetSource's absolute target), pass it
through robots.safety.SafetyFilter, stream it with ``arm.servo`` and send the gripper command when it
changes, then hand a ``Tick`` to the listeners (recorder, GUI), which run on this thread and must be
quick; a listener that raises is counted and logged, never allowed to stop the arm's loop.

A separate watchdog thread (polling every few ms, independent of the control rate) stops the arm
when the input device reports itself lost, when a moving input stream goes stale for longer than
``stall_timeout``, or when the control thread itself stops completing ticks (a blocking driver or
listener). Losing the device or the arm latches a fault; a stale stream only holds until fresh input
arrives. ``estop()`` may be called from any thread; it stops the controller too (``Arm.estop``:
xArm emergency_stop, franky Robot.stop) and latches until ``reset_estop()``. While latched the loop
keeps reading state and emitting ticks but commands nothing.

Controller faults latch as well: a non-empty ``ArmState.error`` (reflex, xArm error code, the
controller still e-stopped after the reset) becomes the fault ``arm_fault: <reason>``, and an arm
found more than ``OUTSIDE_TOLERANCE`` outside the workspace when the target restarts from the
measured pose becomes ``outside_workspace: …`` (the filter would otherwise drive it back in on its
own). ``recover()`` runs ``Arm.recover`` and clears the fault only when the arm then reports none.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np
from scipy.spatial.transform import Rotation

from robots.base import (Arm, ArmLimits, ArmState, Camera, DeviceDisconnected, DeviceError, RGBDFrame,
                         TeleopState)
from robots.lab_config import OUTSIDE_TOLERANCE
from robots.safety import SafetyFilter, default_limits, normalize_pose, rotation_angle, validate_rate

log = logging.getLogger(__name__)

DEFAULT_STALL_TIMEOUT = 0.1  # s without fresh input while moving before the arm is stopped
WATCHDOG_POLL = 0.005  # s; the watchdog's reaction time on top of the timeouts
# How far an integrated teleop target may run ahead of the measured pose (a 0.25 m/s stream with
# one or two ticks of servo lag leads by 1-3 cm; more means the arm is blocked or lagging).
DEFAULT_MAX_LEAD = 0.05  # m
DEFAULT_MAX_LEAD_ANGLE = 0.3  # rad
GRIPPER_DEADBAND = 1e-3  # gripper commands closer than this to the last one are not re-sent


@runtime_checkable
class TargetSource(Protocol):
    """Absolute targets per tick: scripted expert, policy rollouts."""

    def next_target(self, state: ArmState, frame: RGBDFrame | None, t: float) -> tuple[np.ndarray, float, dict]:
        """(pose (7,), gripper opening 0..1, info) for the tick at loop time ``t`` seconds."""


@dataclass
class Tick:
    index: int
    t: float  # seconds since loop start (monotonic), at the tick's wake-up
    state: ArmState
    action: np.ndarray  # (8,) commanded target pose (after safety) + gripper command 0..1
    frame: RGBDFrame | None
    period: float  # seconds since the previous tick's wake-up
    compute_time: float  # seconds from wake-up to the arm having been commanded
    events: list[str]
    buttons: dict[str, bool] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    late: float = 0.0  # wake-up minus deadline, seconds
    commanding: bool = True  # False while e-stopped, faulted or held by the watchdog
    fault: str = ""  # latched fault ("" when none); e-stop is reported as "estop"


Listener = Callable[[Tick], None]


class ControlLoop:
    def __init__(self, arm: Arm, source, camera: Camera | None = None, rate_hz: float = 20.0,
                 limits: ArmLimits | None = None, *, stall_timeout: float = DEFAULT_STALL_TIMEOUT,
                 max_lead: float = DEFAULT_MAX_LEAD, max_lead_angle: float = DEFAULT_MAX_LEAD_ANGLE,
                 tcp_offset=None):
        self.rate_hz = validate_rate(rate_hz)
        self.period = 1.0 / self.rate_hz
        if not stall_timeout > self.period:
            # A timeout shorter than one period would call every tick of a healthy device stale.
            raise ValueError(f"stall timeout {stall_timeout:g} s must exceed the control period "
                             f"{self.period:g} s")
        if hasattr(source, "next_target"):
            self._teleop = False
        elif hasattr(source, "read"):
            self._teleop = True
        else:
            raise TypeError(f"source {type(source).__name__} is neither a TeleopDevice (read()) "
                            "nor a TargetSource (next_target())")
        self.arm = arm
        self.source = source
        self.camera = camera
        self.limits = limits or getattr(arm, "limits", None) or default_limits(arm.name)
        # tcp_offset: only for poses that are not the TCP already (robots/base.py: arms report TCP).
        self.filter = SafetyFilter(self.limits, self.rate_hz, tcp_offset=tcp_offset)
        self.stall_timeout = float(stall_timeout)
        self.max_lead, self.max_lead_angle = float(max_lead), float(max_lead_angle)

        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._stop_evt = threading.Event()
        # Serialises arm commands between the control thread and stop requests from other threads.
        self._cmd_lock = threading.RLock()
        self._state_lock = threading.Lock()  # guards the flags and events below
        self._estop = False
        self._fault = ""
        self._hold = ""  # non-latching watchdog hold reason ("input_stalled", "loop_stalled")
        self._reanchor = True  # next tick restarts the target from the measured pose
        self._pending: list[str] = []  # events raised off the control thread, reported next tick
        self._errors_valid_from = 0.0  # ArmState.error read before this (monotonic) predates a Recover

        self._last_fresh = 0.0  # newest input stamp seen by the control thread (monotonic)
        self._input_moving = False  # last fresh input asked for motion
        self._alive = 0.0  # control-thread heartbeat: monotonic time of its last tick start or end
        self._target: np.ndarray | None = None
        self._gripper_cmd: float | None = None

        self.ticks = 0
        self.overruns = 0
        self.listener_errors = 0
        self.stop_calls: deque[tuple[float, str]] = deque(maxlen=64)  # (monotonic, reason)
        self.periods: deque[float] = deque(maxlen=10_000)
        self.compute_times: deque[float] = deque(maxlen=10_000)
        self.t0 = 0.0

    # ---------------------------------------------------------------- public API

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def estopped(self) -> bool:
        return self._estop

    @property
    def fault(self) -> str:
        return self._fault

    def start(self) -> None:
        if self.running:
            raise RuntimeError("control loop already running")
        self._stop_evt.clear()
        self._thread = threading.Thread(target=self._run, name="control-loop", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="control-watchdog", daemon=True)
        self.t0 = time.monotonic()
        self._alive = self.t0
        self._last_fresh = self.t0
        self._thread.start()
        self._watchdog.start()

    def stop(self) -> None:
        """Stop the loop and leave the arm halted."""
        self._stop_evt.set()
        for th in (self._thread, self._watchdog):
            if th is not None and th is not threading.current_thread():
                th.join(timeout=2.0)
        self._thread = self._watchdog = None
        self._stop_arm("loop_stopped")

    def estop(self) -> None:
        """Latch an emergency stop (any thread): the arm stops now, on the controller, and stays
        uncommanded."""
        with self._state_lock:
            self._estop = True
            self._pending.append("estop")
        self._stop_arm("estop", controller=True)

    def recover(self) -> None:
        """Clear a latched arm fault (any thread but the control thread): ``Arm.recover()``, then the
        fault is cleared only if the arm reports no error and its TCP lies in the workspace;
        otherwise DeviceError with the reason. Refused while the e-stop is latched."""
        if self._estop:
            raise DeviceError("reset the E-stop first, then Recover")
        if self._teleop and not self._source_connected():
            raise DeviceError(f"cannot recover: input device {getattr(self.source, 'name', '?')!r} "
                              "is still disconnected")
        # Hold (not the command lock): recovery takes seconds and the loop must keep ticking — state,
        # frames, the GUI — while commanding nothing.
        with self._state_lock:
            self._hold = "recovering"
        try:
            self.arm.recover()
            state = self.arm.state()
        except BaseException:
            with self._state_lock:
                self._hold = "" if self._hold == "recovering" else self._hold
            raise
        if state.error:
            with self._state_lock:
                self._hold = "" if self._hold == "recovering" else self._hold
            raise DeviceError(f"the arm still reports a fault after Recover: {state.error}")
        outside = self._outside(state.ee_pose)
        with self._state_lock:
            # A tick that read the state before the recovery finished must not re-latch its old error.
            self._errors_valid_from = state.stamp
            self._fault = outside
            self._hold = ""
            self._reanchor = True
            self._pending.append("recovered" if not outside else outside)
        if outside:
            raise DeviceError(outside.split(": ", 1)[1])

    def reset_estop(self) -> None:
        """Clear the e-stop and latched faults; motion resumes from the arm's measured pose."""
        if self._teleop and not self._source_connected():
            raise DeviceError(f"cannot reset: input device {getattr(self.source, 'name', '?')!r} "
                              "is still disconnected")
        with self._state_lock:
            self._estop = False
            self._fault = ""
            self._hold = ""
            self._reanchor = True
            self._pending.append("reset")

    def __enter__(self) -> "ControlLoop":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- stopping

    def _stop_arm(self, reason: str, controller: bool = False) -> None:
        # A stop must never wait behind a device call that hangs: try the lock briefly, then stop anyway.
        got = self._cmd_lock.acquire(timeout=0.01)
        try:
            self.stop_calls.append((time.monotonic(), reason))
            estop = getattr(self.arm, "estop", None) if controller else None
            (estop or self.arm.stop)()
        except Exception as exc:  # the arm may be the thing that failed; the stop is best effort
            log.warning("arm.stop() after %s failed: %s", reason, exc)
        finally:
            if got:
                self._cmd_lock.release()

    def _latch_fault(self, reason: str) -> None:
        with self._state_lock:
            first = not self._fault
            if first:
                self._fault = reason
                self._pending.append(reason)
        if first:
            log.warning("control loop fault: %s", reason)
            self._stop_arm(reason)

    def _set_hold(self, reason: str) -> None:
        with self._state_lock:
            if self._hold:
                return
            self._hold = reason
            self._pending.append(reason)
        self._stop_arm(reason)

    def _outside(self, pose) -> str:
        """'outside_workspace: …' when the measured TCP is beyond the box by more than the tolerance."""
        try:
            tip = self.filter.tip_position(pose)
        except ValueError:
            return ""
        ws = self.limits.workspace
        if ws.contains(tip, tol=OUTSIDE_TOLERANCE):
            return ""
        return (f"outside_workspace: TCP at {np.round(tip, 3).tolist()} is outside the workspace "
                f"{list(ws.lo)}..{list(ws.hi)}; Home the arm or move it inside")

    def _source_connected(self) -> bool:
        try:
            return bool(self.source.connected)
        except Exception:
            return False

    # ---------------------------------------------------------------- watchdog thread

    def _watch(self) -> None:
        while not self._stop_evt.wait(WATCHDOG_POLL):
            now = time.monotonic()
            if self._teleop and not self._fault and not self._source_connected():
                self._latch_fault("input_lost")
            loop_age = now - self._alive
            input_stale = (self._teleop and self._input_moving
                           and now - self._last_fresh > self.stall_timeout)
            # Input freshness is only learnt when the control thread reads the device; if that thread
            # is itself late, the stale input is its fault and is reported as such.
            if loop_age > self.stall_timeout or (input_stale and loop_age > 1.5 * self.period):
                self._set_hold("loop_stalled")
            elif input_stale:
                self._set_hold("input_stalled")

    # ---------------------------------------------------------------- control thread

    def _run(self) -> None:
        k = 0
        prev_wake = None
        state: ArmState | None = None
        try:
            state = self.arm.state()
        except Exception as exc:
            self._latch_fault(f"arm_disconnected: {exc}")
        while not self._stop_evt.is_set():
            deadline = self.t0 + k * self.period
            now = time.monotonic()
            if deadline > now and self._stop_evt.wait(deadline - now):
                break
            wake = time.monotonic()
            tick = self._tick(k, wake, wake - deadline, wake - prev_wake if prev_wake else self.period, state)
            state = tick.state
            prev_wake = wake
            self._emit(tick)
            self.ticks += 1
            self._alive = time.monotonic()
            k += 1
            behind = self._alive - (self.t0 + k * self.period)
            if behind > self.period:
                skipped = int(behind // self.period)
                self.overruns += skipped
                k += skipped

    def _tick(self, k: int, wake: float, late: float, period: float, last_state: ArmState | None) -> Tick:
        events: list[str] = []
        t = wake - self.t0
        self._alive = wake
        # The device is read first: its freshness is then known as of this wake-up, so a slow arm
        # RPC later in the tick cannot make a live device look stale to the watchdog.
        reading, read_error = None, None
        if self._teleop:
            try:
                reading = self.source.read()
                self._note_input(reading, wake)
            except Exception as exc:
                read_error = exc
        state = last_state
        got = None
        try:
            got = self.arm.state()
            if not (np.all(np.isfinite(got.ee_pose)) and np.linalg.norm(got.ee_pose[3:]) > 1e-6):
                # A driver mid-disconnect can report garbage; never build targets from it.
                raise DeviceError("arm reported an invalid pose (NaN or zero quaternion)")
            state = got
        except DeviceDisconnected as exc:
            self._latch_fault(f"arm_disconnected: {exc}")
        except Exception as exc:
            self._latch_fault(f"arm_error: {exc}")
        if state is got and state is not None and state.error and state.stamp >= self._errors_valid_from:
            self._latch_fault(f"arm_fault: {state.error}")
        frame = None
        if self.camera is not None:
            try:
                frame = self.camera.latest()
            except Exception as exc:
                events.append(f"camera_error: {exc}")

        with self._state_lock:
            events[:0] = self._pending
            self._pending = []
            if self._hold == "loop_stalled":  # this thread is ticking again
                self._hold = ""
                self._reanchor = True
                events.append("loop_resumed")
            outside = self._outside(state.ee_pose) if state is not None and (
                self._reanchor or self._target is None) else ""
            if outside and not self._fault:
                self._fault = outside
                events.append(outside)
            if self._reanchor and state is not None and not (self._estop or self._fault):
                self._target = normalize_pose(state.ee_pose)
                self._reanchor = False
        if outside:
            log.warning("control loop fault: %s", outside)
        if self._target is None and state is not None:
            self._target = normalize_pose(state.ee_pose)

        buttons: dict[str, bool] = {}
        info: dict = {}
        requested, gripper = None, self._gripper_cmd
        if state is not None:
            try:
                if self._teleop:
                    if read_error is not None:
                        raise read_error
                    requested, gripper, buttons, info = self._from_teleop(reading, wake, state, events)
                else:
                    pose, gripper, info = self.source.next_target(state, frame, t)
                    requested = np.asarray(pose, dtype=float)
                    info = dict(info or {})
            except DeviceDisconnected as exc:
                self._latch_fault(f"input_lost: {exc}")
            except Exception as exc:
                self._latch_fault(f"source_error: {type(exc).__name__}: {exc}")

        commanding = False
        with self._cmd_lock:
            with self._state_lock:
                blocked = self._estop or bool(self._fault) or bool(self._hold)
            if not blocked and requested is not None and self._target is not None:
                safe, filt_events = self.filter.filter(self._target, requested)
                events.extend(filt_events)
                try:
                    self.arm.servo(safe)
                    self._target = safe
                    gripper = self._command_gripper(gripper)
                    commanding = True
                except DeviceDisconnected as exc:
                    self._latch_fault(f"arm_disconnected: {exc}")
                except DeviceError as exc:
                    # The driver refused the target (e.g. its own workspace check): hold, tell the user.
                    events.append(f"servo_refused: {exc}")
        compute = time.monotonic() - wake
        with self._state_lock:
            fault = "estop" if self._estop else self._fault
            events.extend(self._pending)
            self._pending = []
        target = self._target if self._target is not None else np.full(7, np.nan)
        g = self._gripper_cmd if self._gripper_cmd is not None else (state.gripper if state else np.nan)
        action = np.concatenate([target, [g]])
        if state is None:
            state = ArmState(stamp=wake, ee_pose=target.copy(), joint_pos=np.zeros(0), gripper=float("nan"),
                             error="no state")
        self.periods.append(period)
        self.compute_times.append(compute)
        return Tick(index=k, t=t, state=state, action=action, frame=frame, period=period,
                    compute_time=compute, events=events, buttons=buttons, info=info, late=late,
                    commanding=commanding, fault=fault)

    def _note_input(self, ts: TeleopState, now: float) -> None:
        """Freshness bookkeeping for the watchdog, done the moment the device has been read."""
        fresh = ts.stamp > self._last_fresh or ts.stamp >= now - self.period
        if fresh and ts.connected and now - ts.stamp <= self.stall_timeout:
            self._input_moving = bool(np.any(np.asarray(ts.twist, dtype=float) != 0))
            self._last_fresh = max(self._last_fresh, ts.stamp)

    def _from_teleop(self, ts: TeleopState, now: float, state: ArmState, events: list[str]):
        if not ts.connected:
            self._latch_fault("input_lost")
            return None, self._gripper_cmd, dict(ts.buttons), {}
        twist = np.asarray(ts.twist, dtype=float).reshape(-1)
        stale = now - ts.stamp > self.stall_timeout
        if not stale:
            with self._state_lock:
                if self._hold == "input_stalled":
                    self._hold = ""
                    # The arm stopped short of the last target; continue from where it really is.
                    self._target = normalize_pose(state.ee_pose)
                    events.append("input_resumed")
        if stale:
            twist = np.zeros(6)  # a stale stream must never keep the arm moving
        dt = self.period
        req = self._target.copy()
        req[:3] += twist[:3] * self.limits.max_linear_speed * dt
        rot = Rotation.from_rotvec(twist[3:] * self.limits.max_angular_speed * dt) if np.all(
            np.isfinite(twist[3:])) else None
        if rot is None:
            req[3:] = np.nan
        else:
            req[3:] = (rot * Rotation.from_quat(req[3:])).as_quat()
        self._limit_lead(req, state.ee_pose, events)
        # buttons["gripper"] is the operator's toggle state: True = wants the gripper closed.
        gripper = 0.0 if ts.buttons.get("gripper", False) else 1.0
        if "gripper" not in ts.buttons:
            gripper = self._gripper_cmd
        return req, gripper, dict(ts.buttons), dict(getattr(ts, "info", None) or {})

    def _limit_lead(self, req: np.ndarray, measured: np.ndarray, events: list[str]) -> None:
        """Stop integrating a twist once the target leads the measured pose by more than max_lead.

        A lagging or blocked arm (contact, a slow controller) would otherwise let the integrated
        target wind up far ahead and snap the arm there later. Only growth of the lead is refused, so
        the target never jumps back; it waits for the arm to catch up.
        """
        if not np.all(np.isfinite(req)):
            return
        cur = self._target
        lead_new = float(np.linalg.norm(req[:3] - measured[:3]))
        if lead_new > self.max_lead and lead_new > float(np.linalg.norm(cur[:3] - measured[:3])):
            req[:3] = cur[:3]
            events.append("lead_limited")
        q_meas = measured[3:] / np.linalg.norm(measured[3:])
        ang_new = rotation_angle(q_meas, req[3:] / np.linalg.norm(req[3:]))
        if ang_new > self.max_lead_angle and ang_new > rotation_angle(q_meas, cur[3:]):
            req[3:] = cur[3:]
            if "lead_limited" not in events:
                events.append("lead_limited")

    def _command_gripper(self, opening: float | None) -> float | None:
        if opening is None or not math.isfinite(opening):
            return self._gripper_cmd
        opening = min(1.0, max(0.0, float(opening)))
        if self._gripper_cmd is None or abs(opening - self._gripper_cmd) > GRIPPER_DEADBAND:
            self.arm.gripper.command(opening)
            self._gripper_cmd = opening
        return opening

    def _emit(self, tick: Tick) -> None:
        for fn in list(self._listeners):
            try:
                fn(tick)
            except Exception:
                self.listener_errors += 1
                if self.listener_errors <= 3 or self.listener_errors % 100 == 0:
                    log.exception("control-loop listener %r failed (%d so far)", fn, self.listener_errors)

    # ---------------------------------------------------------------- statistics

    def timing_stats(self) -> dict:
        """Period percentiles (ms) over the recorded ticks, overruns and listener failures."""
        p = np.asarray(self.periods, dtype=float)[1:] * 1e3  # the first period is nominal
        c = np.asarray(self.compute_times, dtype=float) * 1e3
        def pct(a, q):
            return float(np.percentile(a, q)) if a.size else float("nan")
        return {"ticks": self.ticks, "overruns": self.overruns, "listener_errors": self.listener_errors,
                "period_p50_ms": pct(p, 50), "period_p99_ms": pct(p, 99),
                "period_max_ms": float(p.max()) if p.size else float("nan"),
                "compute_p50_ms": pct(c, 50), "compute_p99_ms": pct(c, 99)}
