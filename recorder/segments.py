"""Segment proposals from robot state: keyframes + the motion between them → labelled segments.

Pipeline (pure functions on arrays; ``propose_segments`` is the entry point):

1. Gripper events (recorder.keyframes) become gripper segments — ``grasp`` for a close,
   ``place`` for an open after holding — spanning the open↔close ramp and the near-stationary
   interval the arm usually pauses in while the fingers move.
2. Long static intervals elsewhere become ``wait``; short ones are cut points.
3. Every remaining frame gets a motion class from its smoothed velocity: up / down / horizontal /
   rotation (angular speed × lever arm beats linear speed) / still. Runs shorter than ``min_run``
   are absorbed by their neighbours, so spline blends at waypoints do not produce slivers.
4. Each run is labelled from the motion class and the gripper status (holding an object, open and
   empty, or closed on nothing): holding → lift / lower / transport / wrist_rotate / reorient;
   open → move / rotate_free / reorient_free; closed on nothing → press (down), push / pull
   (horizontal, away from / toward the robot base), move otherwise.
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
    attach_static: int = 6      # a static interval this close (frames) to a gripper event belongs to it
    include_pre_pause: bool = False  # start a grasp/place at the pause before the fingers move
    ramp_band: float = 0.08     # the gripper is "moving" while its normalised value is inside (band, 1-band)
    min_gripper_segment: int = 3
    min_wait: int = 20          # static intervals at least this long (frames) are "wait" segments
    min_run: int = 5            # shortest motion run kept before absorbing into neighbours
    still_speed: float = 0.004  # m/s below which a frame has no direction of its own
    lever: float = 0.10         # m: compares angular (rad/s × lever) with linear speed
    vertical_ratio: float = 1.0  # |vz| > ratio × |vxy| → up/down
    tool_axis_cos: float = 0.8  # rotation about the tool z axis → wrist_rotate / rotate_free
    empty_closed: float = 0.03  # raw gripper opening below this while closed = nothing in the fingers
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
    if status == "closed":
        if cls == DOWN:
            return "press"
        if cls == HORIZ:
            p0, p1 = pose[s, :2], pose[e - 1, :2]
            radial = np.linalg.norm(p1) - np.linalg.norm(p0)
            return "push" if radial > 0 else "pull"
    return "move"


def _gripper_spans(gripper: np.ndarray, statics: list[tuple[int, int]], n: int,
                   params: SegmentParams) -> list[tuple[int, int, str]]:
    events = gripper_keyframes(gripper, params.keyframes)
    gn = normalise_gripper(gripper, params.keyframes.min_gripper_range)
    spans = []
    for ev in events:
        k = ev.frame
        a, b = k, k + 1
        # extend over the ramp: frames where the fingers are between the two levels
        while a > 0 and params.ramp_band < gn[a - 1] < 1 - params.ramp_band:
            a -= 1
        while b < n and params.ramp_band < gn[b] < 1 - params.ramp_band:
            b += 1
        # The pause in which the fingers move belongs to the gripper action from the moment they
        # start moving; the pause before it (alignment) stays with the motion that ended there,
        # unless ``include_pre_pause``.
        for s0, e0 in statics:
            if s0 - params.attach_static <= b and e0 + params.attach_static >= a:
                b = max(b, e0)
                if params.include_pre_pause:
                    a = min(a, s0)
        kind = "grasp" if ev.kind == "gripper_close" else "place"
        if spans and a < spans[-1][1]:  # overlapping events: split the overlap at the midpoint
            mid = (a + spans[-1][1]) // 2
            spans[-1] = (spans[-1][0], max(spans[-1][0] + 1, mid), spans[-1][2])
            a = spans[-1][1]
        if b > a:
            spans.append((a, b, kind))
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
    statics = static_intervals(arm_state_from_pose(pose), params.keyframes)
    spans = _gripper_spans(g, statics, n, params)
    labels: list = [None] * n
    for a, b, kind in spans:
        labels[a:b] = [kind] * (b - a)
    for s0, e0 in statics:
        if e0 - s0 >= params.min_wait and all(lab is None for lab in labels[s0:e0]):
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
