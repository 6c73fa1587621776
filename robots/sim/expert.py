"""Scripted expert for the sim tasks: oracle keyframes -> time-parametrised pose spline -> servo.

Each leg between two keyframes is a straight line in position and a slerp in orientation, traversed
with a rest-to-rest cubic progress profile (scipy CubicHermiteSpline with zero slopes at the knots):
no overshoot below a grasp height, a peak speed of 1.5x the leg's mean speed, and dwells at the
grasp/release keyframes so the gripper can act. ``ScriptedExpert`` is a ``TargetSource`` for the
control loop; ``ScriptedOperator`` drives the same plan as a ``TeleopDevice`` (twists + a gripper
button), the way a person with a SpaceMouse would; ``run_episode`` is the fixed-rate driver for
tests and demo generation.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.interpolate import CubicHermiteSpline
from scipy.spatial.transform import Rotation, Slerp

from robots.base import ArmState, DeviceDisconnected, DeviceError, RGBDFrame, TeleopState
from robots.sim.tasks import Waypoint

log = logging.getLogger(__name__)

PEAK_SPEED = 0.19  # m/s: under the 0.2 m/s safety limit of both sim arms
PEAK_ANGULAR_SPEED = 0.9  # rad/s
MIN_LEG = 0.12  # s, also the gripper "leg" between two keyframes at the same pose
SETTLE = 0.6  # s after the plan before success is judged (objects come to rest)
# Keyframe gating: the plan clock waits at a keyframe until the arm is there (and the gripper has
# acted), so a slow arm (franky-sim below 1 kHz on a loaded box) cannot be dragged past a grasp.
REACH_TOL = 0.012  # m, travel keyframes
FINE_TOL = 0.005  # m, keyframes at which the gripper acts or contact happens
FINE_PHASES = ("lower", "grasp", "place", "press")
MAX_REFUSALS = 20  # per episode, see run_episode
MAX_GATE_WAIT = 8.0  # s per keyframe, then the plan moves on regardless


@dataclass
class Plan:
    """A pose trajectory through keyframes; ``t`` is seconds since the plan started."""

    knots_t: np.ndarray  # arrival/departure times per knot
    knots_u: np.ndarray  # progress value (index of keyframe) per knot
    poses: np.ndarray  # (K+1, 7) start pose + keyframes
    grippers: list[float]  # command while travelling to / dwelling at keyframe k (index k)
    phases: list[str]
    arrive: np.ndarray  # time of arrival at keyframe k (index k, 0 = start)
    depart: np.ndarray  # end of the dwell at keyframe k
    progress: CubicHermiteSpline = field(repr=False, default=None)
    slerp: Slerp = field(repr=False, default=None)

    @property
    def duration(self) -> float:
        return float(self.knots_t[-1])

    def pose(self, t: float) -> np.ndarray:
        u = float(np.clip(self.progress(np.clip(t, 0.0, self.duration)), 0.0, len(self.poses) - 1))
        i = min(int(np.floor(u)), len(self.poses) - 2)
        s = u - i
        xyz = (1.0 - s) * self.poses[i, :3] + s * self.poses[i + 1, :3]
        return np.concatenate([xyz, self.slerp(u).as_quat()])

    def leg(self, t: float) -> int:
        """Index k of the keyframe being travelled to or dwelt at (1-based over keyframes)."""
        k = int(np.searchsorted(self.depart[1:], t, side="right")) + 1
        return min(k, len(self.poses) - 1)

    def gripper(self, t: float) -> float:
        k = self.leg(t)
        # The gripper acts on arrival: while travelling, keep the previous keyframe's command
        # (index 0 holds the first keyframe's command, applied from the start).
        return self.grippers[k] if t >= self.arrive[k] else self.grippers[k - 1]

    def phase(self, t: float) -> str:
        return "wait" if t > self.duration else self.phases[self.leg(t)]


def plan_waypoints(start: np.ndarray, waypoints: list[Waypoint], peak_speed: float = PEAK_SPEED,
                   peak_angular: float = PEAK_ANGULAR_SPEED) -> Plan:
    if not waypoints:
        raise ValueError("the task produced no waypoints")
    poses = np.vstack([np.asarray(start, float)] + [np.asarray(w.pose, float) for w in waypoints])
    rots = Rotation.from_quat(poses[:, 3:])
    times, us = [0.0], [0.0]
    arrive, depart = [0.0], [0.0]
    t = 0.0
    for k in range(1, len(poses)):
        dist = float(np.linalg.norm(poses[k, :3] - poses[k - 1, :3]))
        ang = float((rots[k] * rots[k - 1].inv()).magnitude())
        # Rest-to-rest cubic: peak speed = 1.5 x mean speed.
        t += max(MIN_LEG, 1.5 * dist / peak_speed, 1.5 * ang / peak_angular)
        times.append(t)
        us.append(float(k))
        arrive.append(t)
        dwell = float(waypoints[k - 1].dwell)
        if dwell > 0:
            t += dwell
            times.append(t)
            us.append(float(k))
        depart.append(t)
    progress = CubicHermiteSpline(np.array(times), np.array(us), np.zeros(len(times)))
    slerp = Slerp(np.arange(len(poses), dtype=float), rots)
    return Plan(np.array(times), np.array(us), poses, [float(waypoints[0].gripper)] + [float(w.gripper) for w in waypoints],
                ["move"] + [w.phase for w in waypoints], np.array(arrive), np.array(depart), progress, slerp)


class ScriptedExpert:
    """TargetSource: the task oracle's keyframes as a trajectory, planned from the arm's pose at the
    first call (``t`` there is the plan's zero)."""

    name = "scripted-expert"

    def __init__(self, lab, arm, rate_hz: float = 20.0):
        self.lab = lab
        self.arm = arm
        self.rate_hz = float(rate_hz)
        self.plan: Plan | None = None
        self._t0 = 0.0
        self._stall = 0.0
        self._gate = 0  # keyframes up to this index have been reached
        self._gate_wait = 0.0
        self._last_gripper: float | None = None
        self.waited = 0.0  # total seconds the plan clock was held at keyframes

    def reset(self) -> None:
        self.plan = None

    def start(self, start_pose: np.ndarray, t: float = 0.0) -> Plan:
        self.plan = plan_waypoints(start_pose, self.lab.oracle_waypoints())
        self._t0 = float(t)
        self._stall = self.waited = self._gate_wait = 0.0
        self._gate = 0
        self._last_gripper = None
        return self.plan

    def plan_time(self, t: float) -> float:
        return t - self._t0 - self._stall

    def _reached(self, k: int, state: ArmState) -> bool:
        p = self.plan
        tol = FINE_TOL if p.phases[k] in FINE_PHASES else REACH_TOL
        if np.linalg.norm(state.ee_pose[:3] - p.poses[k, :3]) > tol:
            return False
        g, prev = float(state.gripper), self._last_gripper
        if p.grippers[k] >= 0.5:
            return g > 0.85
        # Closed on an object (or empty): the fingers have stopped moving.
        return g < 0.9 and prev is not None and abs(prev - g) < 0.01

    def next_target(self, state: ArmState, frame: RGBDFrame | None, t: float) -> tuple[np.ndarray, float, dict]:
        if self.plan is None:
            self.start(state.ee_pose, t)
        p = self.plan
        tau = self.plan_time(t)
        last = len(p.poses) - 1
        held_at = None
        while self._gate < last and tau >= p.depart[self._gate + 1]:
            k = self._gate + 1
            held = tau - p.depart[k]
            if self._reached(k, state) or self._gate_wait + held > MAX_GATE_WAIT:
                self._gate, self._gate_wait = k, 0.0
                continue
            self._gate_wait += held
            self._stall += held
            self.waited += held
            tau = p.depart[k]
            held_at = k
            break
        self._last_gripper = float(state.gripper)
        if held_at is not None:
            return p.poses[held_at].copy(), p.grippers[held_at], {"expert_phase": p.phases[held_at]}
        return p.pose(tau), p.gripper(tau), {"expert_phase": p.phase(tau)}

    def done(self, t: float) -> bool:
        return self.plan is not None and self._gate >= len(self.plan.poses) - 1 and self.plan_time(t) > self.plan.duration

    def velocity(self, t: float, dt: float = 0.02) -> np.ndarray:
        """(6,) feed-forward twist of the plan at ``t`` (base frame)."""
        tau = self.plan_time(t)
        if self._gate < len(self.plan.poses) - 1 and tau >= self.plan.depart[self._gate + 1]:
            return np.zeros(6)  # held at a keyframe
        a, b = self.plan.pose(tau), self.plan.pose(tau + dt)
        w = (Rotation.from_quat(b[3:]) * Rotation.from_quat(a[3:]).inv()).as_rotvec() / dt
        return np.concatenate([(b[:3] - a[:3]) / dt, w])


@dataclass
class ScriptedTeleopState(TeleopState):
    """TeleopState plus what the scripted operator knows (the phase it is in)."""

    info: dict = field(default_factory=dict)


class ScriptedOperator:
    """TeleopDevice that follows the expert like a human operator: twists towards the expert's
    target (feed-forward along the plan + proportional correction), a gripper button held while
    the expert wants the gripper closed (``buttons["gripper"]`` True = closed, the control loop's
    toggle-state convention)."""

    name = "scripted"

    def __init__(self, lab, arm, rate_hz: float = 20.0, kp: float = 3.0, kr: float = 3.0):
        self.lab = lab
        self.arm = arm
        self.expert = ScriptedExpert(lab, arm, rate_hz)
        self.kp, self.kr = kp, kr
        self._open = False
        self._t0 = 0.0

    def open(self) -> None:
        self.expert.reset()
        self._t0 = time.monotonic()
        self._open = True

    def close(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open

    def read(self) -> TeleopState:
        now = time.monotonic()
        if not self._open:
            return ScriptedTeleopState(stamp=now, twist=np.zeros(6), connected=False)
        try:
            state = self.arm.state()
        except DeviceError:
            return ScriptedTeleopState(stamp=now, twist=np.zeros(6), connected=False)
        t = now - self._t0
        target, grip, info = self.expert.next_target(state, None, t)
        limits = self.arm.limits
        ff = self.expert.velocity(t)
        v = ff[:3] + self.kp * (target[:3] - state.ee_pose[:3])
        rot_err = (Rotation.from_quat(target[3:]) * Rotation.from_quat(state.ee_pose[3:]).inv()).as_rotvec()
        w = ff[3:] + self.kr * rot_err
        twist = np.concatenate([v / limits.max_linear_speed, w / limits.max_angular_speed])
        return ScriptedTeleopState(stamp=now, twist=np.clip(twist, -1.0, 1.0), buttons={"gripper": grip < 0.5},
                                   connected=True, info=info)


TickFn = Callable[[float, ArmState, np.ndarray, float, str], None]


def ensure_connected(arm) -> None:
    """Connect ``arm`` if needed, re-connecting a client whose connection died (franky allows it)."""
    try:
        arm.state()
        return
    except DeviceError:
        pass
    try:
        arm.disconnect()
    except Exception:
        pass
    arm.connect()


def run_episode(lab, arm, task: str, seed: int, rate_hz: float = 20.0, on_tick: TickFn | None = None,
                settle: float = SETTLE, max_time: float = 60.0) -> bool:
    """Reset ``task`` with ``seed``, drive the expert at ``rate_hz`` through the Arm protocol, return success.

    Real-time labs tick on ``time.monotonic()`` deadlines; a lock-step lab (xArm6, realtime=False) is
    advanced by exactly one period per tick, so the same episode runs as fast as the CPU allows.
    """
    ensure_connected(arm)
    lab.reset(task, seed)
    expert = ScriptedExpert(lab, arm, rate_hz)
    period = 1.0 / float(rate_hz)
    lockstep = not getattr(lab, "realtime", True)
    t0 = time.monotonic()
    k = 0
    last_grip = None
    refusals = 0
    while True:
        t = k * period
        try:
            state = arm.state()
            pose, grip, info = expert.next_target(state, None, t)
            try:
                arm.servo(pose)
            except DeviceDisconnected:
                raise
            except DeviceError:
                # A refused command (e.g. franky's planner rejecting one velocity step) is recovered
                # and the stream goes on, as the control loop does; persistent refusal ends the episode.
                refusals += 1
                if refusals > MAX_REFUSALS:
                    raise
                arm.recover()
            if last_grip is None or abs(grip - last_grip) > 1e-3:
                arm.gripper.command(grip)
                last_grip = grip
        except DeviceDisconnected:
            if not getattr(lab, "alive", False):
                raise
            # The client lost its connection but the simulator runs on (seen with franky on a heavily
            # loaded box): this episode failed; reconnect so the next one can run.
            log.warning("arm connection lost during %s seed %d; episode counted as failed", task, seed)
            ensure_connected(arm)
            return False
        if on_tick is not None:
            on_tick(t, state, pose, grip, info["expert_phase"])
        if expert.done(t - settle) or t > max_time:
            break
        k += 1
        if lockstep:
            lab.advance(period)
        else:
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return lab.success()
