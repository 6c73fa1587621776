"""Failed rollout trials → a correction dataset for DAgger-style fine-tuning.

DAgger trains on the states the *learner* reaches, labelled by the *expert*. In the simulated lab both
exist: for each failed trial of a run folder the lab is reset to the trial's seed, the trial's own
commanded targets (the episode's ``action`` column, one per control tick) are replayed through the
control loop's safety filter up to the frame where the trial failed (``TrialRecord.failed_frame``: the
gripper closing on nothing, the cube leaving the fingers, …), and from that state the scripted expert
(robots.sim.expert) finishes the task while a normal episode is recorded (camera, proprio, expert
phases, keyframes and proposals: RecordingService → EpisodeWriter). The recording starts at the
takeover, so every recorded action is the expert's, from a state the learner led to. A cube still
held at the takeover is carried on (the expert skips its pick waypoints); corrections the expert
itself fails are discarded. The result opens in Annotate and trains with
``train expert --episodes OUT``.

Why not re-render or copy: a copy of a failed episode teaches the failure (its actions are the
learner's); re-rendering needs the expert's actions anyway, and replaying in the running lab gives
them plus fresh camera frames for free. On hardware there is no expert to take over, so the failed
episodes are copied as they are (for correcting by hand in Annotate) — ``copy_failures``.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from app.success import TrialRecord, read_report

log = logging.getLogger(__name__)

HOLD_DIST = 0.035  # m: the cube this close to the TCP with the gripper closed is still held at the takeover
REPLAY_SETTLE_S = 0.3


@dataclass
class Correction:
    trial: int
    seed: int
    failed_at: str
    path: Path | None  # the correction episode (None: the expert failed too, or nothing to replay)
    takeover_frame: int
    note: str


def failed_trials(run_dir: str | Path) -> tuple[dict, list[TrialRecord]]:
    """The run's report and its failed trials that have an episode file."""
    doc = read_report(run_dir)
    fields = set(TrialRecord.__dataclass_fields__)
    trials = [TrialRecord(**{k: v for k, v in t.items() if k in fields}) for t in doc["trials"]]
    return doc, [t for t in trials if not t.success and t.episode and Path(t.episode).is_file()]


def copy_failures(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Copy the failed trials' episodes (hardware: no expert to take over); written under a temporary
    name and renamed, so a crash never leaves a half file that looks like an episode."""
    _, failed = failed_trials(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in failed:
        dst = out / Path(t.episode).name
        tmp = dst.with_suffix(".h5.part")
        shutil.copy2(t.episode, tmp)
        tmp.replace(dst)
        paths.append(dst)
    return paths


class _Replay:
    """TargetSource: the failed trial's commanded targets, one per tick, then holds the last one."""

    name = "replay"

    def __init__(self, actions: np.ndarray):
        self.actions = np.asarray(actions, float)
        self.k = 0

    def reset(self) -> None:
        self.k = 0

    def next_target(self, state, frame, t):
        a = self.actions[min(self.k, len(self.actions) - 1)]
        self.k += 1
        return a[:7].copy(), float(a[7]), {}

    def done(self, t) -> bool:
        return self.k >= len(self.actions)


def _expert(session, skip_pick: bool):
    """The scripted expert planned from the arm's pose; with ``skip_pick`` (cube already held) it starts
    at the task's lift waypoint, so it never opens the gripper over the cube it holds."""
    from robots.sim.expert import ScriptedExpert, plan_waypoints

    if not skip_pick:
        return ScriptedExpert(session.lab, session.arm, session.rate_hz)

    class Resuming(ScriptedExpert):
        def start(self, start_pose, t=0.0):
            super().start(start_pose, t)  # resets the gates and the clock
            wps = self.lab.oracle_waypoints()
            lift = next((i for i, w in enumerate(wps) if w.phase == "lift"), 0)
            self.plan = plan_waypoints(np.asarray(start_pose, float), wps[lift:])
            return self.plan

    return Resuming(session.lab, session.arm, session.rate_hz)


def _holding(session, task: str) -> bool:
    from robots.sim.tasks import get_task

    state = session.arm.state()
    poses = session.lab.object_poses()
    cube = next((poses[o] for o in get_task(task).objects if o.startswith("cube") and o in poses), None)
    return (cube is not None and float(state.gripper) < 0.9
            and float(np.linalg.norm(np.asarray(cube[:3]) - state.ee_pose[:3])) < HOLD_DIST)


def record_corrections(session, run_dir: str | Path, out_dir: str | Path, *, max_seconds: float = 30.0,
                       progress: Callable[[str], None] | None = None,
                       cancel: threading.Event | None = None) -> list[Correction]:
    """One expert correction episode per failed trial of ``run_dir`` (sim only), into ``out_dir``."""
    from app.episodes import finish_episode, record_episode
    from app.recording import RecordingService
    from recorder.episode import EpisodeReader

    if session.lab is None:
        raise ValueError("expert corrections need the simulated lab; on hardware use copy_failures")
    doc, failed = failed_trials(run_dir)
    recorder = RecordingService(out_dir, robot=str(session.robot_uri), camera=session.camera)
    out: list[Correction] = []
    for t in failed:
        if cancel is not None and cancel.is_set():
            break
        with EpisodeReader(t.episode) as r:
            actions = np.asarray(r.action, float)
        k = t.failed_frame if 0 <= t.failed_frame < len(actions) else len(actions) - 1
        say = f"trial {t.index + 1} (seed {t.seed}, failed at {t.failed_at or t.reason})"
        if progress is not None:
            progress(f"{say}: replaying {k} frames")
        session.lab.reset(t.task, t.seed)
        if k > 0:
            replay = _Replay(actions[:k])
            loop = session.control_loop(source=replay)
            loop.start()
            try:
                deadline = time.monotonic() + 2.0 * k / session.rate_hz + 5.0
                while not replay.done(0) and time.monotonic() < deadline and not loop.fault:
                    time.sleep(0.05)
                time.sleep(REPLAY_SETTLE_S)
            finally:
                loop.stop()
        held = _holding(session, t.task)
        if progress is not None:
            progress(f"{say}: expert takes over at frame {k}" + (" (cube held)" if held else ""))
        note = (f"correction of rollout trial {t.index} seed {t.seed} ({Path(str(run_dir)).name}): failed at "
                f"{t.failed_at or '?'} — {t.diagnosis or t.reason}; the scripted expert took over at frame {k}")
        result = record_episode(session, recorder, t.task, t.seed, source=_expert(session, held),
                                max_seconds=max_seconds, reset=False)
        ok = session.lab.success()
        if ok:
            finish_episode(recorder, result, "success", note)
            path = result.path
        else:
            finish_episode(recorder, result, "discard")
            path = None
        out.append(Correction(t.index, t.seed, t.failed_at, path, k, note if ok else "the expert failed too"))
        if progress is not None:
            progress(f"{say}: {'saved ' + path.name if path else 'expert failed, discarded'}")
    return out
