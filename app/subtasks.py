"""Per-subtask success of a rollout trial: which atomic actions of the task it reached and completed,
where a failed trial failed, and why.

A task is a chain of atomic actions (the primitive vocabulary of recorder/primitives.py): pick_cube is
move → grasp → lift, place_in_bin and stack_cubes add transport → place, press_button is move → press.
A trial's recorded trajectory (TCP pose + measured gripper opening, 20 Hz) is segmented with the
automatic proposals (recorder.segments.propose_labels, what Annotate shows) and each subtask is checked
against the simulator's object poses sampled during the trial (``ObjectTrace``):

- move      the TCP arrived at the cube (within APPROACH_XY / APPROACH_Z of its centre) or the
            gripper closed (the approach ended there, wherever that was);
- grasp     the fingers held the cube (holding status: closed on something, recorder.segments.
            holding_status) with the cube between them for GRASP_HOLD_S;
- lift      the held cube rose LIFT_RISE above where it lay (pick_cube: the task's success predicate);
- transport the held cube reached the target (bin, green cube) within TRANSPORT_XY;
- place / press   the task's success predicate held.

The first subtask not completed is where the trial failed; the diagnosis says what the sim state shows
(gripper closed on nothing, cube pushed away, cube left the gripper while moving, released beside the
target, timeout while approaching, …). Without object poses (hardware) the proposals alone decide:
a "grasp" segment is a completed grasp, a "lift" one a lift, and so on.

Pure numpy: the runner calls it at the end of every trial; the tests call it on synthetic trajectories.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recorder.segments import SegmentParams, holding_status, propose_labels

SUBTASKS: dict[str, tuple[str, ...]] = {
    "pick_cube": ("move", "grasp", "lift"),
    "place_in_bin": ("move", "grasp", "lift", "transport", "place"),
    "stack_cubes": ("move", "grasp", "lift", "transport", "place"),
    "press_button": ("move", "press"),
}
DEFAULT_SUBTASKS = ("move", "grasp", "lift", "transport", "place")  # a hardware task of another name
MANIPULATED = "cube_red"
TARGET = {"place_in_bin": "bin", "stack_cubes": "cube_green"}

# Thresholds (m, s). The cube is 4 cm wide and the fingers centre it when they close on it, so a TCP
# within 2 cm of its axis grasps it; "holding" with the cube centre more than 3.5 cm from the TCP is a
# cube that is no longer between the fingers.
APPROACH_XY = 0.02
APPROACH_Z = 0.025
HOLD_DIST = 0.035
GRASP_HOLD_S = 0.3
LIFT_RISE = 0.04
TRANSPORT_XY = 0.03
CLOSE_NEAR = 0.06  # a gripper closing further than this from the cube is no grasp attempt (approach not done)
PUSHED_XY = 0.02  # the cube slid this far before it was held: the approach pushed it
PRESS_XY = 0.02
PRESS_ABOVE = 0.03  # TCP this close above the cap counts as arrived at the button
STOPS = {"nan": "the policy output NaN", "out_of_workspace": "the policy left the workspace",
         "safety_stop": "a safety stop", "dropped_object": "the object was dropped"}


def subtasks_for(task: str) -> tuple[str, ...]:
    return SUBTASKS.get(task, DEFAULT_SUBTASKS)


@dataclass
class ObjectTrace:
    """Object poses (and the task's success predicate) sampled during a trial, stamped on the control
    loop's clock; ``at`` resamples them onto the episode's frames (the last sample at or before)."""

    t: np.ndarray  # (M,) seconds, loop clock
    poses: dict[str, np.ndarray]  # name -> (M, 7)
    success: np.ndarray  # (M,) bool

    @classmethod
    def from_samples(cls, samples: list[tuple[float, dict, bool]]) -> "ObjectTrace | None":
        if not samples:
            return None
        names = set.intersection(*(set(p) for _, p, _ in samples))
        return cls(np.array([s[0] for s in samples], float),
                   {n: np.array([np.asarray(p[n], float) for _, p, _ in samples]) for n in sorted(names)},
                   np.array([bool(s[2]) for s in samples]))

    def at(self, times: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Poses linearly interpolated to ``times`` (a cube carried at 0.2 m/s moves 2 cm between two
        10 Hz samples: the last sample alone would put it outside the fingers), the predicate as of
        the last sample."""
        t = np.asarray(times, float)
        i = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, len(self.t) - 1)
        poses = {n: np.stack([np.interp(t, self.t, p[:, k]) for k in range(p.shape[1])], axis=1)
                 for n, p in self.poses.items()}
        return poses, self.success[i]


@dataclass
class SubtaskStep:
    name: str
    reached: bool
    completed: bool
    start: int = -1  # frame where it began (-1: not reached)
    end: int = -1  # frame where it was completed (-1: not completed)


@dataclass
class TrialAnalysis:
    steps: list[SubtaskStep]
    failed_at: str = ""  # "" when every subtask was completed
    diagnosis: str = ""
    frame: int = -1  # frame the failure was diagnosed at
    segment: str = ""  # the proposal's label at that frame: what the arm was doing
    segments: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def reached(self) -> list[str]:
        return [s.name for s in self.steps if s.reached]

    @property
    def completed(self) -> list[str]:
        return [s.name for s in self.steps if s.completed]


def _first(mask: np.ndarray, start: int = 0) -> int:
    idx = np.flatnonzero(np.asarray(mask)[start:])
    return int(idx[0]) + start if len(idx) else -1


def _first_run(mask: np.ndarray, length: int, start: int = 0) -> int:
    """First frame (>= start) that begins ``length`` consecutive True frames; -1 if none."""
    m = np.asarray(mask, bool)[start:].astype(int)
    if len(m) < length:
        return -1
    run = np.convolve(m, np.ones(length, int), mode="valid")
    idx = np.flatnonzero(run == length)
    return int(idx[0]) + start if len(idx) else -1


def _cm(x: float) -> str:
    return f"{x * 100:.1f} cm"


def _ran_out(reason: str) -> str:
    """How the trial ran out while a subtask was still under way."""
    if reason in ("timeout", "", "operator", "cancelled"):
        return "timeout"
    if reason == "plan_finished":
        return "plan ended"
    return "stopped"


def _offset(tcp: np.ndarray, obj: np.ndarray) -> str:
    """'1.7 cm beside' the object's axis, plus the height above/below it when that is the larger miss."""
    dxy = float(np.linalg.norm(tcp[:2] - obj[:2]))
    dz = float(tcp[2] - obj[2])
    out = f"{_cm(dxy)} beside"
    if abs(dz) > 0.01:
        out += f" and {_cm(abs(dz))} {'above' if dz > 0 else 'below'}"
    return out


def _ended(reason: str) -> str:
    if reason in ("", "success"):
        return ""
    return f" ({STOPS.get(reason, reason.replace('_', ' '))})"


def gripper_status(gripper: np.ndarray, command: np.ndarray | None = None,
                   params: SegmentParams = SegmentParams()) -> np.ndarray:
    """Per frame "open", "holding" or "closed" (on nothing). With the commanded gripper the policy's
    decision to close is known exactly (a measured opening that flickers 1.0 → 0.94 is no close);
    without it (recorded episodes) the proposals' holding status from the measured opening."""
    if command is None:
        return holding_status(gripper, params)
    g = np.asarray(gripper, float).reshape(-1)
    shut = np.asarray(command, float).reshape(-1) < 0.5
    status = np.where(shut, "holding", "open").astype(object)
    status[shut & (g < params.empty_closed)] = "closed"
    return status


def analyse_trial(task: str, ee_pose: np.ndarray, gripper: np.ndarray, fps: float, *,
                  objects: dict[str, np.ndarray] | None = None, success: np.ndarray | None = None,
                  outcome: str = "failure", reason: str = "", command: np.ndarray | None = None,
                  params: SegmentParams = SegmentParams()) -> TrialAnalysis:
    """Subtasks reached/completed, the failing one and a diagnosis for one trial.

    ``ee_pose`` (N, 7) and ``gripper`` (N,) are the recorded frames; ``objects`` maps object names to
    their (N, 7) poses at those frames and ``success`` is the task predicate per frame (both from an
    ``ObjectTrace``; None on hardware). ``outcome``/``reason`` are the trial's verdict; ``command`` (N,)
    the commanded gripper (0 closed … 1 open), when known.
    """
    ee = np.asarray(ee_pose, float).reshape(-1, 7)
    g = np.asarray(gripper, float).reshape(-1)
    n = len(ee)
    names = subtasks_for(task)
    segments = propose_labels(ee, g, fps, params) if n else []
    if n == 0:
        steps = [SubtaskStep(s, i == 0, False) for i, s in enumerate(names)]
        return TrialAnalysis(steps, names[0], "no frames were recorded" + _ended(reason), -1, "", [])
    if objects is not None and (MANIPULATED in objects or "button" in objects):
        res = _analyse_sim(task, names, ee, g, fps, objects, success, reason, command, params)
    else:
        res = _analyse_proposals(names, g, segments, params, reason, command)
    if outcome == "success":  # the task's predicate held: every subtask was done, whatever the checks say
        for s in res.steps:
            s.reached = s.completed = True
        res.failed_at, res.diagnosis, res.frame = "", "", -1
    res.segments = segments
    if res.frame >= 0:
        res.segment = next((lab for a, b, lab in segments if a <= res.frame < b), "")
    return res


def _chain(names: tuple[str, ...], done: dict[str, int]) -> list[SubtaskStep]:
    """Steps from completion frames: a subtask is reached when the one before it was completed, and a
    chain stops at its first incomplete subtask (a cube that lands in the bin without a recorded
    transport does not count as transported)."""
    steps, start, ok = [], 0, True
    for name in names:
        end = done.get(name, -1) if ok else -1
        steps.append(SubtaskStep(name, ok, end >= 0, start if ok else -1, end))
        ok = ok and end >= 0
        start = max(end, start)
    return steps


def _analyse_sim(task, names, ee, g, fps, objects, success, reason, command, params) -> TrialAnalysis:
    n = len(ee)
    tcp = ee[:, :3]
    status = gripper_status(g, command, params)
    ok = np.zeros(n, bool) if success is None else np.asarray(success, bool).reshape(-1)
    ok_at = _first(ok)
    last = n - 1
    if task == "press_button" or MANIPULATED not in objects:
        button = objects["button"][:, :3]
        dxy = np.linalg.norm(tcp[:, :2] - button[:, :2], axis=1)
        above = tcp[:, 2] - button[:, 2]
        arrived = _first((dxy < PRESS_XY) & (above < PRESS_ABOVE))
        done = {"move": arrived if arrived >= 0 else ok_at, "press": ok_at}
        steps = _chain(names, done)
        failed = next((s for s in steps if not s.completed), None)
        if failed is None:
            return TrialAnalysis(steps)
        if failed.name == "move":
            k = int(np.argmin(dxy + np.maximum(above, 0)))
            return TrialAnalysis(steps, "move", f"{_ran_out(reason)} while approaching the button: closest "
                                                f"{_cm(float(np.hypot(dxy[k], max(above[k], 0))))} above/beside it"
                                 + _ended(reason), last)
        depth = float(button[0, 2] - button[:, 2].min())
        k = int(np.argmin(dxy))
        if dxy[arrived:].min() > PRESS_XY:
            why = f"press missed: the tool came down {_cm(float(dxy[arrived:].min()))} beside the cap"
        else:
            why = f"press too shallow: the cap went down {depth * 1000:.0f} mm"
        return TrialAnalysis(steps, failed.name, why + _ended(reason), max(arrived, k))
    cube = objects[MANIPULATED][:, :3]
    z0 = float(cube[0, 2])
    d = np.linalg.norm(tcp - cube, axis=1)
    dxy = np.linalg.norm(tcp[:, :2] - cube[:, :2], axis=1)
    near = (dxy < APPROACH_XY) & (np.abs(tcp[:, 2] - cube[:, 2]) < APPROACH_Z)
    closed_any = status != "open"
    close_at = _first(closed_any)
    close_near = _first(closed_any & (d < CLOSE_NEAR))
    held = (status == "holding") & (d < HOLD_DIST)
    hold_frames = max(1, int(round(GRASP_HOLD_S * fps)))
    grasped = _first_run(held, hold_frames)
    approach = min([f for f in (_first(near), close_near, grasped) if f >= 0], default=-1)
    done = {"move": approach, "grasp": grasped}
    lifted = _first(held & (cube[:, 2] > z0 + LIFT_RISE), max(grasped, 0)) if grasped >= 0 else -1
    target = TARGET.get(task)
    tgt = objects[target][:, :3] if target in objects else None
    if names[-1] == "lift":
        done["lift"] = ok_at
    else:
        done["lift"] = lifted
        if tgt is not None and lifted >= 0:
            at_target = held & (np.linalg.norm(cube[:, :2] - tgt[:, :2], axis=1) < TRANSPORT_XY)
            done["transport"] = _first(at_target, lifted)
        done[names[-1]] = ok_at
    steps = _chain(names, done)
    failed = next((s for s in steps if not s.completed), None)
    if failed is None:
        return TrialAnalysis(steps)
    name, ended = failed.name, _ended(reason)
    slid = np.linalg.norm(cube[:, :2] - cube[0, :2], axis=1)
    if name == "move":
        if close_at >= 0:
            return TrialAnalysis(steps, name, f"the gripper closed {_cm(float(d[close_at]))} from the cube, before "
                                              "arriving" + ended, close_at)
        k = int(np.argmin(d))
        return TrialAnalysis(steps, name, f"{_ran_out(reason)} while approaching: the TCP came no closer than "
                                          f"{_cm(float(d[k]))} to the cube" + ended, last)
    if name == "grasp":
        close_at = close_near
        before = grasped if grasped >= 0 else n
        if slid[:max(close_at, 1) if close_at >= 0 else before].max(initial=0.0) > PUSHED_XY:
            k = _first(slid > PUSHED_XY)
            return TrialAnalysis(steps, name, f"grasp missed: the approach pushed the cube {_cm(float(slid[:before].max()))}"
                                              " away" + ended, k)
        if close_at < 0:
            return TrialAnalysis(steps, name, "the gripper never closed" + ended, last)
        if np.any(status[close_at:] == "closed"):
            k = _first(status == "closed", close_at)
            return TrialAnalysis(steps, name, f"grasp missed: the gripper closed on nothing, "
                                              f"{_offset(tcp[close_at], cube[close_at])} the cube" + ended, k)
        k = _first(held, close_at)
        if k >= 0:
            return TrialAnalysis(steps, name, "grasp slipped: the cube left the fingers while closing" + ended, k)
        return TrialAnalysis(steps, name, f"grasp missed: closed {_cm(float(d[close_at]))} from the cube" + ended,
                             close_at)
    # Past the grasp: did the cube leave the fingers with the gripper still closed?
    start = max(grasped, 0)
    # Lost for a few frames running (one late pose sample is no drop), with the gripper still closed.
    lost = _first_run(~held & (status != "open"), 3, start)
    if name in ("lift", "transport") and lost >= 0:
        where = "while lifting" if name == "lift" else "in transport"
        extra = ""
        if tgt is not None:
            extra = f", {_cm(float(np.linalg.norm(cube[lost, :2] - tgt[lost, :2])))} from the target"
        return TrialAnalysis(steps, name, f"dropped {where}: the cube left the gripper while moving{extra}" + ended,
                             lost)
    if name == "lift":
        rise = float(cube[start:, 2].max() - z0)
        return TrialAnalysis(steps, name, f"{_ran_out(reason)} while lifting: the cube rose {_cm(rise)}" + ended, last)
    off = float(np.linalg.norm(cube[last, :2] - tgt[last, :2])) if tgt is not None else float("nan")
    if name == "transport":
        return TrialAnalysis(steps, name, f"{_ran_out(reason)} while transporting: the cube is {_cm(off)} from the target" + ended,
                             last)
    released = _first(status == "open", max(failed.start, 0))
    if released < 0:
        return TrialAnalysis(steps, name, f"{_ran_out(reason)} before releasing the cube" + ended, last)
    if task == "stack_cubes" and tgt is not None:
        dz = float(cube[last, 2] - tgt[last, 2])
        why = f"place missed: released {_cm(off)} off the green cube's centre (height {_cm(dz)} above it)"
    else:
        why = f"place missed: the cube was released and rests {_cm(off)} from the target's centre"
    return TrialAnalysis(steps, name, why + ended, released)


def _analyse_proposals(names, g, segments, params, reason, command=None) -> TrialAnalysis:
    """No object poses (hardware): the proposals' segments decide. A grasp segment is a close that
    ended on something; lift / transport / place / press segments follow from the gripper status."""
    done: dict[str, int] = {}
    for a, b, lab in segments:
        if lab in names and lab not in done:
            done[lab] = b - 1
    status = gripper_status(g, command, params)
    first_act = min([f for k, f in done.items() if k != "move"], default=-1)
    close_at = _first(status != "open")
    approach = min([f for f in (first_act, close_at) if f >= 0], default=-1)
    done["move"] = approach
    steps = _chain(names, done)
    failed = next((s for s in steps if not s.completed), None)
    n = len(g)
    if failed is None:
        return TrialAnalysis(steps)
    if failed.name == "grasp" and np.any(status == "closed"):
        return TrialAnalysis(steps, "grasp", "grasp missed: the gripper closed on nothing" + _ended(reason),
                             _first(status == "closed"))
    return TrialAnalysis(steps, failed.name, f"no {failed.name} segment in the trajectory (no sim state to tell why)"
                         + _ended(reason), n - 1)
