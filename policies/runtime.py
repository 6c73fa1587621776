"""Policies as control-loop target sources (app.teleop.TargetSource) for rollouts.

``PolicyRuntime`` runs an ``ExpertPolicy``-like object (``act(state, cloud, guidance) -> ActionChunk``,
``config``, ``reset()``) at the control rate:

- the cloud comes from the latest camera frame (policies.geometry.cloud_from_depth, the training crop);
- guidance comes from a waypoint trajectory sampled on a *gated* clock: the clock only advances while
  the arm is within ``lag_tol`` of the trajectory, so a slow policy never sees guidance that ran away
  from it (the scripted expert that made the demos gates its plan the same way);
- chunks are executed by time: action i of a chunk is due i ticks after the observation it was
  computed from, so inference latency is skipped over rather than replayed late. The next chunk is
  requested ``replan_margin`` ticks before the executed part runs out and computed on a worker
  thread, so the control thread never waits on the network (the loop's watchdog would hold the arm);
- an invalid chunk (non-finite output or input) or one leaving the workspace stops the runtime with
  the reason ("nan", "bad_input", "out_of_workspace"); from then on it returns the pose the arm had
  when the stop was seen, so the arm holds still, and the rollout runner ends the trial.

``SplineSource`` executes the same gated trajectory directly (the "waypoints + IK" baseline: the arm
driver does the IK). Both need no Qt and no device beyond the protocols of robots/base.py.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from policies.datasets import DEFAULT_WORKSPACE
from policies.geometry import cloud_from_depth
from policies.waypoints import Waypoint, WaypointTrajectory

GRIPPER_THRESHOLD = 0.5  # chunk gripper values are continuous; the gripper is commanded open/closed
WORKSPACE_TOL = 0.01  # m a predicted pose may lie outside the arm's box before it counts as leaving it


def timed_trajectory(start_pose: np.ndarray, waypoints: Sequence[Any], start_gripper: float = 1.0,
                     position_noise: float = 0.0, rng: np.random.Generator | None = None) -> WaypointTrajectory:
    """A WaypointTrajectory from the arm's pose through task waypoints (``pose``, ``gripper``,
    ``dwell``, optional ``phase``), timed like the scripted expert's plan that recorded the demos
    (robots.sim.expert.plan_waypoints), so guidance runs at the pace the expert was trained on.
    ``position_noise`` (m, Gaussian per axis) perturbs every waypoint after the start: imprecise
    waypoints such as a VLM or a click would give."""
    from robots.sim.expert import plan_waypoints

    wps = list(waypoints)
    if not wps:
        raise ValueError("no waypoints for the trajectory")
    rng = rng or np.random.default_rng(0)
    noisy = []
    for w in wps:
        p = np.asarray(w.pose, dtype=np.float64).copy()
        if position_noise > 0:
            p[:3] += rng.normal(0.0, position_noise, 3)
        noisy.append(_Wp(p, float(w.gripper), float(getattr(w, "dwell", 0.0)), str(getattr(w, "phase", ""))))
    plan = plan_waypoints(np.asarray(start_pose, dtype=np.float64), noisy)
    out = [Waypoint(np.asarray(start_pose, dtype=np.float64), float(start_gripper), t=0.0, label="start")]
    for k, w in enumerate(noisy, start=1):
        out.append(Waypoint(w.pose, w.gripper, t=float(plan.arrive[k]), dwell=w.dwell, label=w.phase))
    return WaypointTrajectory(out)


@dataclass
class _Wp:
    pose: np.ndarray
    gripper: float
    dwell: float
    phase: str


class GatedClock:
    """Trajectory time that advances with the loop clock only while the arm keeps up with it.

    The arm's own progress is its nearest point on the path (WaypointTrajectory.progress_from_state,
    searched near the last estimate). The clock runs while the arm is within ``clock_tol`` of the clock's
    pose, or its progress is within ``slack_s`` of the clock and it is within ``lag_tol`` of the path;
    it never falls behind the arm. A policy that cuts a
    corner therefore still moves the guidance on, while a stuck arm stops it ``slack_s`` ahead, which
    (with guidance sampled up to 0.8 s ahead) is still enough to show what comes after a dwell.

    An arm that has come to rest within ``lag_tol`` of the clock's pose (speed below ``still_speed``)
    also lets the clock run: it has arrived as close as the policy will take it. With imprecise
    waypoints the expert grasps the real object centimetres from the waypoint; without this rule the
    clock stopped there for good, the guidance kept showing "hold the grasp", and the arm held the
    cube without lifting it (5 of 8 failures at 2 cm waypoint noise, runs/s4/eval2).
    """

    def __init__(self, trajectory: WaypointTrajectory, lag_tol: float = 0.06, slack_s: float = 0.2,
                 clock_tol: float = 0.015, still_speed: float = 0.01):
        self.trajectory = trajectory
        self.lag_tol = float(lag_tol)
        self.slack_s = float(slack_s)
        # Tight: guidance that runs on while the arm is still centimetres above a grasp shows the
        # gripper closing early, and the expert closes on air (seen at 6 cm). The arm is moving
        # then, so the rest rule does not apply.
        self.clock_tol = float(clock_tol)
        self.still_speed = float(still_speed)
        self.reset()

    def reset(self) -> None:
        self.t = self.trajectory.t_start
        self._last: float | None = None
        self._last_xyz: np.ndarray | None = None
        self._speed = np.inf  # m/s, smoothed; unknown until two updates
        self.trajectory.reset_progress()

    def update(self, ee_pose: np.ndarray, t_loop: float) -> float:
        dt = 0.0 if self._last is None else max(0.0, t_loop - self._last)
        self._last = t_loop
        tr = self.trajectory
        s = tr.progress_from_state(ee_pose)
        xyz = np.asarray(ee_pose, dtype=np.float64)[:3]
        if self._last_xyz is not None and dt > 0:
            v = float(np.linalg.norm(xyz - self._last_xyz)) / dt
            self._speed = v if not np.isfinite(self._speed) else 0.7 * self._speed + 0.3 * v
        self._last_xyz = xyz.copy()
        off_clock = float(np.linalg.norm(tr.sample(self.t)[:3] - xyz))
        off_path = float(np.linalg.norm(tr.sample(s)[:3] - xyz))
        # Near the clock's pose (a dwell, where the path's nearest point stays at the dwell's start),
        # at rest not far from it, or not too far behind along the path: keep going.
        at_rest = off_clock <= self.lag_tol and self._speed < self.still_speed
        if off_clock <= self.clock_tol or at_rest or (s >= self.t - self.slack_s and off_path <= self.lag_tol):
            self.t += dt
        self.t = min(max(self.t, s), tr.t_end)
        return self.t

    @property
    def finished(self) -> bool:
        return self.t >= self.trajectory.t_end


class SplineSource:
    """TargetSource: the waypoint trajectory itself, sampled on the gated clock ("waypoints + IK")."""

    name = "spline-ik"

    def __init__(self, trajectory: WaypointTrajectory, lag_tol: float = 0.06):
        self.clock = GatedClock(trajectory, lag_tol)
        self.stopped = ""
        self.latest_chunk = None
        self.latencies: list[float] = []

    def reset(self) -> None:
        self.clock.reset()

    def next_target(self, state, frame, t: float):
        tau = self.clock.update(state.ee_pose, t)
        tr = self.clock.trajectory
        return tr.sample(tau), float(tr.gripper(tau)), {"guide_t": tau}

    def done(self, t: float) -> bool:
        return self.clock.finished

    def close(self) -> None:
        pass


@dataclass
class PlannedChunk:
    poses: np.ndarray  # (H, 7)
    gripper: np.ndarray  # (H,)
    t_obs: float  # loop time of the observation it was computed from
    n_execute: int
    latency_s: float
    guidance: np.ndarray  # (n_guide, 8) it was conditioned on
    cloud: np.ndarray | None = None  # (N, 3) the point cloud it saw, base frame (None: no camera)
    keypoint: np.ndarray | None = None  # (3,) where the keypoint head put the next grasp/release


class PolicyRuntime:
    """TargetSource running a chunked policy at the control rate (see the module docstring).

    ``trajectory`` None means no guidance: the guidance slots get the current pose repeated, which is
    what the "no guidance" ablation is trained with (see bench/rollout_ablation.py).
    """

    name = "expert"

    def __init__(self, policy, trajectory: WaypointTrajectory | None, rate_hz: float = 20.0, *,
                 workspace=None, crop=DEFAULT_WORKSPACE, use_cloud: bool = True, replan_margin: int = 2,
                 lag_tol: float = 0.06, threaded: bool = True,
                 on_chunk: Callable[[PlannedChunk], None] | None = None):
        self.policy = policy
        self.config = policy.config
        self.rate_hz = float(rate_hz)
        self.clock = GatedClock(trajectory, lag_tol) if trajectory is not None else None
        self.workspace = workspace  # robots.base.Workspace (the arm's limits); None = unchecked
        self.crop = crop
        self.use_cloud = use_cloud
        self.replan_margin = int(replan_margin)
        self.threaded = threaded
        self.on_chunk = on_chunk
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._request: tuple | None = None
        self._result: tuple | None = None
        self._busy = False
        self._closed = False
        self._worker: threading.Thread | None = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        with self._lock:
            self._request = self._result = None
        self.chunk: PlannedChunk | None = None
        self.latest_chunk: PlannedChunk | None = None
        self.stopped = ""  # reason once stopped
        self.stop_detail = ""
        self._hold: np.ndarray | None = None
        self._hold_gripper = 1.0
        self.latencies: list[float] = []
        self.chunks = 0
        if self.clock is not None:
            self.clock.reset()
        if hasattr(self.policy, "reset"):
            self.policy.reset()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    def done(self, t: float) -> bool:
        return False  # a policy never declares itself finished; the runner judges the task

    # ------------------------------------------------------------------ inputs
    def guidance(self, state, t: float) -> np.ndarray:
        cfg = self.config
        if self.clock is None:
            pose = np.asarray(state.ee_pose, dtype=np.float64)
            return np.tile(np.concatenate([pose, [float(state.gripper)]]), (cfg.n_guide, 1))
        tau = self.clock.update(state.ee_pose, t)
        return self.clock.trajectory.guidance(tau, cfg.guide_horizon_s, cfg.n_guide, with_gripper=True)

    def cloud(self, frame) -> np.ndarray | None:
        if not self.use_cloud or frame is None:
            return None
        return cloud_from_depth(frame.depth, frame.depth_scale, frame.K, frame.T_base_camera, self.crop[0],
                                self.crop[1], self.config.n_points, seed=int(frame.index))

    # ------------------------------------------------------------------ inference
    def _infer(self, state, frame, guide: np.ndarray, t_obs: float) -> tuple:
        t0 = time.perf_counter()
        try:
            cloud = self.cloud(frame)
            chunk = self.policy.act(state, cloud, guide)
        except Exception as exc:  # a broken frame or model must stop the trial, never the loop
            return ("error", f"{type(exc).__name__}: {exc}".splitlines()[0], None, t_obs, time.perf_counter() - t0,
                    guide, None)
        return ("ok", "", chunk, t_obs, time.perf_counter() - t0, guide, cloud)

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._request is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                req, self._request = self._request, None
            res = self._infer(*req)
            with self._lock:
                self._result = res
                self._busy = False

    def _submit(self, state, frame, t: float) -> None:
        guide = self.guidance(state, t)
        if not self.threaded:
            self._accept(self._infer(state, frame, guide, t), state)
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="policy-inference", daemon=True)
            self._worker.start()
        with self._lock:
            self._busy = True
            self._request = (state, frame, guide, t)
            self._wake.notify()

    def _accept(self, res: tuple, state) -> None:
        status, detail, chunk, t_obs, wall, guide, cloud = res
        if status == "error":
            self._stop("policy_error", detail, state)
            return
        self.latencies.append(float(chunk.latency_s))
        self.chunks += 1
        if not chunk.valid:
            reason = "nan" if chunk.reason == "nan" else chunk.reason.split(":")[0] or "invalid"
            self._stop(reason, chunk.reason, state)
            return
        planned = PlannedChunk(np.asarray(chunk.poses, dtype=np.float64), np.asarray(chunk.gripper, dtype=np.float64),
                               t_obs, int(getattr(chunk, "n_execute", self.config.n_action_steps)), wall, guide,
                               None if cloud is None else np.asarray(cloud)[:, :3],
                               (getattr(chunk, "extra", None) or {}).get("keypoint"))
        self.latest_chunk = planned
        if self.on_chunk is not None:
            self.on_chunk(planned)
        if self.workspace is not None:
            bad = [i for i, p in enumerate(planned.poses) if not self.workspace.contains(p[:3], tol=WORKSPACE_TOL)]
            if bad:
                p = planned.poses[bad[0], :3]
                self._stop("out_of_workspace", f"action {bad[0]} of the chunk at ({p[0]:.3f}, {p[1]:.3f}, "
                                               f"{p[2]:.3f}) m is outside the workspace", state)
                return
        self.chunk = planned

    def _stop(self, reason: str, detail: str, state) -> None:
        if self.stopped:
            return
        self.stopped, self.stop_detail = reason, detail
        # Hold where the arm is now, not at the last target: a target ahead would keep it moving.
        self._hold = np.asarray(state.ee_pose, dtype=np.float64).copy()

    # ------------------------------------------------------------------ TargetSource
    def next_target(self, state, frame, t: float):
        if self._hold is None:
            self._hold = np.asarray(state.ee_pose, dtype=np.float64).copy()
            self._hold_gripper = 1.0 if float(state.gripper) > GRIPPER_THRESHOLD else 0.0
        if self.threaded:
            with self._lock:
                res, self._result = self._result, None
            if res is not None and not self.stopped:
                self._accept(res, state)
        info: dict = {}
        if self.stopped:
            return self._hold.copy(), self._hold_gripper, {"policy_stopped": self.stopped}
        c = self.chunk
        i = 0 if c is None else int(round((t - c.t_obs) * self.rate_hz))
        need = c is None or i >= c.n_execute - self.replan_margin
        if need and not (self.threaded and self._busy):
            self._submit(state, frame, t)
            if not self.threaded:
                if self.stopped:
                    return self._hold.copy(), self._hold_gripper, {"policy_stopped": self.stopped}
                c = self.chunk
                i = 0
        if c is None:  # waiting for the first chunk: hold still
            return self._hold.copy(), self._hold_gripper, {"policy_waiting": True}
        if i >= len(c.poses):
            # The whole chunk lies in the past (inference slower than its horizon): jumping to its
            # last pose would be a leap the safety filter rejects; hold until a fresh chunk arrives.
            return self._hold.copy(), self._hold_gripper, {"chunk_exhausted": True}
        j = max(i, 0)
        self._hold = c.poses[j].copy()
        self._hold_gripper = 1.0 if c.gripper[j] > GRIPPER_THRESHOLD else 0.0
        info.update({"chunk_index": j})
        if self.clock is not None:
            info["guide_t"] = self.clock.t
        return c.poses[j].copy(), self._hold_gripper, info
