"""Segment proposals from robot state: keyframes + the motion between them → labelled segments.

Pipeline (pure functions on arrays; ``propose_segments`` is the entry point):

1. Gripper events (recorder.keyframes) that act on an object become gripper segments — ``grasp``
   for a close that ends on something, ``place`` for an open after holding. A segment starts a
   short lead before the fingers visibly move, but not before the arm has arrived (its approach
   speed has died down to a share of its peak), and runs over the finger ramp and the pause after
   it until the arm moves on.
2. Long static intervals elsewhere become ``wait``, and so does a hold that ends the episode; both
   start where the motion before them has settled.
3. Every remaining frame gets a motion class from its smoothed velocity: up / down / horizontal /
   rotation (angular speed × lever arm beats linear speed) / still. Runs shorter than ``min_run``
   are absorbed by their neighbours, so spline blends at waypoints do not produce slivers.
4. Each run is labelled from the motion class and the gripper status (holding an object, open and
   empty, or closed on nothing): holding → lift / lower / transport / wrist_rotate / reorient;
   open → move / rotate_free / reorient_free; closed on nothing and ending at the episode's lowest
   working height → press (down), push / pull (horizontal, away from / toward the robot base),
   move otherwise.
5. Adjacent segments with the same primitive merge (the direction goes into the instruction).

The evaluation helpers at the end score proposals against per-frame expert phases.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import label as connected_runs
from scipy.signal import savgol_coeffs, savgol_filter
from scipy.spatial.transform import Rotation

from .annotations import AnnotationDoc, Segment, boundary_f1, now_iso
from .keyframes import KeyframeParams, arm_state_from_pose, gripper_keyframes, normalise_gripper, static_intervals
from .primitives import PHASE_TO_PRIMITIVE, instruction

STILL, UP, DOWN, HORIZ, ROT = "still", "up", "down", "horiz", "rot"


@dataclass(frozen=True)
class SegmentParams:
    keyframes: KeyframeParams = KeyframeParams()
    # A gripper action starts this long (s) before its fingers visibly leave their level — the
    # command precedes the visible motion (actuator latency, the operator settling on the pose) —
    # but never before the arm arrived where it acts.
    gripper_lead: float = 0.15
    finger_margin: float = 0.03  # normalised departure from the level that counts as "fingers moving"
    arrive_ratio: float = 0.15  # a decelerating motion has arrived once below this share of its peak speed
    settle_ratio: float = 0.05  # … and has settled into a hold ("wait") once below this share
    level_window: float = 2.0   # s of signal before/after an event that define the gripper/motion levels
    min_hold: float = 0.5       # s an object must have been held before an opening counts as "place"
    min_gripper_segment: int = 3
    min_wait: int = 20          # static intervals at least this long (frames) are "wait" segments
    min_tail_wait: int = 6      # a hold this long (frames) that lasts to the end of the episode is "wait"
    min_run: int = 5            # shortest motion run kept before absorbing into neighbours
    still_speed: float = 0.004  # m/s below which a frame has no direction of its own
    lever: float = 0.10         # m: compares angular (rad/s × lever) with linear speed
    vertical_ratio: float = 1.0  # |vz| > ratio × |vxy| → up/down
    tool_axis_cos: float = 0.8  # rotation about the tool z axis → wrist_rotate / rotate_free
    empty_closed: float = 0.03  # raw gripper opening below this while closed = nothing in the fingers
    contact_band: float = 0.02  # m above the episode's lowest tool height where push/pull/press can happen
    sg_window: int = 7
    sg_order: int = 2


def holding_status(gripper: np.ndarray, params: SegmentParams = SegmentParams()) -> np.ndarray:
    """Per frame: "open", "holding" (closed on something) or "closed" (closed on nothing)."""
    g = np.asarray(gripper, dtype=float)
    gn = normalise_gripper(g, params.keyframes.min_gripper_range)
    closed = (g < 0.5) if gn is None else (gn < params.keyframes.gripper_threshold)
    status = np.where(closed, "holding", "open").astype(object)
    status[closed & (g < params.empty_closed)] = "closed"
    return status


def _velocity(ee_pose: np.ndarray, fps: float, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed linear (T,3) m/s and angular (T,3) rad/s velocities in the base frame."""
    state = arm_state_from_pose(ee_pose)
    n = len(state)
    if n < 2:
        return np.zeros((n, 3)), np.zeros((n, 3))
    win = min(params.sg_window, n if n % 2 else n - 1)
    if win > params.sg_order:
        d = savgol_filter(state, win, params.sg_order, deriv=1, axis=0, mode="interp") * fps
    else:
        d = np.gradient(state, axis=0) * fps
    return d[:, :3], d[:, 3:]


def _speed_noise(ee_pose: np.ndarray, fps: float, params: SegmentParams) -> float:
    """Speed (m/s) that position noise alone shows after smoothing: 3σ of the SG derivative."""
    p = np.asarray(ee_pose, dtype=float)[:, :3]
    n = len(p)
    if n < 4:
        return 0.0
    sigma = 1.4826 * np.median(np.abs(np.diff(p, n=2, axis=0)), axis=0) / np.sqrt(6.0)
    win = min(params.sg_window, n if n % 2 else n - 1)
    if win <= params.sg_order:
        return 0.0
    gain = np.sqrt(np.sum(savgol_coeffs(win, params.sg_order, deriv=1) ** 2))
    return float(3.0 * np.linalg.norm(sigma) * gain * fps)


def _motion_speed(ee_pose: np.ndarray, fps: float, params: SegmentParams) -> tuple[np.ndarray, float]:
    """Per-frame motion speed (m/s; rotation counted at the lever arm) and the speed below which the
    arm counts as still (``still_speed`` or the noise floor, whichever is higher)."""
    v, w = _velocity(ee_pose, fps, params)
    speed = np.maximum(np.linalg.norm(v, axis=1), np.linalg.norm(w, axis=1) * params.lever)
    return speed, max(params.still_speed, _speed_noise(ee_pose, fps, params))


def motion_classes(ee_pose: np.ndarray, fps: float, params: SegmentParams = SegmentParams()) -> np.ndarray:
    v, w = _velocity(ee_pose, fps, params)
    still = max(params.still_speed, _speed_noise(ee_pose, fps, params))
    speed = np.linalg.norm(v, axis=1)
    ang = np.linalg.norm(w, axis=1) * params.lever
    horiz = np.linalg.norm(v[:, :2], axis=1)
    cls = np.full(len(v), STILL, dtype=object)
    moving = np.maximum(speed, ang) >= still
    rot = moving & (ang > speed)
    vert = moving & ~rot & (np.abs(v[:, 2]) > params.vertical_ratio * horiz)
    cls[moving & ~rot & ~vert] = HORIZ
    cls[vert & (v[:, 2] > 0)] = UP
    cls[vert & (v[:, 2] <= 0)] = DOWN
    cls[rot] = ROT
    return cls


def _arrival(speed: np.ndarray, still: float, end: int, lo: int, window: int, ratio: float) -> int:
    """First frame of the stop that ``end`` lies in: walking back from ``end``, the frame after the
    last one still moving at ``ratio`` × the peak speed of the motion that came before (a servoed
    arm creeps the last millimetres; it has arrived when the approach has all but died out)."""
    lo = max(0, lo)
    if end <= lo:
        return lo
    peak = float(speed[max(lo, end - window):end].max())
    thr = max(still, ratio * peak)
    a = end
    while a > lo and speed[a - 1] < thr:
        a -= 1
    return a


def _departure(speed: np.ndarray, still: float, start: int, hi: int, sustain: int = 3) -> int:
    """First frame at or after ``start`` where the arm moves again for ``sustain`` frames (``hi``
    when it does not): the fingers jostling the arm as they close are no departure."""
    moving = speed[start:hi] >= still
    for b in range(len(moving)):
        if moving[b:b + sustain].all():
            return start + b
    return hi


def _runs(labels: list) -> list[tuple[int, int, object]]:
    out = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append((start, i, labels[start]))
            start = i
    return out


def _absorb_short(labels: list, min_run: int) -> list:
    """Relabel runs shorter than ``min_run`` (and "still" runs) with the longer neighbouring run."""
    labels = list(labels)
    for _ in range(len(labels)):
        runs = _runs(labels)
        if len(runs) <= 1:
            break
        short = [(e - s, k) for k, (s, e, lab) in enumerate(runs) if e - s < min_run or lab == STILL]
        if not short:
            break
        _, k = min(short)
        s, e, lab = runs[k]
        left = runs[k - 1] if k > 0 else None
        right = runs[k + 1] if k + 1 < len(runs) else None
        cands = [r for r in (left, right) if r is not None and r[2] != STILL]
        if not cands:
            if lab == STILL and all(r[2] == STILL for r in runs):
                break
            cands = [r for r in (left, right) if r is not None]
        if lab == STILL and left is not None and left[2] != STILL:
            best = left  # a pause belongs to the motion that ended in it (waypoint dwell)
        else:
            best = max(cands, key=lambda r: r[1] - r[0])
        labels[s:e] = [best[2]] * (e - s)
    return labels


def _primitive_for(cls: str, status: str, pose: np.ndarray, w: np.ndarray, s: int, e: int,
                   params: SegmentParams) -> str:
    if cls == ROT:
        rot = Rotation.from_quat(pose[s:e, 3:7])
        tool_z = rot.apply([0.0, 0.0, 1.0])
        wm = w[s:e]
        cos = np.abs(np.sum(tool_z * wm, axis=1)) / np.maximum(np.linalg.norm(wm, axis=1), 1e-9)
        about_tool = float(np.median(cos)) >= params.tool_axis_cos
        if status == "holding":
            return "wrist_rotate" if about_tool else "reorient"
        return "rotate_free" if about_tool else "reorient_free"
    if status == "holding":
        return {UP: "lift", DOWN: "lower"}.get(cls, "transport")
    # A closed, empty gripper is only in contact where the episode works: at the lowest height the
    # tool reaches (the table, a button). Above that it is travelling (press_button closes the
    # gripper at the start and flies over), and contact cannot be told from state there.
    surface = float(pose[:, 2].min()) + params.contact_band
    if status == "closed" and float(pose[e - 1, 2]) <= surface:
        if cls == DOWN:
            return "press"
        if cls == HORIZ:
            p0, p1 = pose[s, :2], pose[e - 1, :2]
            radial = np.linalg.norm(p1) - np.linalg.norm(p0)
            return "push" if radial > 0 else "pull"
    return "move"


def _noise_sigma(x: np.ndarray) -> float:
    """Robust white-noise σ of a smooth signal (median absolute second difference)."""
    if len(x) < 4:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(x, n=2))) / np.sqrt(6.0))


def _acts_on_object(status: np.ndarray, kind: str, onset: int, settled: int, min_hold: int) -> bool:
    """Whether a gripper event is a grasp/place at all: a closing must end on something, an opening
    must release something held for ``min_hold`` frames. Fingers closing on nothing (readying a
    press) or opening at the start of a recording (nothing was picked up) are part of the
    surrounding free motion — LA4VLA's grasp and place are defined by the object they act on."""
    if kind == "gripper_close":
        return settled >= len(status) or status[settled] == "holding"
    held = 0
    while held < onset and status[onset - 1 - held] == "holding":
        held += 1
    return held >= min_hold


def _gripper_spans(gripper: np.ndarray, speed: np.ndarray, still: float, fps: float,
                   params: SegmentParams) -> list[tuple[int, int, str]]:
    """(start, end, "grasp"|"place") per gripper event.

    A span runs from the moment the action begins — ``gripper_lead`` before the fingers leave their
    level, but not before the arm arrived at the pose it acts at — over the finger ramp and the pause
    that follows, up to the frame the arm moves on (once the fingers are past half-way). The pause
    before the arm's arrival stays with the motion that ended there ("lower, then grasp").
    """
    events = gripper_keyframes(gripper, params.keyframes)
    gn = normalise_gripper(gripper, params.keyframes.min_gripper_range)
    n = len(gripper)
    if not events or gn is None:
        return []
    margin = max(params.finger_margin, 4.0 * _noise_sigma(gn))
    win = max(1, int(round(params.level_window * fps)))
    lead = int(round(params.gripper_lead * fps))
    frames = [ev.frame for ev in events]
    status = holding_status(gripper, params)
    spans: list[tuple[int, int, str]] = []
    for i, ev in enumerate(events):
        k = ev.frame
        prev_k = frames[i - 1] if i else 0
        next_k = frames[i + 1] if i + 1 < len(frames) else n
        before = float(np.median(gn[max(prev_k, k - win):k])) if k > prev_k else float(gn[k])
        after = float(np.median(gn[k:min(next_k, k + win)]))
        onset = k  # first frame the fingers are off their previous level
        while onset > prev_k and abs(gn[onset - 1] - before) > margin:
            onset -= 1
        settled = k  # first frame the fingers are at their new level
        while settled < next_k and abs(gn[settled] - after) > margin:
            settled += 1
        if not _acts_on_object(status, ev.kind, onset, settled, int(round(params.min_hold * fps))):
            continue
        lo = spans[-1][1] if spans else 0
        arrived = _arrival(speed, still, onset, lo, win, params.arrive_ratio)
        a = max(lo, min(onset, max(arrived, onset - lead)))
        # Ends when the arm moves on once the fingers are past half-way: a slow gripper (the FR3's)
        # may still be creeping to its end stop while the arm already leaves.
        b = max(_departure(speed, still, max(k, a), n), a + params.min_gripper_segment)
        b = min(b, n)
        if b > a:
            spans.append((a, b, "grasp" if ev.kind == "gripper_close" else "place"))
    return spans


def propose_labels(ee_pose: np.ndarray, gripper: np.ndarray, fps: float,
                   params: SegmentParams = SegmentParams()) -> list[tuple[int, int, str]]:
    """(start, end, primitive) runs covering [0, T) — the label layer of ``propose_segments``."""
    pose = np.asarray(ee_pose, dtype=float)
    g = np.asarray(gripper, dtype=float).ravel()
    n = len(pose)
    if n == 0:
        return []
    if len(g) != n:
        raise ValueError(f"gripper has {len(g)} frames, ee_pose has {n}")
    speed, still = _motion_speed(pose, fps, params)
    win = max(1, int(round(params.level_window * fps)))
    spans = _gripper_spans(g, speed, still, fps, params)
    labels: list = [None] * n
    for a, b, kind in spans:
        labels[a:b] = [kind] * (b - a)
    # Long pauses are "wait"; so is a shorter hold (``min_tail_wait``) that ends the episode — the
    # operator stopping before the recording does. Either starts where the motion before it has
    # settled, not merely arrived: the short dwell at a reached pose still belongs to the motion
    # (the expert's and a person's "lift, hold, then wait").
    waits = [(s0, e0) for s0, e0 in static_intervals(arm_state_from_pose(pose), params.keyframes)
             if e0 - s0 >= params.min_wait]
    last_move = _last_motion_end(speed >= still, params.min_run)
    if 0 < last_move < n:
        waits.append((last_move, n))
    for s0, e0 in waits:
        free = next((j for j in range(e0 - 1, s0 - 1, -1) if labels[j] is not None), s0 - 1) + 1
        if free >= e0:
            continue
        s0 = _arrival(speed, still, free, _last_label_end(labels, free), win, params.settle_ratio)
        if e0 - s0 >= (params.min_tail_wait if e0 == n else params.min_wait):
            labels[s0:e0] = ["wait"] * (e0 - s0)
    _, w = _velocity(pose, fps, params)
    cls = motion_classes(pose, fps, params)
    status = holding_status(g, params)
    # Label each free stretch (between gripper/wait segments) on its own.
    out: list[tuple[int, int, str]] = []
    i = 0
    while i < n:
        if labels[i] is not None:
            j = i
            while j < n and labels[j] == labels[i]:
                j += 1
            out.append((i, j, labels[i]))
            i = j
            continue
        j = i
        while j < n and labels[j] is None:
            j += 1
        stretch_cls = _absorb_short(list(cls[i:j]), params.min_run)
        for s, e, c in _runs(stretch_cls):
            s, e = s + i, e + i
            st = _majority(status[s:e])
            prim = "wait" if c == STILL else _primitive_for(c, st, pose, w, s, e, params)
            out.append((s, e, prim))
        i = j
    merged: list[tuple[int, int, str]] = []
    for s, e, p in out:
        if merged and merged[-1][2] == p and p not in ("grasp", "place"):
            merged[-1] = (merged[-1][0], e, p)
        else:
            merged.append((s, e, p))
    return merged


def _last_motion_end(moving: np.ndarray, min_frames: int) -> int:
    """End of the last run of at least ``min_frames`` moving frames (0 when there is none): a noise
    spike in a hold is not motion."""
    runs, count = connected_runs(moving)
    for r in range(count, 0, -1):
        idx = np.flatnonzero(runs == r)
        if len(idx) >= min_frames:
            return int(idx[-1]) + 1
    return 0


def _last_label_end(labels: list, before: int) -> int:
    """End of the last labelled frame before ``before`` (0 when there is none)."""
    j = before - 1
    while j >= 0 and labels[j] is None:
        j -= 1
    return j + 1


def _majority(values) -> str:
    vals, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return str(vals[np.argmax(counts)])


def propose_segments(ee_pose: np.ndarray, gripper: np.ndarray, fps: float,
                     params: SegmentParams = SegmentParams()) -> list[Segment]:
    """Auto segments with vision-agnostic instructions covering the whole episode."""
    pose = np.asarray(ee_pose, dtype=float)
    status = holding_status(gripper, params)
    stamp = now_iso()
    segs = []
    for s, e, prim in propose_labels(pose, gripper, fps, params):
        disp = pose[e - 1, :3] - pose[s, :3]
        sense = ""
        if prim in ("wrist_rotate", "rotate_free"):
            rel = Rotation.from_quat(pose[s, 3:7]).inv() * Rotation.from_quat(pose[e - 1, 3:7])
            # tool z points down at the table: positive rotation about it looks clockwise from above
            sense = "clockwise" if rel.as_rotvec()[2] > 0 else "counterclockwise"
        text = instruction(prim, disp, holding=_majority(status[s:e]) == "holding", rotation_sense=sense)
        segs.append(Segment(s, e, prim, text, source="auto", updated_at=stamp))
    return segs


def propose_doc(ee_pose: np.ndarray, gripper: np.ndarray, fps: float, annotator: str = "auto",
                params: SegmentParams = SegmentParams()) -> AnnotationDoc:
    return AnnotationDoc(annotator, len(ee_pose), tuple(propose_segments(ee_pose, gripper, fps, params)))


# ------------------------------------------------------------------------------------------------
# Evaluation against per-frame expert phases
# ------------------------------------------------------------------------------------------------


def phase_boundaries(phases) -> list[int]:
    """Frames where the per-frame phase label changes (the first frame of each new phase)."""
    p = [str(x) for x in phases]
    return [i for i in range(1, len(p)) if p[i] != p[i - 1]]


def phases_to_primitives(phases, gripper=None, params: SegmentParams = SegmentParams()) -> list[str]:
    """Expert phase names → primitives. With the gripper signal, lift/lower/transport with nothing
    in the fingers become "move" (LA4VLA: those primitives carry a held object)."""
    prims = [PHASE_TO_PRIMITIVE.get(str(p), str(p)) for p in phases]
    if gripper is not None:
        status = holding_status(gripper, params)
        prims = ["move" if p in ("lift", "lower", "transport") and st != "holding" else p
                 for p, st in zip(prims, status)]
    return prims


def primitive_boundaries(phases, gripper=None) -> list[int]:
    """Boundaries of the expert phases after mapping to primitives (adjacent "move"s are one)."""
    return phase_boundaries(phases_to_primitives(phases, gripper))


def label_agreement(pred: list[str], true: list[str]) -> float:
    """Share of frames whose predicted primitive equals the expert's (phase mapped to primitive)."""
    if len(pred) != len(true):
        raise ValueError(f"{len(pred)} predicted labels vs {len(true)} true")
    if not pred:
        return 1.0
    return float(np.mean([a == b for a, b in zip(pred, true)]))


@dataclass(frozen=True)
class ProposalScore:
    precision: float
    recall: float
    f1: float
    agreement: float


def score_proposals(doc: AnnotationDoc, phases, gripper=None, tol: int = 3) -> ProposalScore:
    """Boundary P/R/F1 (±tol frames) and per-frame label agreement against expert phases."""
    true = phases_to_primitives(phases, gripper)
    p, r, f = boundary_f1(doc.boundaries(), phase_boundaries(true), tol)
    return ProposalScore(p, r, f, label_agreement(doc.frame_labels(), true))
