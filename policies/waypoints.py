"""Sparse waypoints → smooth pose trajectory → guidance poses for the action expert.

Waypoints come from a demo's keyframes, the simulated task's oracle, clicks in the 3D view, or (later)
a learned keypoint predictor; every source yields the same ``Waypoint`` list behind ``WaypointSource``.
Position is a shape-preserving piecewise-cubic spline (scipy ``PchipInterpolator``, C1; a cubic
B-spline in Hermite form) over a time parametrisation, orientation piecewise slerp between the
waypoint rotations, gripper a step held from each waypoint (it is a discrete command, interpolating
it would invent half-open grasps). Why not the C2 interpolating B-spline (``make_interp_spline``,
tried first): through a pre-grasp → grasp → dwell → lift sequence it overshot by 5 mm sideways past
the pre-grasp and dipped 5 mm *below* the grasp during the dwell (a C2 curve cannot stop at a
knot), which drove the "waypoints + IK" baseline into the cube and taught the expert a wobbling
guidance. PCHIP never leaves the range of neighbouring knots, so a dwell (two knots at one pose) holds
still and a descent ends at the grasp height.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from scipy.interpolate import CubicHermiteSpline, PchipInterpolator
from scipy.spatial.transform import Rotation, Slerp

from policies.geometry import canonical_quat, transform_pose


@dataclass
class Waypoint:
    pose: np.ndarray  # (7,) xyz + quat xyzw
    gripper: float = 1.0  # 0 closed … 1 open, commanded from this waypoint on
    t: float | None = None  # seconds; None → derived from distance and speed
    frame: str = "base"  # "base" | "camera"
    dwell: float = 0.0  # seconds to hold this pose before moving on
    label: str = ""  # e.g. the task phase ("grasp", "lift")

    def __post_init__(self) -> None:
        self.pose = np.asarray(self.pose, dtype=np.float64).reshape(-1)
        if self.pose.shape != (7,) or not np.all(np.isfinite(self.pose)):
            raise ValueError(f"waypoint pose must be 7 finite numbers (xyz + quat xyzw), got {self.pose}")
        if self.frame not in ("base", "camera"):
            raise ValueError(f"waypoint frame must be 'base' or 'camera', got {self.frame!r}")


class WaypointTrajectory:
    """A time-parametrised pose trajectory through sparse waypoints, in the base frame.

    Times: given ``Waypoint.t`` are used as they are (a demo's keyframe times); otherwise each segment
    lasts max(distance / speed, angle / angular_speed, min_segment) plus the previous waypoint's dwell.
    """

    def __init__(self, waypoints: Sequence[Waypoint], T_base_camera: np.ndarray | None = None,
                 speed: float = 0.1, angular_speed: float = 0.8, min_segment: float = 0.2,
                 t0: float = 0.0):
        if not waypoints:
            raise ValueError("a trajectory needs at least one waypoint")
        if speed <= 0 or angular_speed <= 0:
            raise ValueError("speed and angular_speed must be positive")
        poses = []
        for i, w in enumerate(waypoints):
            if w.frame == "camera":
                if T_base_camera is None:
                    raise ValueError(f"waypoint {i} is in the camera frame but no T_base_camera was given")
                poses.append(transform_pose(T_base_camera, w.pose))
            else:
                poses.append(w.pose.copy())
        poses = np.asarray(poses)
        poses[:, 3:] /= np.linalg.norm(poses[:, 3:], axis=1, keepdims=True)
        grip = [float(w.gripper) for w in waypoints]
        times = self._times(waypoints, poses, speed, angular_speed, min_segment, t0)
        # A dwell becomes a second knot at the same pose, so the spline holds still there.
        knots_t, knots_p, knots_g = [], [], []
        for w, p, g, t in zip(waypoints, poses, grip, times):
            knots_t.append(t)
            knots_p.append(p)
            knots_g.append(g)
            if w.dwell > 0:
                knots_t.append(t + w.dwell)
                knots_p.append(p)
                knots_g.append(g)
        self.times = np.asarray(knots_t)
        self.poses = np.asarray(knots_p)
        self.grippers = np.asarray(knots_g)
        self.waypoints = list(waypoints)
        self.t_start, self.t_end = float(self.times[0]), float(self.times[-1])
        n = len(self.times)
        if n == 1:
            self._pos = None
            self._rot = None
        else:
            # PCHIP's knot slopes, but zero at both ends: the arm starts and stops at rest.
            slopes = PchipInterpolator(self.times, self.poses[:, :3], axis=0).derivative()(self.times)
            slopes[0] = slopes[-1] = 0.0
            self._pos = CubicHermiteSpline(self.times, self.poses[:, :3], slopes, axis=0)
            self._rot = Slerp(self.times, Rotation.from_quat(self.poses[:, 3:]))
        self.reset_progress()
        self._dense_t = np.linspace(self.t_start, self.t_end, max(2, int((self.t_end - self.t_start) * 100) + 1))
        self._dense_xyz = self.sample(self._dense_t)[:, :3]
        # Path length travelled up to each dense sample: a dwell adds none (see progress_from_state).
        self._dense_arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(self._dense_xyz, axis=0), axis=1))]

    @staticmethod
    def _times(waypoints, poses, speed, angular_speed, min_segment, t0) -> np.ndarray:
        given = [w.t for w in waypoints]
        if all(t is not None for t in given):
            t = np.asarray(given, dtype=np.float64)
            # Dwell knots sit between given times, so they must fit before the next waypoint.
            ends = t + np.array([w.dwell for w in waypoints])
            if np.any(np.diff(t) <= 0) or np.any(ends[:-1] >= t[1:]):
                raise ValueError(f"waypoint times must increase (with room for dwells), got {t.tolist()}")
            return t
        if any(t is not None for t in given):
            raise ValueError("give times for all waypoints or for none")
        t = [t0]
        for i in range(1, len(waypoints)):
            d = np.linalg.norm(poses[i, :3] - poses[i - 1, :3])
            ang = (Rotation.from_quat(poses[i, 3:]) * Rotation.from_quat(poses[i - 1, 3:]).inv()).magnitude()
            seg = max(d / speed, ang / angular_speed, min_segment)
            t.append(t[-1] + waypoints[i - 1].dwell + seg)
        return np.asarray(t)

    @property
    def duration(self) -> float:
        return self.t_end - self.t_start

    def sample(self, t) -> np.ndarray:
        """Poses (…, 7) at times ``t`` (clamped to the trajectory's span)."""
        t = np.clip(np.asarray(t, dtype=np.float64), self.t_start, self.t_end)
        flat = t.reshape(-1)
        if self._pos is None:
            out = np.repeat(self.poses[:1], len(flat), axis=0)
        else:
            out = np.concatenate([self._pos(flat), canonical_quat(self._rot(flat).as_quat())], axis=1)
        return out.reshape(t.shape + (7,))

    def gripper(self, t) -> np.ndarray:
        """Commanded gripper opening at ``t``: the value of the latest waypoint reached."""
        t = np.asarray(t, dtype=np.float64)
        i = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.times) - 1)
        return self.grippers[i]

    def guidance(self, t_now: float, horizon_s: float = 0.8, n: int = 4,
                 with_gripper: bool = False) -> np.ndarray:
        """``n`` poses evenly spaced over (t_now, t_now + horizon_s]: (n, 7), or (n, 8) with the
        gripper command appended (what the action expert is conditioned on)."""
        ts = t_now + horizon_s * np.arange(1, n + 1) / n
        poses = self.sample(ts)
        if not with_gripper:
            return poses
        return np.concatenate([poses, self.gripper(ts)[:, None]], axis=1)

    def progress_from_state(self, ee_pose: np.ndarray, back_s: float = 0.5, ahead_s: float = 2.0,
                            tie_m: float = 0.005) -> float:
        """Trajectory time of the point closest to the robot's position, searched in a window around
        the last estimate so paths that cross themselves (down to grasp, back up) never jump back.
        Guidance then follows the robot's real progress rather than the wall clock."""
        # The first estimate after a reset searches everywhere (a trial may start mid-way).
        fresh = self._fresh
        lo, hi = (-np.inf, np.inf) if fresh else (self._progress - back_s, self._progress + ahead_s)
        self._fresh = False
        m = (self._dense_t >= lo) & (self._dense_t <= hi)
        idx = np.flatnonzero(m)
        d = np.linalg.norm(self._dense_xyz[idx] - np.asarray(ee_pose, dtype=np.float64)[:3], axis=1)
        # Down to a grasp and back up is one vertical line: the way down and the way up are both
        # nearest points (local minima of the distance within ``tie_m`` of the best). Take the one
        # nearest in time to the last estimate, so progress neither skips the grasp on the way down
        # nor jumps back on the way up; a real shortcut ahead is closer by more than ``tie_m``.
        # Going back costs three times going on (real progress is monotone): at the turning point
        # both branches are equally near and the forward one wins one tick later. "Nearest" is
        # measured in path length, not time: a grasp's dwell (0.8 s and more at one pose) made the
        # way up look further than the way down, so an arm that lifted while the clock was still in
        # the dwell was placed back on the way down, and the guidance held at the grasp for good
        # (multi-task expert, sim-xarm6 place_in_bin: the cube lifted, then crept at 4 mm/s).
        dp, dn = np.r_[np.inf, d[:-1]], np.r_[d[1:], np.inf]
        cand = np.flatnonzero((d <= dp) & (d <= dn) & (d <= d.min() + tie_m))
        prev = self._dense_t[idx[0]] if fresh else self._progress
        prev_arc = np.interp(prev, self._dense_t, self._dense_arc)
        da = self._dense_arc[idx[cand]] - prev_arc
        dt = self._dense_t[idx[cand]] - prev
        cost = np.where(da >= 0, da, -3.0 * da) + 1e-4 * np.abs(dt)  # equal path length: the nearer in time
        best = cand[int(np.argmin(cost))]
        self._progress = float(self._dense_t[idx[best]])
        return self._progress

    def reset_progress(self, t: float | None = None) -> None:
        """Forget the progress estimate; with ``t`` the next search starts near that time instead."""
        self._progress = self.t_start if t is None else float(t)
        self._fresh = t is None


def trajectory_curve(trajectory: WaypointTrajectory, samples: int = 200) -> np.ndarray:
    """(samples, 3) positions of ``trajectory`` at ``samples`` times evenly spread over its span: the
    curve a view draws for it. Sampled through ``WaypointTrajectory.sample``, the same call that makes
    the policy's guidance poses, so the drawn polyline is the guidance curve, not a look-alike."""
    return trajectory.sample(np.linspace(trajectory.t_start, trajectory.t_end, max(2, int(samples))))[:, :3]


def position_curve(points: np.ndarray, samples: int = 200) -> np.ndarray:
    """The policy's curve through bare positions (K, 3): tool-down waypoints, timed from distance as the
    policy times waypoints without given times; (0, 3) for fewer than two distinct points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 2 or not np.any(np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-9):
        return np.zeros((0, 3))
    down = np.array([1.0, 0.0, 0.0, 0.0])
    return trajectory_curve(WaypointTrajectory([Waypoint(np.r_[p, down]) for p in pts]), samples)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@runtime_checkable
class WaypointSource(Protocol):
    name: str

    def waypoints(self, context: Any = None) -> list[Waypoint]:
        """Waypoints for the current episode/trial; ``context`` is source-specific (e.g. a frame)."""


def _keyframe_indices(keyframes: Any) -> list[int]:
    """Frame indices from a reader's ``keyframes`` (array of ints, structured array with an
    index/frame field, or a sequence of dicts/tuples/objects)."""
    if keyframes is None:
        return []
    arr = np.asarray(keyframes) if not isinstance(keyframes, (list, tuple)) else None
    if arr is not None and arr.dtype.names:
        field = next((f for f in ("frame", "index", "frame_index") if f in arr.dtype.names), arr.dtype.names[0])
        return [int(i) for i in arr[field]]
    if arr is not None and arr.dtype.kind in "iu":
        return [int(i) for i in arr.reshape(-1)]
    out = []
    for k in keyframes:
        if isinstance(k, dict):
            out.append(int(k.get("frame", k.get("index"))))
        elif isinstance(k, (tuple, list, np.ndarray)):
            out.append(int(k[0]))
        elif hasattr(k, "frame"):
            out.append(int(k.frame))
        elif hasattr(k, "index"):
            out.append(int(k.index))
        else:
            out.append(int(k))
    return out


def gripper_transition_frames(gripper: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Frames where the commanded gripper crosses ``threshold`` — the paper's keyframe rule."""
    g = np.asarray(gripper) > threshold
    return [int(i) for i in np.flatnonzero(g[1:] != g[:-1]) + 1]


def gripper_change_waypoints(waypoints: Sequence[Waypoint], start_gripper: float = 1.0,
                             threshold: float = 0.5) -> list[Waypoint]:
    """The sparse interface of the paper (§3.1): only the waypoints where the gripper command changes
    (grasp, release) and the last one — what a planner that names contact points gives, without the
    approach waypoints a scripted plan adds (pre-grasp above the cube, lower)."""
    out, prev = [], start_gripper > threshold
    for w in waypoints:
        now = w.gripper > threshold
        if now != prev:
            out.append(w)
        prev = now
    if waypoints and (not out or out[-1] is not waypoints[-1]):
        out.append(waypoints[-1])
    return out


def plan_knot_frames(phase: Sequence[Any], action: np.ndarray, still: float = 2e-4) -> list[int]:
    """Frames where a scripted demo reached or left one of its plan's waypoints: each change of the
    recorded expert phase and both ends of every run where the commanded position stood still (a
    dwell). These are the task oracle's waypoints as the demo executed them, so guidance built from
    them during training matches the oracle guidance the rollouts use (the static-keyframe detector
    misses the short pause over a pre-grasp, and guidance that cut diagonally to the grasp taught
    the expert a path the oracle never shows)."""
    ph = [p.decode() if isinstance(p, bytes) else str(p) for p in phase]
    frames = {i for i in range(1, len(ph)) if ph[i] != ph[i - 1]}
    a = np.asarray(action, dtype=np.float64)[:, :3]
    moving = np.r_[True, np.linalg.norm(np.diff(a, axis=0), axis=1) >= still]
    # ``moving[i]`` compares frame i with i-1, so at a run change at i the frame i-1 is a dwell's
    # first frame (moving → still) or its last (still → moving).
    edges = np.flatnonzero(moving[1:] != moving[:-1]) + 1
    frames.update(int(i) - 1 for i in edges)
    return sorted(f for f in frames if 0 <= f < len(ph))


class DemoKeyframeSource:
    """Waypoints at a recorded demo's keyframes (plus its first and last frame), timed as recorded.

    ``episode`` is anything shaped like recorder.episode.EpisodeReader: ``time``, ``ee_pose``,
    ``gripper`` (or ``action``) and ``keyframes``. Without recorded keyframes the gripper
    transitions are used. A scripted demo (``extras["expert_phase"]``) adds its plan's waypoints
    (``plan_knot_frames``). Poses are the commanded ones (``action``) where recorded: the arm's
    measured pose lags them, and guidance is a target, not a measurement.
    """

    name = "demo"

    def __init__(self, episode: Any, frames: Sequence[int] | None = None):
        self.episode = episode
        self.frames = list(frames) if frames is not None else None

    def keyframe_frames(self) -> list[int]:
        ep = self.episode
        n = len(ep.time)
        frames = self.frames if self.frames is not None else _keyframe_indices(getattr(ep, "keyframes", None))
        if not frames:
            frames = gripper_transition_frames(np.asarray(ep.action)[:, 7] if getattr(ep, "action", None) is not None
                                               else ep.gripper)
        phase = (getattr(ep, "extras", None) or {}).get("expert_phase") if self.frames is None else None
        if phase is not None and getattr(ep, "action", None) is not None and len(phase) == n:
            frames = list(frames) + plan_knot_frames(phase, np.asarray(ep.action))
            frames += gripper_transition_frames(np.asarray(ep.action)[:, 7])
        return sorted({0, n - 1, *[f for f in frames if 0 <= f < n]})

    def waypoints(self, context: Any = None) -> list[Waypoint]:
        ep = self.episode
        time = np.asarray(ep.time, dtype=np.float64)
        action = getattr(ep, "action", None)
        pose = np.asarray(action if action is not None else ep.ee_pose, dtype=np.float64)[:, :7]
        grip = np.asarray(action)[:, 7] if action is not None else np.asarray(ep.gripper)
        return [Waypoint(pose[f], float(grip[f]), t=float(time[f])) for f in self.keyframe_frames()]


class OracleSource:
    """The simulated task's keyframe waypoints for the current reset (robots.sim ``SimLab``)."""

    name = "oracle"

    def __init__(self, lab: Any):
        self.lab = lab

    def waypoints(self, context: Any = None) -> list[Waypoint]:
        return [Waypoint(w.pose, float(w.gripper), dwell=float(getattr(w, "dwell", 0.0)),
                         label=str(getattr(w, "phase", ""))) for w in self.lab.oracle_waypoints()]


class ManualSource:
    """Waypoints picked by hand (clicks in the 3D view): poses or ready ``Waypoint`` objects."""

    name = "manual"

    def __init__(self, points: Sequence[Waypoint | np.ndarray], frame: str = "base", gripper: float = 1.0):
        self._wps = [p if isinstance(p, Waypoint) else Waypoint(np.asarray(p), gripper, frame=frame)
                     for p in points]

    def waypoints(self, context: Any = None) -> list[Waypoint]:
        return list(self._wps)
