"""Keyframe detection from robot state (LA4VLA appendix 7.1).

Two kinds of hints, both pure functions of arrays:

* gripper transitions — the normalised gripper signal is scanned with a window on each side of
  every frame; a frame is a candidate when the two window means straddle the threshold. Each run of
  candidates yields one keyframe at the frame where the before/after contrast peaks, i.e. the centre
  of the open↔close ramp. Events closer than ``min_separation`` frames are treated as noise.
* static intervals — adjacent-frame arm-state differences are Savitzky–Golay smoothed, normalised
  per channel (symmetric min–max) and aggregated into a motion magnitude; a frame is static when the
  magnitude is below an adaptive threshold and enough of its local window is too. Consecutive
  static frames merge into intervals whose midpoints are the static keyframes.

Frame indices are 0-based positions in the episode arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import label as connected_runs, median_filter
from scipy.signal import savgol_coeffs, savgol_filter
from scipy.spatial.transform import Rotation

KINDS = ("static", "gripper_open", "gripper_close")


@dataclass(frozen=True)
class Keyframe:
    frame: int
    kind: str  # one of KINDS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"keyframe kind {self.kind!r} is not one of {KINDS}")


@dataclass(frozen=True)
class KeyframeParams:
    # gripper transitions
    gripper_threshold: float = 0.5   # on the min–max normalised signal
    gripper_window: int = 3          # frames on each side
    min_separation: int = 10         # frames between two transition events
    min_gripper_range: float = 0.05  # normalised units: less change than this means "never moved"
    # static intervals
    sg_window: int = 7               # Savitzky–Golay window (odd, frames)
    sg_order: int = 2
    threshold_ratio: float = 0.15    # static when motion < ratio × mean motion (adaptive) …
    noise_factor: float = 2.5        # … and below noise_factor × the estimated noise-only motion
    static_window: int = 5           # local window for the "enough low-motion frames" test
    window_ratio: float = 0.8        # share of that window that must be low-motion
    min_static: int = 3              # shortest static interval kept (frames)
    # channels whose largest step is below this never "move": their noise must not be normalised
    # up to full scale (same units as the arm state, per frame)
    channel_floor: tuple[float, ...] = field(default=(2e-4, 2e-4, 2e-4, 1e-3, 1e-3, 1e-3))


def normalise_gripper(gripper: np.ndarray, min_range: float = 0.05) -> np.ndarray | None:
    """Min–max normalised gripper signal, or None when it never changes meaningfully."""
    g = np.asarray(gripper, dtype=float).ravel()
    if g.size == 0 or not np.isfinite(g).all():
        return None
    lo, hi = float(g.min()), float(g.max())
    if hi - lo < min_range:
        return None
    return (g - lo) / (hi - lo)


def gripper_keyframes(gripper: np.ndarray, params: KeyframeParams = KeyframeParams()) -> list[Keyframe]:
    """Open/close transitions of a gripper signal (0 = closed … 1 = open)."""
    g = normalise_gripper(gripper, params.min_gripper_range)
    if g is None:
        return []
    w, thr, n = params.gripper_window, params.gripper_threshold, len(g)
    csum = np.concatenate([[0.0], np.cumsum(g)])
    t = np.arange(w, n - w + 1)  # frames with a full window on both sides
    if t.size == 0:
        return []
    before = (csum[t] - csum[t - w]) / w     # mean of g[t-w : t]
    after = (csum[t + w] - csum[t]) / w      # mean of g[t : t+w]
    straddle = ((before < thr) & (after >= thr)) | ((before >= thr) & (after < thr))
    runs, count = connected_runs(straddle)
    smooth = median_filter(g, size=3, mode="nearest")
    events: list[Keyframe] = []
    for r in range(1, count + 1):
        idx = np.flatnonzero(runs == r)
        contrast = np.abs(after[idx] - before[idx])
        best = idx[contrast == contrast.max()]
        k = int(t[best[len(best) // 2]])  # middle of a plateau of equal contrast
        opening = after[best[0]] > before[best[0]]
        kind = "gripper_open" if opening else "gripper_close"
        # On a ramp longer than the windows the contrast is flat and noise picks the peak; the
        # threshold crossing of the denoised signal near it is the well-defined instant.
        k = _nearest_crossing(smooth, k, w, thr, opening)
        if events and k - events[-1].frame < params.min_separation:
            continue
        events.append(Keyframe(k, kind))
    return events


def _nearest_crossing(g: np.ndarray, k: int, w: int, thr: float, opening: bool) -> int:
    """First frame past ``thr`` (in the event's direction) closest to ``k``, within ±w; else k."""
    lo, hi = max(1, k - w), min(len(g), k + w + 1)
    f = np.arange(lo, hi)
    if opening:
        hits = f[(g[f - 1] < thr) & (g[f] >= thr)]
    else:
        hits = f[(g[f - 1] >= thr) & (g[f] < thr)]
    return int(hits[np.argmin(np.abs(hits - k))]) if hits.size else k


def arm_state_from_pose(ee_pose: np.ndarray) -> np.ndarray:
    """(T, 6) arm state — position and an unwrapped rotation vector — from (T, 7) xyz + quat xyzw.

    Quaternion components jump at sign flips; accumulating the per-frame relative rotations gives a
    continuous orientation channel whose differences are the angular steps.
    """
    pose = np.asarray(ee_pose, dtype=float)
    if pose.ndim != 2 or pose.shape[1] != 7:
        raise ValueError(f"ee_pose must be (T, 7), got {pose.shape}")
    if len(pose) == 0:
        return np.zeros((0, 6))
    rot = Rotation.from_quat(pose[:, 3:7])
    steps = (rot[:-1].inv() * rot[1:]).as_rotvec() if len(pose) > 1 else np.zeros((0, 3))
    steps_base = rot[:-1].apply(steps) if len(steps) else steps  # express in the base frame
    ang = np.vstack([np.zeros((1, 3)), np.cumsum(steps_base, axis=0)])
    return np.hstack([pose[:, :3], ang])


def motion_magnitude(arm_state: np.ndarray, params: KeyframeParams = KeyframeParams(),
                     weights: np.ndarray | None = None) -> np.ndarray:
    """(T,) scalar motion per frame: SG-smoothed, per-channel normalised, weighted mean |Δstate|."""
    s = np.asarray(arm_state, dtype=float)
    if s.ndim != 2:
        raise ValueError(f"arm state must be (T, D), got {s.shape}")
    n, d = s.shape
    if n < 2:
        return np.zeros(n)
    diff = np.diff(s, axis=0)
    diff = np.vstack([diff, diff[-1:]])  # motion at frame t = s[t+1]-s[t]; repeat the last
    win = min(params.sg_window, n if n % 2 else n - 1)
    if win > params.sg_order:
        diff = savgol_filter(diff, win, params.sg_order, axis=0, mode="interp")
    scale = np.abs(diff).max(axis=0)
    floor = np.resize(np.asarray(params.channel_floor, dtype=float), d)
    active = scale > floor
    w = np.ones(d) if weights is None else np.asarray(weights, dtype=float).copy()
    w = np.where(active, w, 0.0)
    if w.sum() <= 0:
        return np.zeros(n)
    norm = np.abs(diff) / np.where(active, scale, 1.0)
    return norm @ (w / w.sum())


def noise_magnitude(arm_state: np.ndarray, params: KeyframeParams = KeyframeParams(),
                    weights: np.ndarray | None = None) -> float:
    """Motion magnitude that sensor noise alone would produce (same units as motion_magnitude).

    Per-channel noise σ comes from the median absolute second difference (smooth motion barely
    contributes at control rates); it passes through the same smoothing and normalisation.
    """
    s = np.asarray(arm_state, dtype=float)
    n, d = s.shape
    if n < 4:
        return 0.0
    diff = np.diff(s, axis=0)
    sigma = 1.4826 * np.median(np.abs(np.diff(diff, axis=0)), axis=0) / np.sqrt(6.0)
    win = min(params.sg_window, n - 1 if (n - 1) % 2 else n - 2)
    # white noise of std σ: differences have std σ√2; SG smoothing scales that by the filter's gain
    gain = np.sqrt(np.sum(savgol_coeffs(win, params.sg_order) ** 2)) if win > params.sg_order else 1.0
    scale = np.abs(savgol_filter(diff, win, params.sg_order, axis=0, mode="interp") if win > params.sg_order else diff).max(axis=0)
    floor = np.resize(np.asarray(params.channel_floor, dtype=float), d)
    active = scale > floor
    w = np.ones(d) if weights is None else np.asarray(weights, dtype=float).copy()
    w = np.where(active, w, 0.0)
    if w.sum() <= 0:
        return 0.0
    # E|N(0, v)| = v·sqrt(2/π)
    per_channel = sigma * np.sqrt(2.0) * gain * np.sqrt(2 / np.pi) / np.where(active, scale, 1.0)
    return float(per_channel @ (w / w.sum()))


def static_intervals(arm_state: np.ndarray, params: KeyframeParams = KeyframeParams(),
                     weights: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Near-stationary intervals as (start, end) frame pairs, end exclusive."""
    m = motion_magnitude(arm_state, params, weights)
    n = len(m)
    if n == 0:
        return []
    if not np.any(m > 0):
        return [(0, n)]
    # Adaptive: a share of the episode's mean motion, but never inside the sensor-noise band.
    tau = max(params.threshold_ratio * float(m.mean()), params.noise_factor * noise_magnitude(arm_state, params, weights))
    low = m < tau
    half = params.static_window // 2
    k = 2 * half + 1
    share = np.convolve(low.astype(float), np.ones(k) / k, mode="same")
    candidate = low & (share >= params.window_ratio)
    runs, count = connected_runs(candidate)
    out = []
    for r in range(1, count + 1):
        idx = np.flatnonzero(runs == r)
        if len(idx) >= params.min_static:
            out.append((int(idx[0]), int(idx[-1]) + 1))
    return out


def static_keyframes(arm_state: np.ndarray, params: KeyframeParams = KeyframeParams()) -> list[Keyframe]:
    return [Keyframe((a + b - 1) // 2, "static") for a, b in static_intervals(arm_state, params)]


def detect_keyframes(ee_pose: np.ndarray, gripper: np.ndarray,
                     params: KeyframeParams = KeyframeParams()) -> list[Keyframe]:
    """All keyframes of an episode, sorted by frame (static first on ties)."""
    state = arm_state_from_pose(ee_pose)
    kfs = static_keyframes(state, params) + gripper_keyframes(gripper, params)
    return sorted(kfs, key=lambda k: (k.frame, KINDS.index(k.kind)))


def format_events(keyframes: list[Keyframe], time: np.ndarray) -> str:
    """Timestamped hints as in LA4VLA's prompt ("- 1.20s: gripper_close")."""
    return "\n".join(f"- {float(time[k.frame]):.2f}s: {k.kind}" for k in keyframes)


def write_keyframes(path, keyframes: list[Keyframe]) -> None:
    """Store keyframes as /keyframes/index (int64) + /keyframes/kind (str), replacing old ones.

    A structural HDF5 change, so it is made on a copy that atomically replaces the episode
    (recorder.annotations.rebuild_with_store): a crash leaves the previous file intact.
    """
    import h5py

    from .annotations import rebuild_with_store

    def put(f):
        if "keyframes" in f:
            del f["keyframes"]
        g = f.create_group("keyframes")
        g.create_dataset("index", data=np.array([k.frame for k in keyframes], dtype=np.int64))
        g.create_dataset("kind", data=np.array([k.kind for k in keyframes], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))

    rebuild_with_store(path, None, 0, extra=put)
