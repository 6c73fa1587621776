"""Training data for the action expert: windows of (state history, guidance, action chunk, cloud).

Two sources feed the same ``Windows`` container:
- synthetic B-spline trajectories (random sparse waypoints in the workspace → spline → 20 Hz states and
  actions, guidance from a perturbed copy of the waypoints) for stage-1 action pre-training, no clouds;
- recorded episodes (recorder.episode.EpisodeReader or anything with its attribute names) with clouds
  from depth, cached per episode in a ``.npz`` beside the file so later epochs and runs skip the
  back-projection and FPS.
Everything is held as tensors and batched by index, so large stage-1 batches cost no DataLoader overhead.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from policies.action_expert import POSE_DIM, ExpertConfig
from policies.geometry import cloud_from_depth, pose7_to_9
from policies.waypoints import DemoKeyframeSource, Waypoint, WaypointTrajectory, gripper_transition_frames

# A reachable box in front of a table-mounted arm (base frame, metres); synthetic waypoints are drawn
# inside it and clouds are cropped to it unless the caller passes another.
DEFAULT_WORKSPACE = ((0.25, -0.35, 0.02), (0.75, 0.35, 0.50))
# Gripper pointing down (tool z along base -z): the usual orientation of table-top manipulation.
_TOP_DOWN = Rotation.from_euler("x", np.pi)


@dataclass
class Windows:
    state: torch.Tensor  # (M, n_obs, 10)
    guide: torch.Tensor  # (M, n_guide, 10)
    action: torch.Tensor  # (M, H, 10)
    cloud_index: torch.Tensor  # (M,) int64 into ``clouds``; -1 = no cloud
    clouds: torch.Tensor | None = None  # (F, N, 3)
    lang: torch.Tensor | None = None  # (M, lang_dim) instruction features; None = no language
    # (M, 3) base-frame position of the next gripper change (grasp, release) at or after the window's
    # frame, NaN where none follows; the keypoint head's auxiliary target. None = not known.
    target: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def has_clouds(self) -> bool:
        return self.clouds is not None and bool((self.cloud_index >= 0).any())

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu", with_cloud: bool = True) -> dict:
        out = {"state": self.state[idx].to(device), "guide": self.guide[idx].to(device),
               "action": self.action[idx].to(device)}
        if with_cloud and self.clouds is not None:
            ci = self.cloud_index[idx]
            out["cloud"] = self.clouds[ci.clamp(min=0)].to(device)
            out["has_cloud"] = (ci >= 0).to(device)
        if self.lang is not None:
            out["lang"] = self.lang[idx].to(device)
        if self.target is not None:
            out["target"] = self.target[idx].to(device)
        return out

    def pose_vectors(self, relative: bool = False) -> np.ndarray:
        """Every 10-D pose in the data (to fit the normaliser on); ``relative``: positions taken from
        each window's current arm position, as an ExpertConfig(relative=True) model sees them."""
        parts = [self.state, self.guide, self.action]
        if relative:
            origin = self.state[:, -1:, :3]
            parts = [torch.cat([p[..., :3] - origin, p[..., 3:]], dim=-1) for p in parts]
        return torch.cat([p.reshape(-1, POSE_DIM) for p in parts]).numpy()

    @staticmethod
    def concat(parts: Sequence["Windows"]) -> "Windows":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no training windows (empty data set)")
        clouds, index, offset = [], [], 0
        # Parts without language (synthetic, waypoint episodes) get zero features: "no instruction".
        dims = {int(p.lang.shape[1]) for p in parts if p.lang is not None}
        if len(dims) > 1:
            raise ValueError(f"windows carry instruction features of different sizes {sorted(dims)}")
        lang = None
        if dims:
            d = dims.pop()
            lang = torch.cat([p.lang if p.lang is not None else torch.zeros(len(p), d) for p in parts])
        target = None
        if any(p.target is not None for p in parts):
            target = torch.cat([p.target if p.target is not None else torch.full((len(p), 3), float("nan"))
                                for p in parts])
        for p in parts:
            ci = p.cloud_index.clone()
            if p.clouds is not None:
                ci[ci >= 0] += offset
                clouds.append(p.clouds)
                offset += p.clouds.shape[0]
            index.append(ci)
        return Windows(torch.cat([p.state for p in parts]), torch.cat([p.guide for p in parts]),
                       torch.cat([p.action for p in parts]), torch.cat(index),
                       torch.cat(clouds) if clouds else None, lang, target)


PRESS_PROMINENCE = 0.03  # m a commanded dip must go down and back up to count as a contact (a press)
PRESS_MERGE_FRAMES = 20  # a dip this close to a gripper change is that grasp / release itself


def contact_frames(action: np.ndarray) -> list[int]:
    """Frames where the demo makes contact: every gripper-command change (grasp, release) and every
    press — a dip of the commanded height by ``PRESS_PROMINENCE`` down and back up with the gripper
    unchanged (scipy ``find_peaks`` on −z: the middle of the dwell at the bottom)."""
    from scipy.signal import find_peaks

    action = np.asarray(action, dtype=np.float64)
    changes = [int(f) for f in gripper_transition_frames(action[:, 7])]
    dips, _ = find_peaks(-action[:, 2], prominence=PRESS_PROMINENCE, plateau_size=(1, None))
    presses = [int(d) for d in dips if all(abs(int(d) - c) > PRESS_MERGE_FRAMES for c in changes)]
    return sorted(changes + presses)


def next_gripper_change_targets(action: np.ndarray) -> np.ndarray:
    """(T, 3): for every frame, the commanded position of the next contact at or after the frame
    (:func:`contact_frames`: the grasp, the release, a button press), NaN after the last one — the
    keypoint head's target. ``action`` (T, 8) is pose7 + gripper as recorded."""
    action = np.asarray(action, dtype=np.float64)
    out = np.full((len(action), 3), np.nan)
    changes = contact_frames(action)
    start = 0
    for f in changes:
        f = int(f)
        if f < start:
            continue
        out[start:f + 1] = action[f, :3]
        start = f + 1
    return out


def _vec10(pose7: np.ndarray, grip: np.ndarray) -> np.ndarray:
    return np.concatenate([pose7_to_9(pose7), np.asarray(grip, dtype=np.float64)[..., None]], axis=-1)


def windows_from_trajectory(time: np.ndarray, ee_pose: np.ndarray, gripper: np.ndarray, action: np.ndarray,
                            guide_traj: WaypointTrajectory, cfg: ExpertConfig,
                            cloud_index: np.ndarray | None = None, clouds: np.ndarray | None = None) -> Windows:
    """One window per frame: state history ending at the frame, the next ``horizon`` commanded actions
    (the last repeated past the end, so the policy learns to stop), guidance sampled ahead of the
    frame's time on ``guide_traj``."""
    T = len(time)
    state = _vec10(np.asarray(ee_pose), np.asarray(gripper))  # (T, 10)
    act = _vec10(np.asarray(action)[:, :7], np.asarray(action)[:, 7])
    frames = np.arange(T)
    hist = np.clip(frames[:, None] + np.arange(-cfg.n_obs + 1, 1)[None], 0, T - 1)
    ahead = np.clip(frames[:, None] + np.arange(cfg.horizon)[None], 0, T - 1)
    ts = np.asarray(time)[:, None] + cfg.guide_horizon_s * np.arange(1, cfg.n_guide + 1)[None] / cfg.n_guide
    guide = _vec10(guide_traj.sample(ts), guide_traj.gripper(ts))
    ci = np.full(T, -1, dtype=np.int64) if cloud_index is None else np.asarray(cloud_index, dtype=np.int64)
    return Windows(torch.as_tensor(state[hist], dtype=torch.float32), torch.as_tensor(guide, dtype=torch.float32),
                   torch.as_tensor(act[ahead], dtype=torch.float32), torch.as_tensor(ci),
                   None if clouds is None else torch.as_tensor(clouds, dtype=torch.float32))


# --------------------------------------------------------------------------------------------
# Synthetic B-spline trajectories (stage 1)
# --------------------------------------------------------------------------------------------


def random_waypoints(rng: np.random.Generator, workspace=DEFAULT_WORKSPACE, n_min: int = 3,
                     n_max: int = 6) -> list[Waypoint]:
    """Random table-top-like waypoints: positions in the box, gripper mostly pointing down with a
    random yaw and a small tilt, gripper toggling at some waypoints, occasional dwells."""
    lo, hi = np.asarray(workspace[0]), np.asarray(workspace[1])
    n = int(rng.integers(n_min, n_max + 1))
    pos = rng.uniform(lo, hi, size=(n, 3))
    yaw = rng.uniform(-np.pi / 2, np.pi / 2, size=n)
    tilt = rng.normal(0, 0.15, size=(n, 2))
    rots = Rotation.from_euler("z", yaw[:, None]) * _TOP_DOWN * Rotation.from_euler("xy", tilt)
    quats = rots.as_quat()
    grip = 1.0
    out = []
    for i in range(n):
        if i > 0 and rng.random() < 0.4:
            grip = 1.0 - grip
        out.append(Waypoint(np.concatenate([pos[i], quats[i]]), grip, dwell=float(rng.choice([0.0, 0.0, 0.3]))))
    return out


def synthetic_trajectory(rng: np.random.Generator, rate_hz: float = 20.0, workspace=DEFAULT_WORKSPACE,
                         waypoint_noise: float = 0.005) -> dict:
    """A smooth demo through random waypoints: ``action`` is the spline sampled at the control rate,
    ``ee_pose`` trails it by one tick (as a servoed arm does), and ``guide`` is a spline through the
    same waypoints perturbed by ``waypoint_noise`` metres (waypoints are never exact)."""
    wps = random_waypoints(rng, workspace)
    speed = float(rng.uniform(0.06, 0.2))
    traj = WaypointTrajectory(wps, speed=speed)
    t = np.arange(0.0, traj.duration + 0.5, 1.0 / rate_hz)
    target = traj.sample(t)
    grip_cmd = traj.gripper(t)
    ee = np.concatenate([target[:1], target[:-1]])
    grip_state = np.concatenate([grip_cmd[:1], grip_cmd[:-1]])
    noisy = [Waypoint(np.concatenate([w.pose[:3] + rng.normal(0, waypoint_noise, 3), w.pose[3:]]), w.gripper,
                      t=float(tk)) for w, tk in zip(wps, traj.times[_first_knots(wps)])]
    guide = WaypointTrajectory(noisy)
    return {"time": t, "ee_pose": ee, "gripper": grip_state, "action": np.concatenate([target, grip_cmd[:, None]], 1),
            "guide": guide, "waypoints": wps}


def _first_knots(wps: Sequence[Waypoint]) -> np.ndarray:
    # Knot index of each waypoint's arrival (dwells add a second knot after it).
    idx, k = [], 0
    for w in wps:
        idx.append(k)
        k += 2 if w.dwell > 0 else 1
    return np.asarray(idx)


def synthetic_windows(n_trajectories: int, cfg: ExpertConfig, seed: int = 0,
                      workspace=DEFAULT_WORKSPACE) -> Windows:
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n_trajectories):
        tr = synthetic_trajectory(rng, cfg.rate_hz, workspace)
        parts.append(windows_from_trajectory(tr["time"], tr["ee_pose"], tr["gripper"], tr["action"], tr["guide"], cfg))
    return Windows.concat(parts)


# --------------------------------------------------------------------------------------------
# Recorded episodes (stage 2)
# --------------------------------------------------------------------------------------------


def _camera_field(camera: Any, name: str):
    return camera[name] if isinstance(camera, dict) else getattr(camera, name)


def episode_clouds(episode: Any, n_points: int, workspace=DEFAULT_WORKSPACE, stride: int = 2,
                   voxel: float = 0.005, cache: bool = True) -> np.ndarray:
    """(T, n_points, 3) clouds for every frame of an episode, cached in ``<episode>.clouds-<key>.npz``
    (the key hashes the parameters, so changing the crop or N never reuses a stale cache)."""
    cam = episode.camera
    if cam is None:
        raise ValueError(f"{getattr(episode, 'path', 'episode')}: recorded without a camera; clouds need depth")
    K = np.asarray(_camera_field(cam, "K"), dtype=np.float64)
    T_bc = np.asarray(_camera_field(cam, "T_base_camera"), dtype=np.float64)
    scale = float(_camera_field(cam, "depth_scale"))
    n = int(episode.n_frames)
    params = {"n": n_points, "table": True, "lo": list(map(float, workspace[0])),
              "hi": list(map(float, workspace[1])),
              "stride": stride, "voxel": voxel, "frames": n, "K": K.round(6).tolist(), "T": T_bc.round(6).tolist()}
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    path = getattr(episode, "path", None)
    cache_file = Path(f"{path}.clouds-{key}.npz") if (cache and path) else None
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file) as z:
            if z["clouds"].shape == (n, n_points, 3):
                return z["clouds"]
    clouds = np.stack([cloud_from_depth(episode.depth(i), scale, K, T_bc, workspace[0], workspace[1], n_points,
                                        stride=stride, voxel=voxel, seed=i) for i in range(n)])
    if cache_file is not None:
        tmp = cache_file.with_name(cache_file.name + ".tmp.npz")
        np.savez(tmp, clouds=clouds)
        tmp.replace(cache_file)
    return clouds


def perturb_waypoints(wps: Sequence[Waypoint], sigma: float, rng: np.random.Generator) -> list[Waypoint]:
    """The waypoints with Gaussian noise of std ``sigma`` (m, per axis) on every position but the first
    (the arm's start is measured, not predicted) — the imprecision app/rollout.py's ``waypoint_noise``
    and a real waypoint predictor give."""
    out = [wps[0]]
    for w in wps[1:]:
        pose = np.asarray(w.pose, dtype=np.float64).copy()
        pose[:3] += rng.normal(0.0, sigma, 3)
        out.append(dataclasses.replace(w, pose=pose))
    return out


def episode_windows(episode: Any, cfg: ExpertConfig, with_clouds: bool = True, workspace=DEFAULT_WORKSPACE,
                    cache: bool = True, waypoint_noise: float = 0.0, noise_variants: int = 0,
                    rng: np.random.Generator | None = None, knots: str = "keyframes") -> Windows:
    """Windows from one recorded episode; guidance is the spline through the episode's keyframes
    (gripper transitions when it has none), timed as recorded.

    ``noise_variants`` > 0 adds that many copies of every window whose guidance comes from the
    waypoints perturbed by :func:`perturb_waypoints` (std drawn per copy from U(0, ``waypoint_noise``)),
    while the target actions stay the demo's. Goal noise (``compute_loss``) jitters each guidance pose
    independently, which the model can average away; a displaced waypoint shifts the whole stretch of
    guidance around it, and only the point cloud tells where the object really is — this teaches
    the expert to correct imprecise waypoints instead of following them.

    ``knots="gripper"`` builds the guidance through the gripper transitions only (plus the first and
    last frame): the sparse waypoints of ``oracle-sparse`` rollouts, where the expert, not the
    spline, has to supply the approach."""
    if knots not in ("keyframes", "gripper"):
        raise ValueError(f"knots must be 'keyframes' or 'gripper', got {knots!r}")
    time = np.asarray(episode.time, dtype=np.float64)
    frames = None
    if knots == "gripper":
        action = getattr(episode, "action", None)
        frames = gripper_transition_frames(np.asarray(action)[:, 7] if action is not None else episode.gripper)
    wps = DemoKeyframeSource(episode, frames=frames).waypoints()
    clouds = episode_clouds(episode, cfg.n_points, workspace, cache=cache) if with_clouds else None
    ci = np.arange(len(time)) if clouds is not None else None
    args = (np.asarray(episode.ee_pose), np.asarray(episode.gripper), np.asarray(episode.action))
    clean = windows_from_trajectory(time, *args, WaypointTrajectory(wps), cfg, ci, clouds)
    clean.target = torch.as_tensor(next_gripper_change_targets(args[2]), dtype=torch.float32)
    if noise_variants <= 0 or waypoint_noise <= 0:
        return clean
    rng = rng or np.random.default_rng(0)
    guides = [clean.guide]
    for _ in range(noise_variants):
        noisy = perturb_waypoints(wps, float(rng.uniform(0.0, waypoint_noise)), rng)
        guides.append(windows_from_trajectory(time, *args, WaypointTrajectory(noisy), cfg).guide)
    k = len(guides)
    # The copies share the episode's clouds: only the guidance differs.
    return Windows(clean.state.repeat(k, 1, 1), torch.cat(guides), clean.action.repeat(k, 1, 1),
                   clean.cloud_index.repeat(k), clean.clouds, target=clean.target.repeat(k, 1))


def open_episodes(paths: Iterable[str | Path]) -> list[Any]:
    """Open episode files through recorder.episode.EpisodeReader (imported late: the recorder is
    optional for cloud-free synthetic training)."""
    from recorder.episode import EpisodeReader

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*.h5")) + sorted(p.glob("*.hdf5"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such episode file or folder")
    if not files:
        raise FileNotFoundError("no episode files (*.h5, *.hdf5) found in " + ", ".join(map(str, paths)))
    return [EpisodeReader(f) for f in files]


# --------------------------------------------------------------------------------------------
# Language-action windows (LA4VLA pre-training: instruction + state → actions, no vision)
# --------------------------------------------------------------------------------------------


def segment_windows(state8: np.ndarray, action8: np.ndarray, cfg: ExpertConfig, lang: np.ndarray | None = None,
                    frames: np.ndarray | None = None) -> Windows:
    """Windows inside one atomic segment: ``state8``/``action8`` (T, 8) pose7 + gripper of the
    segment's frames only. History and action chunk are clipped to the segment (the last action
    repeated past its end: the instruction says nothing about what follows). The guidance slots hold
    the current pose repeated — waypoint-agnostic, as the cloud is masked — so LA samples look like
    a run with neither vision nor waypoints. ``frames`` picks which frames get a window (all)."""
    state8, action8 = np.asarray(state8, dtype=np.float64), np.asarray(action8, dtype=np.float64)
    T = len(state8)
    if T == 0 or action8.shape != (T, 8) or state8.shape != (T, 8):
        raise ValueError(f"segment state/action must both be (T, 8) with T > 0, got {state8.shape} and {action8.shape}")
    state = _vec10(state8[:, :7], state8[:, 7])
    act = _vec10(action8[:, :7], action8[:, 7])
    f = np.arange(T) if frames is None else np.asarray(frames, dtype=int)
    hist = np.clip(f[:, None] + np.arange(-cfg.n_obs + 1, 1)[None], 0, T - 1)
    ahead = np.clip(f[:, None] + np.arange(cfg.horizon)[None], 0, T - 1)
    guide = np.repeat(state[f][:, None], cfg.n_guide, axis=1)
    lt = None
    if lang is not None:
        lt = torch.as_tensor(np.repeat(np.asarray(lang, dtype=np.float32)[None], len(f), axis=0))
    return Windows(torch.as_tensor(state[hist], dtype=torch.float32), torch.as_tensor(guide, dtype=torch.float32),
                   torch.as_tensor(act[ahead], dtype=torch.float32), torch.full((len(f),), -1, dtype=torch.int64),
                   None, lt)


def read_la_export(path: str | Path) -> list[dict]:
    """Records of ``python main.py export la`` (JSON lines: instruction, primitive, state (T, 8),
    action (T, 8), episode, start, end, …). A malformed line names the file and line."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as fh:
        for k, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                for key in ("instruction", "state", "action"):
                    if key not in rec:
                        raise KeyError(key)
            except (json.JSONDecodeError, KeyError) as exc:
                raise ValueError(f"{path.name}:{k}: not a language-action record ({type(exc).__name__}: {exc})") from None
            out.append(rec)
    return out


def la_records_from_episodes(paths: Iterable[str | Path], min_quality: float = 2.0,
                             include_unscored: bool = False) -> list[dict]:
    """The same records as the LA export, read straight from annotated episodes. Verified segments
    (quality ≥ ``min_quality``) as the export keeps them; ``include_unscored`` also takes segments no
    one has scored yet (fresh auto proposals, e.g. of scripted sim demos whose phases are known)."""
    from recorder.annotations import load_annotations
    from recorder.episode import EpisodeReader
    from recorder.export import find_episodes, verified_segments

    out = []
    for ep in find_episodes(paths):
        segs = [(v.segment, v.quality) for v in verified_segments(ep, min_quality)]
        if include_unscored:
            have = {(s.start, s.end) for s, _ in segs}
            docs = load_annotations(ep)
            for name in sorted(docs):
                for s in docs[name].segments:
                    if s.quality is None and (s.start, s.end) not in have:
                        segs.append((s, None))
                        have.add((s.start, s.end))
        if not segs:
            continue
        with EpisodeReader(ep) as r:
            ee, grip, action = np.asarray(r.ee_pose), np.asarray(r.gripper, dtype=np.float64), np.asarray(r.action)
            outcome = r.outcome
        for s, q in sorted(segs, key=lambda e: e[0].start):
            out.append({"instruction": s.instruction, "primitive": s.primitive, "quality": q,
                        "episode": Path(ep).name, "start": s.start, "end": s.end, "outcome": outcome,
                        "state": np.hstack([ee[s.start:s.end], grip[s.start:s.end, None]]),
                        "action": action[s.start:s.end]})
    return out


def load_la_records(paths: Iterable[str | Path], min_quality: float = 2.0, include_unscored: bool = False) -> list[dict]:
    """LA records from export files (``*.jsonl``) and/or episode files and folders."""
    out: list[dict] = []
    episodes: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix in (".jsonl", ".json"):
            out += read_la_export(p)
        elif p.is_dir() and any(p.glob("*.jsonl")) and not any(p.glob("*.h5")):
            for f in sorted(p.glob("*.jsonl")):
                out += read_la_export(f)
        else:
            episodes.append(p)
    if episodes:
        out += la_records_from_episodes(episodes, min_quality, include_unscored)
    return out


def la_windows(records: Sequence[dict], cfg: ExpertConfig, text_encoder: Any = None) -> Windows:
    """One window per frame of every LA record, each carrying its instruction's sentence feature
    (``text_encoder.encode``; default policies.text.TextEncoder, disk-cached)."""
    if not records:
        raise ValueError("no language-action segments (export with `main.py export la`, or score the "
                         "segments, or allow unscored auto segments)")
    from policies.text import feature_table

    feats = feature_table((r["instruction"] for r in records), text_encoder)
    return Windows.concat([segment_windows(np.asarray(r["state"]), np.asarray(r["action"]), cfg,
                                           feats[r["instruction"]]) for r in records])


def episode_lang_features(episode: Any, text_encoder: Any = None, min_quality: float = 2.0,
                          include_unscored: bool = False) -> np.ndarray:
    """(T, D) per-frame instruction features of an episode: the feature of the segment covering the
    frame, zeros where none does — for fine-tuning a language-conditioned expert on whole episodes
    (set ``windows.lang`` of :func:`episode_windows`, one window per frame)."""
    path = getattr(episode, "path", None)
    if path is None:
        raise ValueError("episode_lang_features needs an episode read from a file (it has no path)")
    if text_encoder is None:
        from policies.text import TextEncoder

        text_encoder = TextEncoder()
    recs = la_records_from_episodes([path], min_quality, include_unscored)
    out = np.zeros((int(episode.n_frames), int(getattr(text_encoder, "dim", 384))), dtype=np.float32)
    if recs:
        feats = text_encoder.encode([r["instruction"] for r in recs])
        out = np.zeros((int(episode.n_frames), feats.shape[1]), dtype=np.float32)
        for r, v in zip(recs, feats):
            out[r["start"]:r["end"]] = v
    return out


def synthetic_la_records(n: int, rate_hz: float = 20.0, seed: int = 0, workspace=DEFAULT_WORKSPACE) -> list[dict]:
    """Straight atomic motions from random states, each with its template instruction
    (recorder.primitives.instruction). In recorded demos the state gives the direction away (in
    pick_cube an open gripper always descends to the cube, a closed one always lifts), so a policy
    can ignore the words; these segments pair every kind of state with every direction, leaving
    the instruction as the only cue:
    - the dominant axis is one of the six base-frame directions, half of the motions with a smaller
      second/third component ("downward, left and forward", as recorded approaches read);
    - every phrasing of the direction, as recorded segments are labelled: holding (lift/lower when
      vertical, else transport), empty (move; press/push/pull for some);
    - the gripper opening drawn the same way whether holding or not — an empty gripper may be shut
      (pressing, pushing) and a held object may be as wide as the open gripper, so the opening says
      nothing about holding or about where to go. Recorded openings sit mostly at the ends (fully
      open at rest, shut): 30 % exactly 1, 20 % exactly 0, the rest uniform in [0, 1];
    - the tool pointing down with a random yaw, half of them exactly vertical (as scripted and most
      teleoperated grasps hold it), the others tilted a little."""
    from recorder.primitives import AXIS_WORDS, instruction

    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(workspace[0], float), np.asarray(workspace[1], float)
    out = []
    for k in range(n):
        axis, sign = int(rng.integers(3)), float(rng.choice([1.0, -1.0]))
        dist = float(rng.uniform(0.05, 0.15))
        d = np.zeros(3)
        d[axis] = sign
        if rng.random() < 0.5:  # secondary components stay below the dominant one, which is named first
            others = [a for a in range(3) if a != axis]
            d[others] = rng.uniform(-0.8, 0.8, 2) * (rng.random(2) < 0.7)
        d *= dist  # the dominant component moves dist, the others less
        holding = bool(rng.random() < 0.5)
        # Labelled as recorder/segments.py labels recorded motions: holding → lift/lower when
        # vertical, else transport; empty → move, or press/push/pull when in contact (a fifth of them).
        if holding:
            prim = ("lift" if sign > 0 else "lower") if axis == 2 else "transport"
        elif rng.random() < 0.2 and (axis == 0 or (axis == 2 and sign < 0)):
            prim = "press" if axis == 2 else ("push" if sign > 0 else "pull")
        else:
            prim = "move"
        end = np.clip(rng.uniform(lo, hi) + d, lo, hi)
        start = end - d  # keep the full motion inside the box
        dur = dist / float(rng.uniform(0.08, 0.2))
        t = np.arange(0.0, dur + 0.3, 1.0 / rate_hz)
        s = np.clip(t / dur, 0, 1)
        pos = start + np.outer(10 * s**3 - 15 * s**4 + 6 * s**5, d)  # minimum-jerk profile
        tilt = Rotation.from_rotvec(np.r_[rng.normal(0, 0.1, 2) * (rng.random() < 0.5), 0.0])
        quat = (Rotation.from_euler("z", rng.uniform(-np.pi / 2, np.pi / 2)) * tilt * _TOP_DOWN).as_quat()
        target = np.hstack([pos, np.repeat(quat[None], len(t), 0)])
        ee = np.concatenate([target[:1], target[:-1]])  # the arm trails the command by one tick
        g = np.full((len(t), 1), float(rng.choice([1.0, 0.0, rng.uniform(0.0, 1.0)], p=[0.3, 0.2, 0.5])))
        out.append({"instruction": instruction(prim, d, holding=holding), "primitive": prim,
                    "episode": f"synthetic-{k}", "start": 0, "end": len(t), "quality": None,
                    "state": np.hstack([ee, g]), "action": np.hstack([target, g]),
                    "direction": AXIS_WORDS[axis][0 if sign > 0 else 1]})
    return out
