"""Rollout sessions: policy checkpoint × task × waypoint source × N trials, with live success tracking.

Each trial: reset (sim: the task's seeded layout, which also homes the arm; hardware: the arm homes
(``home_between``, on by default there) and then the operator confirms the scene is reset),
run the policy at the control rate through the teleop loop's safety filter (app.teleop.ControlLoop via
app.episodes.record_episode, so every trial is saved as an episode), end it on success, timeout, a
policy stop (NaN / out-of-workspace), a safety stop or a cancel, and take the outcome from the sim
predicate or the operator's S/F key with a reason. Trials, the Wilson interval per task, latencies and
the latest predicted action chunk are kept in a thread-safe live state that the CLI prints and the
Evaluate tab draws; the report (app.success: JSON + CSV + PNG) is rewritten after every trial, so a
cancelled or crashed run still leaves the trials it finished.

No Qt here: the GUI wraps ``RolloutRunner.run`` in a worker and polls ``snapshot()``.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from app.episodes import EpisodeResult, finish_episode, record_episode
from app.recording import RecordingService
from app.success import TrialRecord, latency_stats, summarize, write_report
from recorder.schema import EpisodeError
from robots.base import DeviceError

log = logging.getLogger(__name__)

POLICIES = ("expert", "spline-ik")
WAYPOINT_SOURCES = ("oracle", "oracle-sparse", "none", "keyframes", "predicted")
SUCCESS_HOLD_S = 0.4  # the predicate must hold this long (an object bouncing on the fingers is no grasp)
MONITOR_PERIOD = 0.1
DROP_RISE = 0.03  # m an object must have been raised before falling back counts as dropped
SAFETY_STOP_EVENTS = ("rejected_jump", "rejected_nan")
SAFETY_STOP_TICKS = 10  # consecutive rejected targets (0.5 s at 20 Hz) that end a trial


@dataclass
class RolloutConfig:
    task: str = "pick_cube"
    checkpoint: str | None = None  # required for policy "expert"
    policy: str = "expert"  # expert | spline-ik ("waypoints + IK" baseline)
    waypoints: str = "oracle"  # oracle (sim) | oracle-sparse (its gripper changes only) | none | keyframes (of --demo)
    demo: str | None = None  # episode whose keyframes are the waypoints (waypoints == "keyframes")
    trials: int = 20
    seed: int = 1000  # trial i resets the sim task with seed + i
    ddim_steps: int = 10
    max_seconds: float = 15.0
    waypoint_noise: float = 0.0  # m, Gaussian noise on the waypoint positions (imprecise waypoints)
    out_dir: str = "runs/eval"
    device: str = "cpu"
    keypoints: str | None = None  # keypoint checkpoint for waypoints "predicted" (or "predicted:PATH")
    # What the operator asks for, for "predicted" waypoints: it picks the predictor's plan (the nearest
    # trained task) and conditions every step. None: the task's own instruction.
    instruction: str | None = None
    # Sim only: a scene variation no demo showed (robots/sim/variations.py), applied to every trial.
    variation: str = "none"
    # Home the arm before each trial: None = on hardware only (the sim reset homes it already).
    home_between: bool | None = None

    def __post_init__(self) -> None:
        if self.waypoints.startswith("predicted:"):
            self.waypoints, self.keypoints = "predicted", self.waypoints.split(":", 1)[1]
        if self.waypoints == "predicted" and not self.keypoints:
            raise ValueError("waypoints 'predicted' need a keypoint checkpoint (--keypoints PATH or predicted:PATH)")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.waypoints not in WAYPOINT_SOURCES:
            raise ValueError(f"waypoints must be one of {WAYPOINT_SOURCES}, got {self.waypoints!r}")
        if self.policy == "expert" and not self.checkpoint:
            raise ValueError("the expert policy needs a checkpoint (--checkpoint PATH)")
        if self.policy == "spline-ik" and self.waypoints == "none":
            raise ValueError("spline-ik executes the waypoints: it needs --waypoints oracle, keyframes or predicted")
        if self.waypoints == "keyframes" and not self.demo:
            raise ValueError("waypoints 'keyframes' need a demo episode (--demo PATH)")
        from robots.sim.variations import parse_variation

        self.variation = parse_variation(self.variation)
        if self.trials < 1 or self.max_seconds <= 0 or self.ddim_steps < 1 or self.waypoint_noise < 0:
            raise ValueError("trials, max_seconds and ddim_steps must be positive, waypoint_noise >= 0")


@dataclass
class LiveState:
    """What a view shows; ``snapshot()`` returns a copy so readers never race the runner."""

    phase: str = "idle"  # idle | loading | homing | resetting | running | awaiting_reset | awaiting_outcome | done | cancelled | error
    trial: int = -1  # index of the trial in progress
    n_trials: int = 0
    trial_t: float = 0.0  # seconds into the current trial
    trials: list[TrialRecord] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    chunk: np.ndarray | None = None  # (H, 7) latest predicted action chunk (for PointCloudView.set_predicted_actions)
    guidance: np.ndarray | None = None  # (n_guide, 8) poses it was conditioned on
    cloud: np.ndarray | None = None  # (N, 3) the cloud the policy saw for that chunk
    keypoint: np.ndarray | None = None  # (3,) the expert's keypoint head output for that chunk
    plan: np.ndarray | None = None  # (K, 3) the trial's waypoint positions (noise included), base frame
    plan_curve: np.ndarray | None = None  # (M, 3) the trial's trajectory through them (policies.waypoints.trajectory_curve)
    message: str = ""
    report_dir: str = ""


def warm_up(policy, calls: int = 3) -> None:
    """A few throw-away chunks: TorchScript profiles and optimises a traced network on its first calls
    (seconds on a loaded CPU), which must not eat into the first trial."""
    cfg = policy.config
    pose = np.r_[0.4, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0]
    state = np.r_[pose, 1.0]
    guide = np.tile(state, (cfg.n_guide, 1))
    cloud = np.random.default_rng(0).uniform((0.3, -0.2, 0.0), (0.6, 0.2, 0.2), (cfg.n_points, 3))
    for _ in range(calls):
        policy.act(state, cloud, guide)
    policy.reset()


class RolloutRunner:
    """Runs the trials of ``config`` on an open ``DeviceSession``; ``run()`` blocks (call it from a
    worker thread in a GUI). ``policy`` injects a ready policy object (tests, benches) instead of
    loading ``config.checkpoint``."""

    def __init__(self, session, config: RolloutConfig, *, policy=None,
                 on_update: Callable[[], None] | None = None,
                 ask_reset: Callable[[int], bool] | None = None,
                 ask_outcome: Callable[[int, str], tuple[str, str]] | None = None):
        self.session = session
        self.config = config
        self.on_update = on_update
        self._policy = policy
        self._ask_reset = ask_reset
        self._ask_outcome = ask_outcome
        self._lock = threading.Lock()
        self._state = LiveState(n_trials=config.trials, report_dir=str(Path(config.out_dir)))
        self._cancel = threading.Event()
        self._trial_end = threading.Event()
        self._reset_ok = threading.Event()
        self._outcome: tuple[str, str] | None = None
        self._outcome_evt = threading.Event()
        self.hardware = session.lab is None
        if self.hardware and config.waypoints.startswith("oracle"):
            raise ValueError("oracle waypoints exist only in the simulated lab; use --waypoints keyframes or none")
        if config.waypoints == "predicted" and session.camera is None:
            raise ValueError("predicted waypoints need a camera (the keypoints are predicted from its cloud)")
        if self.hardware and config.variation != "none":
            raise ValueError("scene variations exist only in the simulated lab")

    # ------------------------------------------------------------------ control from other threads
    def cancel(self) -> None:
        self._cancel.set()
        self._trial_end.set()
        self._reset_ok.set()
        self._outcome_evt.set()

    def confirm_reset(self) -> None:
        """Hardware: the operator has reset the scene; the next trial may start."""
        self._reset_ok.set()

    def operator_outcome(self, success: bool, reason: str = "") -> None:
        """The operator's S/F key. While a trial runs it also ends the trial."""
        self._outcome = ("success" if success else "failure", reason or ("success" if success else "operator"))
        self._outcome_evt.set()
        self._trial_end.set()

    def snapshot(self) -> LiveState:
        with self._lock:
            s = self._state
            # Lists and arrays the runner updates are copied; the cloud is never written after it is
            # made, so it is shared.
            copied = {k: (None if getattr(s, k) is None else getattr(s, k).copy())
                      for k in ("chunk", "guidance", "keypoint", "plan", "plan_curve")}
            return replace(s, trials=list(s.trials), latencies_s=list(s.latencies_s), **copied)

    def _set(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self._state, k, v)
        if self.on_update is not None:
            try:
                self.on_update()
            except Exception:
                log.exception("rollout on_update callback failed")

    # ------------------------------------------------------------------ building blocks
    def _load_policy(self):
        if self.config.policy != "expert" or self._policy is not None:
            return self._policy
        from policies.action_expert import ExpertPolicy

        policy = ExpertPolicy(self.config.checkpoint, device=self.config.device, ddim_steps=self.config.ddim_steps)
        warm_up(policy)
        return policy

    def _waypoints(self, frame=None):
        cfg = self.config
        if cfg.waypoints == "predicted":
            from policies.keypoints import PredictedSource

            # Without an instruction of its own the trial's is used: the task's, or the variation's
            # rewording of it ("pick up the teal cube").
            lab = self.session.lab
            instruction = cfg.instruction or (lab.task_info.get("instruction") if lab is not None else None)
            src = PredictedSource(self._keypoints, cfg.task, instruction=instruction)
            if src.task != cfg.task:
                log.warning("instruction %r was read as task %s (similarity %.2f), the trial judges %s",
                            cfg.instruction, src.task, src.similarity or 0.0, cfg.task)
            return src.waypoints(frame)
        if cfg.waypoints == "oracle":
            return self.session.lab.oracle_waypoints()
        if cfg.waypoints == "oracle-sparse":
            from policies.waypoints import OracleSource, gripper_change_waypoints

            return gripper_change_waypoints(OracleSource(self.session.lab).waypoints())
        if cfg.waypoints == "keyframes":
            from policies.datasets import open_episodes
            from policies.waypoints import DemoKeyframeSource

            wps = DemoKeyframeSource(open_episodes([cfg.demo])[0]).waypoints()
            return wps[1:]  # the demo's first frame is its start pose; the trial starts from the arm's
        return None

    def _make_source(self, policy, trial_seed: int):
        """A TargetSource that builds its trajectory on its first tick: the oracle's waypoints exist
        only after record_episode has reset the lab, and the trajectory starts at the arm's pose."""
        runner = self

        class _TrialSource:
            name = runner.config.policy

            def __init__(self):
                self.inner = None

            def reset(self):
                self.inner = None
                self.reset_at = time.monotonic()

            def next_target(self, state, frame, t):
                if self.inner is None and runner.config.waypoints == "predicted" and (
                        frame is None or frame.stamp <= self.reset_at):
                    # Predicted waypoints come from a camera frame of the reset scene: hold until one arrives.
                    return np.asarray(state.ee_pose, dtype=np.float64), float(state.gripper > 0.5), {"waiting_frame": True}
                if self.inner is None:
                    self.inner = runner._build_inner(policy, state, trial_seed, frame)
                return self.inner.next_target(state, frame, t)

            def done(self, t):
                return self.inner is not None and self.inner.done(t)

        return _TrialSource()

    def _build_inner(self, policy, state, trial_seed: int, frame=None):
        from policies.runtime import PolicyRuntime, SplineSource, timed_trajectory

        cfg = self.config
        wps = self._waypoints(frame)
        traj = None
        if wps is not None:
            rng = np.random.default_rng(trial_seed + 7919)
            traj = timed_trajectory(state.ee_pose, wps, start_gripper=float(state.gripper > 0.5),
                                    position_noise=cfg.waypoint_noise, rng=rng)
        if cfg.policy == "spline-ik":
            src = SplineSource(traj)
        else:
            policy.seed = trial_seed
            src = PolicyRuntime(policy, traj, self.session.rate_hz, workspace=self.session.arm.limits.workspace,
                                use_cloud=self.session.camera is not None)
        src.reset()
        self._source = src
        from policies.waypoints import trajectory_curve

        self.trajectory = traj
        # The view draws this exact curve: the one the policy's guidance (or spline-ik's targets) is sampled from.
        self._set(plan=None if traj is None else np.array([w.pose[:3] for w in traj.waypoints]),
                  plan_curve=None if traj is None else trajectory_curve(traj))
        return src

    # ------------------------------------------------------------------ trials
    def run(self) -> list[TrialRecord]:
        cfg = self.config
        out = Path(cfg.out_dir)
        self._set(phase="loading", message="loading policy")
        try:
            policy = self._load_policy()
            if cfg.waypoints == "predicted":
                from policies.keypoints import KeypointPredictor

                self._keypoints = KeypointPredictor.load(cfg.keypoints)
                # A checkpoint without this task's plan, or an instruction it cannot place, fails here,
                # not mid-trial (and the sentence model, if the instruction is new, loads now).
                if cfg.instruction and self._keypoints.task_instructions:
                    task, sim = self._keypoints.resolve(cfg.instruction)
                    self._set(message=f"instruction read as {task} (similarity {sim:.2f})")
                else:
                    self._keypoints.plan(cfg.task)
                if cfg.variation == "colour" and self._keypoints.config.task_text:
                    # Each trial's instruction names its new colour: encode them all now, not on the
                    # control thread at a trial's first tick.
                    from robots.sim.tasks import get_task
                    from robots.sim.variations import colour_instructions

                    t = get_task(cfg.task)
                    self._keypoints.prepare_texts(colour_instructions(t.instruction, t.objects))
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            self._set(phase="error", message=str(exc).splitlines()[0])
            raise
        with self._scene_variation():
            trials, latencies = self._run_trials(policy, out)
        cancelled = self._cancel.is_set()
        self._write(out, trials, latencies)
        s = summarize(trials).get(cfg.task)
        msg = f"{s.successes}/{s.trials} successes" if s else "no trials"
        self._set(phase="cancelled" if cancelled else "done", message=msg)
        return trials

    def _run_trials(self, policy, out: Path) -> tuple[list[TrialRecord], list[float]]:
        cfg = self.config
        recorder = RecordingService(out / "episodes", robot=str(self.session.robot_uri), camera=self.session.camera)
        trials: list[TrialRecord] = []
        latencies: list[float] = []
        for i in range(cfg.trials):
            if self._cancel.is_set():
                break
            seed = cfg.seed + i
            if self.homes_between:
                self._home(i)
            if self._cancel.is_set():
                break
            if self.hardware:
                self._set(phase="awaiting_reset", trial=i, message=f"trial {i + 1}: reset the scene, then confirm")
                if not self._wait_reset(i):
                    break
            self._set(phase="running", trial=i, trial_t=0.0, chunk=None, guidance=None, cloud=None, keypoint=None,
                      plan=None, plan_curve=None, message=f"trial {i + 1}/{cfg.trials}, seed {seed}")
            rec = self._run_trial(i, seed, policy, recorder, latencies)
            if rec is None:
                break
            trials.append(rec)
            self._set(trials=list(trials), latencies_s=list(latencies))
            self._write(out, trials, latencies)
        return trials, latencies

    @contextlib.contextmanager
    def _scene_variation(self):
        """The run's scene variation on the lab (every reset) and its arm limits (a lowered table lowers
        the workspace floor) — for this run only: the session outlives it (the app's Collect tab uses
        the same arm), so both are put back however the run ends."""
        lab, arm = self.session.lab, self.session.arm
        if lab is None or self.config.variation == "none":
            yield
            return
        from robots.sim.variations import limits_for

        limits, variation = arm.limits, lab.variation
        lab.variation, arm.limits = self.config.variation, limits_for(limits, self.config.variation)
        try:
            yield
        finally:
            lab.variation, arm.limits = variation, limits

    @property
    def homes_between(self) -> bool:
        home = self.config.home_between
        return self.hardware if home is None else bool(home)

    def _home(self, i: int) -> None:
        """Explicit step before a trial: no control loop runs between trials (record_episode starts
        and stops one per trial), so the blocking home move has the arm to itself. A fault that stops
        it (reflex, e-stop) ends the run with the reason, like a failed trial start would."""
        self._set(phase="homing", trial=i, message=f"trial {i + 1}: homing the arm")
        try:
            self.session.arm.home()
        except DeviceError as exc:
            self._set(phase="error", message=f"trial {i + 1}: homing failed: {str(exc).splitlines()[0]}")
            raise

    def _wait_reset(self, i: int) -> bool:
        if self._ask_reset is not None:
            return bool(self._ask_reset(i)) and not self._cancel.is_set()
        self._reset_ok.clear()
        self._reset_ok.wait()
        return not self._cancel.is_set()

    def _run_trial(self, i: int, seed: int, policy, recorder: RecordingService,
                   latencies: list[float]) -> TrialRecord | None:
        cfg = self.config
        self._trial_end.clear()
        self._outcome_evt.clear()
        self._outcome = None
        self._source = None
        verdict: dict = {"reason": "", "outcome": ""}
        events: list[str] = []
        monitor_stop = threading.Event()
        t_start = time.monotonic()

        rejected = [0]
        # Every control tick's state, for the subtask analysis: the episode holds only ticks with a camera
        # frame (on a loaded box the first trial's renderer can skip most of them).
        ticks: list[tuple[int, float, np.ndarray, float]] = []
        trace: list[tuple[float, dict, bool]] = []  # (loop time, object poses, predicate) from the monitor

        def on_tick(tick):
            ticks.append((tick.index, tick.t, np.asarray(tick.state.ee_pose, float), float(tick.state.gripper),
                          float(tick.action[7])))
            names = [e.split(":")[0] for e in tick.events]
            events.extend(names)
            # One rejected target only holds the arm for a tick; a policy that keeps asking for jumps
            # has lost it, and the trial ends as a safety stop.
            rejected[0] = rejected[0] + 1 if any(n in SAFETY_STOP_EVENTS for n in names) else 0
            if rejected[0] >= SAFETY_STOP_TICKS and not verdict["reason"]:
                verdict.update(reason="safety_stop", outcome="failure")
                self._trial_end.set()

        def on_loop(loop):
            threading.Thread(target=self._monitor, args=(loop, verdict, monitor_stop, t_start, trace),
                             name="rollout-monitor", daemon=True).start()

        source = self._make_source(policy, seed)
        try:
            result = record_episode(self.session, recorder, cfg.task, seed, source=source,
                                    max_seconds=cfg.max_seconds, listeners=[on_tick], cancel=self._trial_end,
                                    on_loop=on_loop)
        except DeviceError as exc:
            monitor_stop.set()
            self._set(phase="error", message=f"trial {i + 1}: {exc}")
            if recorder.recording:
                recorder.discard()
            raise
        finally:
            monitor_stop.set()
            inner = self._source
            if inner is not None:
                inner.close()
        inner = self._source
        if inner is not None:
            latencies.extend(inner.latencies)
        if self._cancel.is_set() and not verdict["reason"]:
            finish_episode(recorder, result, "discard")
            return None
        outcome, reason = self._verdict(i, verdict, result, inner)
        notes = f"rollout trial {i} seed {seed}: {reason}" + (f" ({inner.stop_detail})" if getattr(inner, "stop_detail", "") else "")
        try:
            finish_episode(recorder, result, outcome, notes)
        except EpisodeError as exc:
            # Ended before the first frame (an operator's key right after the reset): the trial counts,
            # there is just no episode file to keep.
            log.warning("trial %d: episode not saved: %s", i, exc)
            if recorder.recording:
                recorder.discard()
            result.path = None
        lat = latency_stats(inner.latencies if inner is not None else [])
        rec = TrialRecord(i, cfg.task, seed, outcome, reason, round(time.monotonic() - t_start, 3),
                          str(result.path or ""), lat["p50_ms"], lat["p99_ms"],
                          int(getattr(inner, "chunks", 0)),
                          sum(e in SAFETY_STOP_EVENTS or e.startswith("clamped") for e in events))
        return self._track_subtasks(rec, ticks, trace)

    def _track_subtasks(self, rec: TrialRecord, ticks: list, trace: list) -> TrialRecord:
        """Segment the trial's control ticks and name the subtask a failed trial failed at (app.subtasks),
        with the object poses the monitor sampled put on the ticks by time; the failure's tick is
        reported as the episode frame that recorded it (the next one when that tick has no frame)."""
        from app.subtasks import ObjectTrace, analyse_trial

        idx = np.array([k for k, *_ in ticks], int)
        t = np.array([x[1] for x in ticks], float)
        ee = np.array([x[2] for x in ticks], float).reshape(-1, 7)
        grip = np.array([x[3] for x in ticks], float)
        command = np.array([x[4] for x in ticks], float)
        ot = ObjectTrace.from_samples(trace)
        objects, ok = ot.at(t) if ot is not None and len(t) else (None, None)
        a = analyse_trial(rec.task, ee, grip, float(self.session.rate_hz), objects=objects, success=ok,
                          outcome=rec.outcome, reason=rec.reason, command=command)
        recorded = None  # tick index of every episode frame
        if rec.episode:
            from recorder.episode import EpisodeReader

            try:
                with EpisodeReader(rec.episode) as r:
                    recorded = np.asarray(r.extras.get("tick_index", np.arange(r.n_frames)), float)
            except (OSError, EpisodeError) as exc:
                log.warning("trial %d: frames not mapped: %s", rec.index, str(exc).splitlines()[0])

        def to_frame(i: int) -> int:
            """The episode frame of tick row ``i`` (the next recorded one when that tick has no frame)."""
            if recorded is None or not len(recorded):
                return -1
            return int(min(np.searchsorted(recorded, idx[min(i, len(idx) - 1)]), len(recorded) - 1))

        segments = " ".join(f"{lab}:{to_frame(s0)}-{to_frame(e0 - 1) + 1}" for s0, e0, lab in a.segments) \
            if recorded is not None else ""
        return replace(rec, reached=" ".join(a.reached), completed=" ".join(a.completed), failed_at=a.failed_at,
                       diagnosis=a.diagnosis + (f" [arm: {a.segment}]" if a.segment and a.failed_at else ""),
                       failed_frame=to_frame(a.frame) if a.frame >= 0 else -1, segments=segments)

    def _verdict(self, i: int, verdict: dict, result: EpisodeResult, inner) -> tuple[str, str]:
        if self._outcome is not None:  # the operator's key wins, in sim too
            return self._outcome
        if verdict["reason"]:
            return verdict["outcome"], verdict["reason"]
        if result.reason not in ("timeout", "expert finished", "stopped by operator"):
            return "failure", "safety_stop"  # a latched loop fault (estop, device lost)
        if not self.hardware:
            ok = self.session.lab.success()
            if ok:
                return "success", "success"
            if verdict.get("timeout_reason"):
                return "failure", verdict["timeout_reason"]
            # A source with a plan (spline-ik) that ran to its end without solving the task.
            return "failure", "plan_finished" if result.reason == "expert finished" else "timeout"
        self._set(phase="awaiting_outcome", message=f"trial {i + 1} ended ({result.reason}): press S or F")
        if self._ask_outcome is not None:
            return self._ask_outcome(i, result.reason)
        self._outcome_evt.wait()
        return self._outcome or ("failure", "cancelled")

    def _monitor(self, loop, verdict: dict, stop: threading.Event, t_start: float, trace: list | None = None) -> None:
        """Ends the trial on success (held), a policy stop or a loop fault; tracks dropped objects."""
        lab = None if self.hardware else self.session.lab
        objects: tuple[str, ...] = ()
        if lab is not None:
            from robots.sim.tasks import get_task

            objects = get_task(self.config.task).objects
        z0: dict[str, float] = {}
        z_max: dict[str, float] = {}
        success_since = None
        was_success = False
        while not stop.wait(MONITOR_PERIOD):
            self._set(trial_t=time.monotonic() - t_start)
            src = self._source
            if src is not None and src.latest_chunk is not None:
                with self._lock:
                    latest = src.latest_chunk
                    self._state.chunk = latest.poses.copy()
                    self._state.guidance = latest.guidance.copy()
                    # Never written after the chunk is made: shared, not copied (the view only reads).
                    self._state.cloud = getattr(latest, "cloud", None)
                    self._state.keypoint = getattr(latest, "keypoint", None)
            if src is not None and src.stopped and not verdict["reason"]:
                verdict.update(reason=src.stopped, outcome="failure")
                self._trial_end.set()
                return
            if loop.fault and not verdict["reason"]:
                verdict.update(reason="safety_stop", outcome="failure")
                self._trial_end.set()
                return
            if lab is None:
                continue
            try:
                ok = lab.success()
                poses = lab.object_poses()
            except DeviceError:
                continue  # the loop reports a lost lab as its fault
            if trace is not None:
                trace.append((time.monotonic() - loop.t0, poses, bool(ok)))
            for name in objects:
                if name in poses:
                    z = float(poses[name][2])
                    z0.setdefault(name, z)
                    z_max[name] = max(z_max.get(name, z), z)
            now = time.monotonic()
            if ok:
                was_success = True
                success_since = success_since or now
                if now - success_since >= SUCCESS_HOLD_S:
                    verdict.update(reason="success", outcome="success")
                    self._trial_end.set()
                    return
            else:
                success_since = None
            lifted = any(z_max[n] - z0[n] > DROP_RISE for n in z0)
            fallen = any(z_max[n] - z0[n] > DROP_RISE and float(poses[n][2]) - z0[n] < 0.01 for n in z0 if n in poses)
            if (was_success or lifted) and fallen and not ok:
                verdict["timeout_reason"] = "dropped_object"

    def _write(self, out: Path, trials: list[TrialRecord], latencies: list[float]) -> None:
        if not trials:
            return
        cfg = self.config
        meta = {"title": f"{cfg.policy} · {cfg.task} · waypoints {cfg.waypoints}"
                         + (f" (noise {cfg.waypoint_noise:g} m)" if cfg.waypoint_noise else "")
                         + f" · {Path(cfg.checkpoint).name if cfg.checkpoint else ''}",
                "config": asdict(cfg), "robot": str(self.session.robot_uri), "rate_hz": self.session.rate_hz,
                "hardware": self.hardware, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_report(out, trials, meta, latencies)
