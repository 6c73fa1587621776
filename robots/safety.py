"""Safety filter between every target source (teleop device, scripted expert, policy) and the arm.

The filter is pure (numpy + scipy Rotation, no state, no Qt) so it can be property-tested and shared
by the teleop loop and policy rollouts. Given the last target actually commanded and a requested
one, it returns the target that may be sent this tick plus the events explaining any change:

    rejected_nan       request not finite / zero quaternion -> hold the last target
    rejected_jump      request too far from the last target -> hold (bad input, never creep toward it)
    clamped_workspace  request outside the workspace box -> projected onto the box
    clamped_speed      translation step longer than max_linear_speed / rate -> shortened
    clamped_rotation   rotation step larger than max_angular_speed / rate -> slerped part way

The box bounds the TCP (fingertip). Arms report and take TCP poses (robots/base.py), so by default
the filtered pose IS the fingertip. A caller whose poses are of another frame (e.g. a flange stream)
passes ``tcp_offset``, the fingertip in that frame: the filter then runs on the fingertip pose
(pose ∘ offset) and hands back the commanded frame, so a flange above the table with its fingertips
below it is clamped, not passed.

Order matters: the jump test looks at the raw request (it detects bad input, not unsafe motion);
the workspace projection comes before the step clamp so that the step is taken toward a point inside
the box. Both endpoints then lie in the (convex) box, so every output stays inside it whenever the
last target did, and an arm that starts outside the box is walked back in at the speed limit.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from robots.base import ArmLimits, Workspace

MAX_RATE_HZ = 100.0  # DESIGN.md: control loops are configurable from 20 Hz up to 100 Hz
_MIN_QUAT_NORM = 1e-6

# Per-robot limits. Robot base at the origin, table surface at z = 0 (robots/sim world and the lab
# benches). The boxes cover the reachable table area in front of each arm; the floor sits 5 mm above
# the table so a 4 cm cube can be grasped at its centre without the fingers being driven into the table.
_DEFAULT_LIMITS = {
    "franka": ArmLimits(
        workspace=Workspace(lo=(0.20, -0.45, 0.005), hi=(0.80, 0.45, 0.70)),
        max_linear_speed=0.25, max_angular_speed=1.0, max_jump=0.10, max_jump_angle=0.8),
    "xarm6": ArmLimits(
        workspace=Workspace(lo=(0.15, -0.45, 0.005), hi=(0.65, 0.45, 0.60)),
        max_linear_speed=0.20, max_angular_speed=1.0, max_jump=0.10, max_jump_angle=0.8),
}


def default_limits(robot: str) -> ArmLimits:
    """Limits for ``"franka"`` or ``"xarm6"`` (an Arm's ``name``; ``sim-`` prefixes are accepted)."""
    key = robot.removeprefix("sim-").partition(":")[0]
    try:
        return _DEFAULT_LIMITS[key]
    except KeyError:
        raise ValueError(f"no default limits for robot {robot!r}; "
                         f"expected one of: {', '.join(_DEFAULT_LIMITS)}") from None


def validate_rate(rate_hz: float) -> float:
    rate = float(rate_hz)
    if not math.isfinite(rate) or rate <= 0 or rate > MAX_RATE_HZ:
        raise ValueError(f"control rate must be in (0, {MAX_RATE_HZ:g}] Hz, got {rate_hz!r}")
    return rate


def normalize_pose(pose: np.ndarray) -> np.ndarray:
    """(7,) pose with a unit quaternion; raises ValueError if it is not finite or degenerate."""
    p = np.asarray(pose, dtype=float).reshape(-1)
    if p.shape != (7,):
        raise ValueError(f"pose must have 7 values (xyz + quat xyzw), got {p.shape[0]}")
    if not np.all(np.isfinite(p)):
        raise ValueError("pose has NaN/inf values")
    n = float(np.linalg.norm(p[3:]))
    if n < _MIN_QUAT_NORM:
        raise ValueError("pose quaternion has zero length")
    out = p.copy()
    out[3:] /= n
    return out


def check_target(target, workspace: Workspace, who: str) -> np.ndarray:
    """Drivers' last line of defence: a finite (7,) pose inside ``workspace`` (quaternion normalised),
    else ValueError naming the robot (``who``). The safety filter upstream should never send one."""
    pose = np.asarray(target, dtype=float).reshape(-1)
    if pose.shape != (7,):
        raise ValueError(f"{who} target must be a (7,) pose xyz + quat xyzw, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise ValueError(f"{who} target contains NaN/inf: {np.round(pose, 4).tolist()}")
    qn = float(np.linalg.norm(pose[3:]))
    if not 0.5 < qn < 1.5:
        raise ValueError(f"{who} target quaternion is not a rotation (norm {qn:.3f})")
    if not workspace.contains(pose[:3]):
        raise ValueError(f"{who} target {np.round(pose[:3], 3).tolist()} is outside the workspace "
                         f"{list(workspace.lo)}..{list(workspace.hi)}")
    pose[3:] /= qn
    return pose


def rotation_angle(q_a: np.ndarray, q_b: np.ndarray) -> float:
    """Geodesic angle (rad) between two unit quaternions xyzw, sign-agnostic."""
    d = abs(float(np.dot(q_a, q_b)))
    return 2.0 * math.acos(min(1.0, d))


class SafetyFilter:
    """Per-tick target filter enforcing ``limits`` at ``rate_hz`` (see the module docstring)."""

    def __init__(self, limits: ArmLimits, rate_hz: float, tcp_offset=None):
        self.limits = limits
        off = np.zeros(3) if tcp_offset is None else np.asarray(tcp_offset, dtype=float).reshape(3)
        if not np.all(np.isfinite(off)):
            raise ValueError(f"tcp_offset must be 3 finite numbers, got {tcp_offset!r}")
        self.tcp_offset = off if np.any(off != 0.0) else None
        self.rate_hz = validate_rate(rate_hz)
        self.lo = np.asarray(limits.workspace.lo, dtype=float)
        self.hi = np.asarray(limits.workspace.hi, dtype=float)
        if np.any(self.lo > self.hi):
            raise ValueError(f"workspace lo {limits.workspace.lo} exceeds hi {limits.workspace.hi}")
        self.max_step = limits.max_linear_speed / self.rate_hz  # m per tick
        self.max_rot_step = limits.max_angular_speed / self.rate_hz  # rad per tick

    def filter(self, current_target: np.ndarray, requested: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Safe (7,) target for this tick and the list of events (empty when passed unchanged)."""
        cur = normalize_pose(current_target)
        try:
            req = normalize_pose(requested)
        except ValueError:
            return cur, ["rejected_nan"]
        if self.tcp_offset is None:
            return self._filter(cur, req)
        out, events = self._filter(self._tip(cur), self._tip(req))
        if events == ["rejected_jump"]:
            return cur, events  # held exactly, not re-derived through the offset (no round-off creep)
        return self._from_tip(out), events

    def _tip(self, pose: np.ndarray) -> np.ndarray:
        out = pose.copy()
        out[:3] = pose[:3] + Rotation.from_quat(pose[3:]).apply(self.tcp_offset)
        return out

    def _from_tip(self, tip: np.ndarray) -> np.ndarray:
        out = tip.copy()
        out[:3] = tip[:3] - Rotation.from_quat(tip[3:]).apply(self.tcp_offset)
        return out

    def tip_position(self, pose: np.ndarray) -> np.ndarray:
        """Fingertip xyz of a pose as this filter sees it (the pose itself without a tcp_offset)."""
        p = normalize_pose(pose)
        return p[:3] if self.tcp_offset is None else self._tip(p)[:3]

    def _filter(self, cur: np.ndarray, req: np.ndarray) -> tuple[np.ndarray, list[str]]:        # Keep the quaternion in the same hemisphere as the last one so recorded actions never flip
        # sign (q and -q are the same rotation, but a learnt policy sees a discontinuity).
        if float(np.dot(req[3:], cur[3:])) < 0.0:
            req[3:] = -req[3:]

        if (np.linalg.norm(req[:3] - cur[:3]) > self.limits.max_jump
                or rotation_angle(cur[3:], req[3:]) > self.limits.max_jump_angle):
            return cur, ["rejected_jump"]

        events: list[str] = []
        xyz = np.clip(req[:3], self.lo, self.hi)
        if not np.array_equal(xyz, req[:3]):
            events.append("clamped_workspace")
        step = xyz - cur[:3]
        dist = float(np.linalg.norm(step))
        if dist > self.max_step:
            xyz = cur[:3] + step * (self.max_step / dist)
            events.append("clamped_speed")
            # Axes where the last target was inside the box stay inside mathematically; this clip only
            # removes rounding so drivers that re-check the box exactly never refuse the target.
            inside = (cur[:3] >= self.lo) & (cur[:3] <= self.hi)
            xyz = np.where(inside, np.clip(xyz, self.lo, self.hi), xyz)

        quat = req[3:]
        angle = rotation_angle(cur[3:], quat)
        if angle > self.max_rot_step:
            r_cur = Rotation.from_quat(cur[3:])
            delta = (Rotation.from_quat(quat) * r_cur.inv()).as_rotvec()
            quat = (Rotation.from_rotvec(delta * (self.max_rot_step / angle)) * r_cur).as_quat()
            if float(np.dot(quat, cur[3:])) < 0.0:
                quat = -quat
            events.append("clamped_rotation")
        quat = quat / np.linalg.norm(quat)
        return np.concatenate([xyz, quat]), events
