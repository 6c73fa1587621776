"""CLAP-style keypoint predictor (coarse branch): cloud + step instruction → the 3D keypoint where the
step ends, and the "predicted" waypoint source built on it.

Data: every segment of an annotated episode (verified segments when there are any, else the auto
proposals; ``wait`` segments carry no motion and are skipped) is one step. Its target is the EE
position at the segment's last frame, plus the gripper state and the tool yaw there. The input is the
workspace-cropped, farthest-point-sampled cloud (base frame) at the step's start frame — and, because
the waypoint source predicts a whole plan from the one cloud it has at the trial's start, also the
cloud of the episode's first frame.

Language: as in CLAP (eq. 4) the step is conditioned on its own instruction *and* the previous step's
(``INITIAL_STATE`` before the first), which tells two identical instructions apart ("move the gripper
in free space" to the object, and away after placing). Each step is seen with its recorded instruction
and with its plan form — the instruction template without the hindsight direction words — because a
plan made before the motion cannot know them (recorder.primitives.instruction(primitive, None)).

Model: PointNet per-point features ⊕ global max-pool, modulated by the text features (FiLM), give per
point a heat logit and a 3-D offset; the keypoint is Σ softmax_i · (p_i + offset_i). Loss as CLAP's
coarse branch: cross-entropy against a Gaussian heat (σ = 2 cm) around the target + L1 on the offsets
of the points nearest to it, plus L1 on the fused keypoint, BCE on the gripper and a 4-fold-symmetric
yaw term (a cube grasp is the same every 90°). No Qt here.

Size (~730 lines): the keypoint predictor's data (steps from segments, clouds), model, loss
and inference for one checkpoint format; split it when a second predictor shares parts of it.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn
from torch.nn import functional as F

from policies.action_expert import coarse_keypoint_terms
from policies.colour_swap import MAX_CUES, ColourSwap, colour_cues, named_colours
from policies.datasets import DEFAULT_WORKSPACE
from policies.geometry import crop_above_table, depth_to_points, farthest_point_sample, voxel_downsample
from policies.waypoints import Waypoint

INITIAL_STATE = "the robot is currently at the initial state"  # CLAP's ℓ̂ before the first step
TOOL_DOWN = Rotation.from_quat([1.0, 0.0, 0.0, 0.0])  # robots.sim.tasks.TOOL_DOWN (the oracle's convention)
# Hold times after arriving, as the oracle's waypoints have them (robots/sim/tasks.py): the gripper
# needs them to close or open, and the lift/lower pauses settle the object.
DWELL = {"grasp": 0.8, "place": 0.6, "lift": 0.2, "lower": 0.2, "press": 0.3}
MIN_GRIPPER_DWELL = 0.6
CHECKPOINT_KIND = "actstudio.keypoints"
CHECKPOINT_VERSION = 1


class KeypointError(ValueError):
    """Bad keypoint data, checkpoint or input (one-line message)."""


# --------------------------------------------------------------------------------------------
# Steps and samples
# --------------------------------------------------------------------------------------------


def plan_instruction(primitive: str, holding: bool = False) -> str:
    """The step instruction a plan can state before the motion: the template without directions."""
    from recorder.primitives import instruction

    return instruction(primitive, None, holding=holding)


@dataclass
class Step:
    start: int
    end: int  # exclusive, as recorder.annotations.Segment
    primitive: str
    instruction: str
    plan: str  # plan_instruction of the same primitive
    target: np.ndarray  # (3,) commanded EE position at frame end-1 (measured without actions)
    gripper: float  # 1 open / 0 closed at frame end-1
    yaw: float  # tool yaw about base z at frame end-1 (rad)


def tool_yaw(quat: np.ndarray) -> float:
    """Yaw of a (roughly) top-down tool: the z rotation that maps TOOL_DOWN onto it."""
    r = Rotation.from_quat(np.asarray(quat, dtype=np.float64)) * TOOL_DOWN.inv()
    return float(r.as_euler("ZYX")[0])


def first_fresh_frame(episode: Any, window_s: float = 4.0, min_share: float = 0.06) -> int:
    """First frame whose camera image shows the reset scene.

    A recording starts right after the lab's reset, but the camera keeps delivering the image it took
    before it until its next render (on these loaded boxes up to ~2.5 s: the sim datasets begin with
    3–53 frames of the previous episode's final scene). The reset moves the arm and every object at
    once: ≥ 6 % of the pixels jump by more than 2 cm (measured 6.5–13 %), while the arm moving changes
    ≤ 5 %. The first such jump in the first ``window_s`` seconds ends the stale prefix; without one
    the first frame is taken as fresh.
    """
    if getattr(episode, "camera", None) is None:
        return 0
    fps = float(getattr(episode, "meta", {}).get("fps", 20.0) or 20.0)
    n = min(int(episode.n_frames), max(2, int(window_s * fps)))
    jump = 0.02 / float(episode.camera.depth_scale)
    prev = episode.depth(0)[::4, ::4].astype(np.float32)
    for i in range(1, n):
        cur = episode.depth(i)[::4, ::4].astype(np.float32)
        if float(np.mean(np.abs(cur - prev) > jump)) >= min_share:
            return i
        prev = cur
    return 0


def _segments(episode: Any) -> list[dict]:
    """Verified segments (quality ≥ 2, recorder.export's rule) when the episode has any, else the
    auto proposals; dicts with start, end, primitive, instruction."""
    from recorder.export import verified_segments

    try:
        verified = verified_segments(episode.path)
    except Exception:  # no annotation store, or an export error: fall back to the proposals
        verified = []
    if verified:
        return [{"start": v.segment.start, "end": v.segment.end, "primitive": v.segment.primitive,
                 "instruction": v.segment.instruction} for v in verified]
    ann = episode.annotations
    segs = ann.get("auto") or next(iter(ann.values()), None)
    if not segs:
        raise KeypointError(f"{Path(getattr(episode, 'path', 'episode')).name}: no segments "
                            "(run `main.py annotate-propose` first)")
    return list(segs)


def episode_steps(episode: Any) -> list[Step]:
    """The episode's steps in order (``wait`` skipped); each step's target is the commanded pose at
    its last frame (the measured one for episodes recorded without actions)."""
    from recorder.keyframes import normalise_gripper
    from recorder.segments import holding_status

    # A step's target is where the arm was *commanded* to be at its end (the recorded action), as the
    # expert's guidance is (DemoKeyframeSource): the measured pose stops short wherever the arm
    # meets resistance — the FR3's impedance halts ~2 mm above a commanded press, and a predictor that
    # learnt the reached height commanded a press too shallow to register.
    action = getattr(episode, "action", None)
    pose = np.asarray(action if action is not None else episode.ee_pose, dtype=np.float64)[:, :7]
    grip_raw = np.asarray(episode.gripper, dtype=np.float64)
    gn = normalise_gripper(grip_raw)
    grip = (grip_raw > 0.5) if gn is None else (gn > 0.5)
    status = holding_status(grip_raw)
    n = len(pose)
    steps = []
    for s in _segments(episode):
        a, b, prim = int(s["start"]), int(s["end"]), str(s["primitive"])
        if prim == "wait" or b <= a:
            continue
        e = min(max(b - 1, 0), n - 1)
        # The majority over the segment, as the segmenter labels it: episodes may start with the
        # fingers still closed from the previous reset, which is no "holding".
        holding = bool(np.mean(status[a:min(b, n)] == "holding") > 0.5)
        text = str(s.get("instruction") or "") or plan_instruction(prim, holding)
        steps.append(Step(a, b, prim, text, plan_instruction(prim, holding), pose[e, :3].copy(), float(grip[e]),
                          tool_yaw(pose[e, 3:])))
    return steps


def colour_cloud(depth: np.ndarray, rgb: np.ndarray, depth_scale: float, K: np.ndarray, T_base_camera: np.ndarray,
                 lo, hi, n: int = 1024, stride: int = 2, voxel: float = 0.005, seed: int = 0) -> np.ndarray:
    """policies.geometry.cloud_from_depth's pipeline (back-project → crop above the table → voxel → FPS)
    with the colour riding along: (n, 6) xyz + rgb in [0, 1]. Colour is what tells the red cube from the green one; the
    sim scenes hold several cubes of the same shape."""
    pts = depth_to_points(depth, depth_scale, K, T_base_camera, rgb=rgb, stride=stride)
    pts = voxel_downsample(crop_above_table(pts, lo, hi)[0], voxel)
    return farthest_point_sample(pts, n, seed=seed).astype(np.float32)


def frame_clouds(episode: Any, frames: Sequence[int], n_points: int = 1024, workspace=DEFAULT_WORKSPACE,
                 cache: bool = True) -> dict[int, np.ndarray]:
    """Colour clouds (n_points, 6) of selected frames (``colour_cloud``, seeded with the frame index as
    policies.datasets.episode_clouds does), cached beside the episode in ``<episode>.kpclouds-<key>.npz``
    (the key hashes the parameters)."""
    cam = episode.camera
    if cam is None:
        raise KeypointError(f"{Path(getattr(episode, 'path', 'episode')).name}: recorded without a camera; "
                            "keypoints need depth")
    K = np.asarray(cam.K, dtype=np.float64)
    T = np.asarray(cam.T_base_camera, dtype=np.float64)
    params = {"n": n_points, "rgb": True, "table": True, "lo": list(map(float, workspace[0])),
              "hi": list(map(float, workspace[1])), "frames": int(episode.n_frames), "K": K.round(6).tolist(),
              "T": T.round(6).tolist()}
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    path = getattr(episode, "path", None)
    cache_file = Path(f"{path}.kpclouds-{key}.npz") if (cache and path) else None
    have: dict[int, np.ndarray] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            with np.load(cache_file) as z:
                have = {int(f): c for f, c in zip(z["frames"], z["clouds"])}
        except (OSError, ValueError, KeyError):
            have = {}  # a torn cache is rebuilt
    missing = sorted({int(f) for f in frames} - set(have))
    for f in missing:
        have[f] = colour_cloud(episode.depth(f), episode.rgb(f), float(cam.depth_scale), K, T, workspace[0],
                               workspace[1], n_points, seed=f)
    if missing and cache_file is not None:
        keys = sorted(have)
        tmp = cache_file.with_name(cache_file.name + ".tmp.npz")
        np.savez(tmp, frames=np.asarray(keys), clouds=np.stack([have[k] for k in keys]))
        tmp.replace(cache_file)
    return {int(f): have[int(f)] for f in frames}


@dataclass
class KeypointData:
    """Samples as arrays: cloud (M,N,3), text ids (M,) and previous-text ids (M,) into ``texts``,
    target (M,3), gripper (M,), yaw (M,), episode index (M,), step index (M,), from_start (M,) bool
    (cloud of the episode's first frame rather than of the step's start)."""

    clouds: np.ndarray
    text: np.ndarray
    prev: np.ndarray
    target: np.ndarray
    gripper: np.ndarray
    yaw: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    from_start: np.ndarray
    plan_form: np.ndarray  # the text is the plan template (not the recorded instruction)
    texts: list[str]
    episode_names: list[str]
    plans: dict[str, list[dict]] = field(default_factory=dict)  # task → [{primitive, instruction}]
    # (M,) id into ``texts`` of the episode's task instruction ("put the red cube in the bin"), and
    # task → that instruction: what tells one task's "transport" from another's.
    task: np.ndarray | None = None
    task_instructions: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, mask: np.ndarray) -> "KeypointData":
        m = np.asarray(mask, dtype=bool)
        return KeypointData(self.clouds[m], self.text[m], self.prev[m], self.target[m], self.gripper[m], self.yaw[m],
                            self.episode[m], self.step[m], self.from_start[m], self.plan_form[m], self.texts,
                            self.episode_names, self.plans, None if self.task is None else self.task[m],
                            self.task_instructions)


def task_plan(step_lists: Iterable[list[Step]]) -> list[dict]:
    """The most common primitive sequence over a task's episodes, as plan steps."""
    seqs = Counter(tuple((s.primitive, s.plan) for s in steps) for steps in step_lists if steps)
    if not seqs:
        return []
    best = seqs.most_common(1)[0][0]
    return [{"primitive": p, "instruction": t} for p, t in best]


def build_dataset(episodes: Sequence[Any], n_points: int = 1024, workspace=DEFAULT_WORKSPACE,
                  successes_only: bool = True, cache: bool = True,
                  log: Callable[[str], None] | None = None) -> KeypointData:
    """Samples from episodes: per step, {step-start cloud, first-frame cloud} × {recorded, plan} text."""
    texts: dict[str, int] = {INITIAL_STATE: 0}

    def tid(t: str) -> int:
        return texts.setdefault(t, len(texts))

    rows: dict[str, list] = {k: [] for k in ("clouds", "text", "prev", "target", "gripper", "yaw", "episode", "step",
                                             "from_start", "plan_form", "task")}
    names: list[str] = []
    by_task: dict[str, list[list[Step]]] = {}
    task_text: dict[str, Counter] = {}
    for ep in episodes:
        name = Path(getattr(ep, "path", f"episode{len(names)}")).name
        if successes_only and str(getattr(ep, "meta", {}).get("outcome", "success")) != "success":
            continue
        steps = episode_steps(ep)
        if not steps:
            continue
        e_idx = len(names)
        names.append(name)
        task = str(ep.meta.get("task", ""))
        by_task.setdefault(task, []).append(steps)
        task_instruction = str(ep.meta.get("instruction", "") or task.replace("_", " "))
        task_text.setdefault(task, Counter())[task_instruction] += 1
        fresh = first_fresh_frame(ep)
        clouds = frame_clouds(ep, sorted({fresh, *[max(s.start, fresh) for s in steps]}), n_points, workspace, cache)
        for k, s in enumerate(steps):
            prev_rec = steps[k - 1].instruction if k else INITIAL_STATE
            prev_plan = steps[k - 1].plan if k else INITIAL_STATE
            for from_start in (False, True):
                if from_start and s.start <= fresh:
                    continue  # the same sample twice
                for plan_form, (text, prev) in ((False, (s.instruction, prev_rec)), (True, (s.plan, prev_plan))):
                    if plan_form and s.instruction == s.plan and prev_rec == prev_plan:
                        continue
                    rows["clouds"].append(clouds[fresh if from_start else max(s.start, fresh)])
                    rows["text"].append(tid(text))
                    rows["prev"].append(tid(prev))
                    rows["target"].append(s.target)
                    rows["gripper"].append(s.gripper)
                    rows["yaw"].append(s.yaw)
                    rows["episode"].append(e_idx)
                    rows["step"].append(k)
                    rows["from_start"].append(from_start)
                    rows["plan_form"].append(plan_form)
                    rows["task"].append(tid(task_instruction))
        if log is not None:
            log(f"{name}: {len(steps)} steps")
    if not names:
        raise KeypointError("no usable episodes (need successful episodes with segments and depth)")
    return KeypointData(np.stack(rows["clouds"]).astype(np.float32), np.asarray(rows["text"]), np.asarray(rows["prev"]),
                        np.asarray(rows["target"], np.float32), np.asarray(rows["gripper"], np.float32),
                        np.asarray(rows["yaw"], np.float32), np.asarray(rows["episode"]), np.asarray(rows["step"]),
                        np.asarray(rows["from_start"], bool), np.asarray(rows["plan_form"], bool), list(texts), names,
                        {t: task_plan(v) for t, v in by_task.items()}, np.asarray(rows["task"]),
                        {t: c.most_common(1)[0][0] for t, c in task_text.items()})


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@dataclass
class KeypointConfig:
    n_points: int = 1024
    workspace: tuple = DEFAULT_WORKSPACE
    text_dim: int = 384
    width: int = 64
    sigma: float = 0.02  # m, Gaussian heat around the target
    offset_k: int = 16  # nearest points whose offsets are supervised
    offset_scale: float = 0.1  # m per network unit of offset
    z_weight: float = 0.3  # heat distance counts height this much (see keypoint_loss)
    # Condition on the task instruction too (one predictor for several tasks: the step texts are
    # task-agnostic templates, "transport" into a bin and onto a cube read the same). False in
    # checkpoints written before it existed (from_dict keeps the default of the loaded config).
    task_text: bool = False
    # Two extra per-point inputs: how much the point looks like the first and the second colour the
    # task instruction names (policies/colour_swap.py ``colour_cues``, names looked up in the xkcd
    # colour table). Needs ``task_text``. False in older checkpoints.
    colour_cues: bool = False

    def __post_init__(self) -> None:
        if self.colour_cues and not self.task_text:
            raise ValueError("colour_cues read the task instruction: they need task_text")

    @classmethod
    def from_dict(cls, d: dict) -> "KeypointConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "workspace" in known:
            known["workspace"] = tuple(tuple(float(x) for x in v) for v in known["workspace"])
        return cls(**known)


class KeypointNet(nn.Module):
    """PointNet(segmentation form) ⊕ FiLM(text) → heat logit + offset per point; gripper and yaw from
    the heat-weighted point features."""

    def __init__(self, cfg: KeypointConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        lo, hi = np.asarray(cfg.workspace[0], np.float32), np.asarray(cfg.workspace[1], np.float32)
        self.register_buffer("center", torch.as_tensor((lo + hi) / 2))
        self.register_buffer("half_extent", torch.as_tensor((hi - lo) / 2))
        n_in = 6 + (MAX_CUES if cfg.colour_cues else 0)
        self.local = nn.Sequential(nn.Linear(n_in, w), nn.GELU(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, w))
        self.glob = nn.Sequential(nn.GELU(), nn.Linear(w, 2 * w), nn.GELU(), nn.Linear(2 * w, 2 * w))
        n_texts = 3 if cfg.task_text else 2
        self.text = nn.Sequential(nn.Linear(n_texts * cfg.text_dim, 2 * w), nn.GELU(), nn.Linear(2 * w, 4 * w))
        self.fuse = nn.Sequential(nn.Linear(3 * w, 2 * w), nn.GELU())
        self.point_head = nn.Sequential(nn.Linear(2 * w, w), nn.GELU(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, 4))
        self.state_head = nn.Sequential(nn.Linear(2 * w + 2 * w, w), nn.GELU(), nn.Linear(w, 3))

    def forward(self, cloud: torch.Tensor, text: torch.Tensor,
                colours: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """cloud (B,N,6) xyz (base frame, m) + rgb [0, 1]; text (B, 2·text_dim) = [instruction, previous]
        (B, 3·text_dim with ``task_text``: [instruction, previous, task instruction]); ``colours``
        (B, MAX_CUES, 3) the colours the task instruction names (``colour_cues`` models; NaN rows or
        None: none named)."""
        rgb = cloud[..., 3:6]
        cloud = cloud[..., :3]
        parts = [(cloud - self.center) / self.half_extent, 2 * rgb - 1]
        if self.cfg.colour_cues:
            if colours is None:
                colours = torch.full((cloud.shape[0], MAX_CUES, 3), float("nan"), dtype=cloud.dtype)
            parts.append(2 * colour_cues(rgb, colours.to(cloud.dtype)) - 1)
        x = torch.cat(parts, dim=-1)
        loc = self.local(x)  # (B,N,w)
        g = self.glob(loc.max(dim=1).values)  # (B,2w)
        f = self.fuse(torch.cat([loc, g[:, None].expand(-1, loc.shape[1], -1)], dim=-1))  # (B,N,2w)
        gamma, beta = self.text(text).chunk(2, dim=-1)
        f = f * (1 + gamma[:, None]) + beta[:, None]
        out = self.point_head(f)
        heat = out[..., 0]
        offset = out[..., 1:] * self.cfg.offset_scale
        p = torch.softmax(heat, dim=1)
        keypoint = (p[..., None] * (cloud + offset)).sum(1)
        pooled = (p[..., None] * f).sum(1)
        s = self.state_head(torch.cat([pooled, g], dim=-1))
        return {"heat": heat, "offset": offset, "keypoint": keypoint, "gripper_logit": s[:, 0], "yaw4": s[:, 1:3]}


def keypoint_loss(out: dict, cloud: torch.Tensor, target: torch.Tensor, gripper: torch.Tensor, yaw: torch.Tensor,
                  cfg: KeypointConfig) -> tuple[torch.Tensor, dict]:
    # Heat distance mostly horizontal: a target in free air (a lift's end, a pose above the bin) then
    # lands on the object under it rather than on whatever arm link happens to pass nearest, and the
    # offset carries the height.
    ce, off, kp = coarse_keypoint_terms(out, cloud[..., :3], target, cfg.sigma, cfg.z_weight, cfg.offset_k,
                                        scale=cfg.offset_scale)
    bce = F.binary_cross_entropy_with_logits(out["gripper_logit"], gripper)
    yaw_t = torch.stack([torch.cos(4 * yaw), torch.sin(4 * yaw)], dim=-1)
    yl = ((out["yaw4"] - yaw_t) ** 2).sum(-1).mean()
    total = ce + off + kp + 0.5 * bce + 0.2 * yl
    parts = {"ce": ce, "offset": off, "keypoint": kp, "gripper": bce, "yaw": yl}
    return total, {k: float(v.detach()) for k, v in parts.items()}


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class KeypointTrainConfig:
    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True
    shift: float = 0.03  # m, random xy shift of a whole sample (cloud and target)
    rotate: float = 0.15  # rad, random rotation about the vertical through the workspace centre
    # m, random vertical shift of a whole sample: every demo had the table at z = 0, and a predictor
    # trained so placed the bin's release 2.5 cm (median) off on a table raised by 2 cm.
    lift: float = 0.03
    jitter: float = 0.002  # m per point
    # Probability per sample of swapping the demo cubes' colours in its cloud and texts alike
    # (policies/colour_swap.py): without it the predictor keys on red and ignores the colour word.
    colour_swap: float = 0.0
    log_every: int = 50


def _augment(cloud: torch.Tensor, target: torch.Tensor, yaw: torch.Tensor, cfg: KeypointTrainConfig,
             center: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = cloud.shape[0]
    ang = (torch.rand(b, generator=gen) * 2 - 1) * cfg.rotate
    c, s = torch.cos(ang), torch.sin(ang)
    R = torch.zeros(b, 3, 3)
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1.0
    shift = torch.zeros(b, 1, 3)
    shift[:, 0, :2] = (torch.rand(b, 2, generator=gen) * 2 - 1) * cfg.shift
    shift[:, 0, 2] = (torch.rand(b, generator=gen) * 2 - 1) * cfg.lift
    piv = torch.tensor([center[0], center[1], 0.0])
    xyz = (cloud[..., :3] - piv) @ R.transpose(1, 2) + piv + shift
    xyz = xyz + torch.randn(xyz.shape, generator=gen) * cfg.jitter
    # Lighting differs between a sim render and a lab: a mild per-sample brightness change.
    rgb = (cloud[..., 3:6] * (1 + (torch.rand(b, 1, 1, generator=gen) * 2 - 1) * 0.15)).clamp(0, 1)
    cloud = torch.cat([xyz, rgb], dim=-1)
    target = ((target - piv)[:, None] @ R.transpose(1, 2))[:, 0] + piv + shift[:, 0]
    return cloud, target, yaw + ang


class TextTable:
    """Sentence features (policies.text, offline MiniLM, disk-cached) for a list of texts."""

    def __init__(self, texts: Sequence[str], encoder=None):
        from policies.text import TextEncoder

        self.texts = list(texts)
        enc = encoder or TextEncoder()
        self.encode = enc.encode  # for texts made up later (colour swaps)
        self.features = torch.as_tensor(enc.encode(self.texts), dtype=torch.float32)

    def pair(self, text_ids, prev_ids, task_ids=None) -> torch.Tensor:
        parts = [self.features[torch.as_tensor(text_ids)], self.features[torch.as_tensor(prev_ids)]]
        if task_ids is not None:
            parts.append(self.features[torch.as_tensor(task_ids)])
        return torch.cat(parts, dim=-1)


def sample_text_features(text, data: KeypointData, cfg: KeypointConfig) -> torch.Tensor:
    """The model's text input for every sample of ``data`` (``text``: a TextTable or alike)."""
    if not cfg.task_text:
        return text.pair(data.text, data.prev)
    if data.task is None:
        raise KeypointError("a task-conditioned predictor needs the episodes' task instructions")
    return text.pair(data.text, data.prev, data.task)


def sample_colour_refs(data: KeypointData, cfg: KeypointConfig) -> torch.Tensor | None:
    """(M, MAX_CUES, 3) the colours each sample's task instruction names (``colour_cues`` models)."""
    if not cfg.colour_cues:
        return None
    if data.task is None:
        raise KeypointError("colour cues need the episodes' task instructions")
    table = torch.as_tensor(np.stack([named_colours(t) for t in data.texts]))
    return table[torch.as_tensor(data.task)]


@dataclass
class TrainResult:
    model: KeypointNet
    losses: list[float]
    seconds: float


def train_keypoints(data: KeypointData, mcfg: KeypointConfig, tcfg: KeypointTrainConfig, text: TextTable,
                    progress: Callable[[dict], None] | None = None,
                    cancel: Callable[[], bool] | None = None) -> TrainResult:
    torch.manual_seed(tcfg.seed)
    gen = torch.Generator().manual_seed(tcfg.seed)
    model = KeypointNet(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=max(tcfg.steps, 2), pct_start=0.1)
    clouds = torch.as_tensor(data.clouds)
    target = torch.as_tensor(data.target)
    grip = torch.as_tensor(data.gripper)
    yaw = torch.as_tensor(data.yaw)
    feats = sample_text_features(text, data, mcfg)
    text_ids = [torch.as_tensor(data.text), torch.as_tensor(data.prev)]
    if mcfg.task_text:
        text_ids.append(torch.as_tensor(data.task))
    swap = ColourSwap(data.texts, text.encode, tcfg.colour_swap) if tcfg.colour_swap > 0 else None
    refs = sample_colour_refs(data, mcfg)
    losses: list[float] = []
    t0 = time.monotonic()
    model.train()
    for step in range(1, tcfg.steps + 1):
        idx = torch.randint(0, len(data), (min(tcfg.batch_size, len(data)),), generator=gen)
        c, t, y, f = clouds[idx], target[idx], yaw[idx], feats[idx]
        r = None if refs is None else refs[idx]
        if swap is not None and swap.active:
            c, f, maps = swap(c, f, [ids[idx] for ids in text_ids], gen)
            if r is not None:  # the renamed task instruction names the new colours
                r = r.clone()
                for i, m in enumerate(maps):
                    if m is not None:
                        r[i] = swap.refs(int(text_ids[-1][idx[i]]), m)
        if tcfg.augment:
            c, t, y = _augment(c, t, y, tcfg, model.center, gen)
        out = model(c, f, r)
        loss, parts = keypoint_loss(out, c, t, grip[idx], y, mcfg)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None and (step % tcfg.log_every == 0 or step == tcfg.steps):
            err = float((out["keypoint"].detach() - t).norm(dim=-1).median()) * 100
            progress({"event": "step", "step": step, "steps": tcfg.steps, "loss": float(np.mean(losses[-tcfg.log_every:])),
                      "train_err_cm": round(err, 2), **{k: round(v, 4) for k, v in parts.items()},
                      "elapsed_s": round(time.monotonic() - t0, 1)})
        if cancel is not None and cancel():
            break
    model.eval()
    return TrainResult(model, losses, time.monotonic() - t0)


@torch.no_grad()
def evaluate(model: KeypointNet, data: KeypointData, text: TextTable, batch: int = 64) -> dict:
    """Keypoint error (cm) median / 90th percentile, overall and per view of the data, gripper
    accuracy and yaw error (deg, 90°-folded)."""
    model.eval()
    preds, glog, yaw4 = [], [], []
    feats = sample_text_features(text, data, model.cfg)
    refs = sample_colour_refs(data, model.cfg)
    for i in range(0, len(data), batch):
        out = model(torch.as_tensor(data.clouds[i:i + batch]), feats[i:i + batch],
                    None if refs is None else refs[i:i + batch])
        preds.append(out["keypoint"].numpy())
        glog.append(out["gripper_logit"].numpy())
        yaw4.append(out["yaw4"].numpy())
    pred = np.concatenate(preds)
    err = np.linalg.norm(pred - data.target, axis=1) * 100
    g_ok = (np.concatenate(glog) > 0) == (data.gripper > 0.5)
    y4 = np.concatenate(yaw4)
    yaw_pred = np.arctan2(y4[:, 1], y4[:, 0]) / 4
    dyaw = np.abs((yaw_pred - data.yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)

    def stats(m: np.ndarray) -> dict:
        if not m.any():
            return {"n": 0}
        return {"n": int(m.sum()), "median_cm": float(np.median(err[m])), "p90_cm": float(np.percentile(err[m], 90))}

    every = np.ones(len(err), bool)
    out = {"all": stats(every), "step_start_cloud": stats(~data.from_start),
           "first_frame_plan": stats(data.from_start & data.plan_form),
           "gripper_accuracy": float(g_ok.mean()), "yaw_median_deg": float(np.degrees(np.median(dyaw)))}
    names = sorted(set(data.step.tolist()))
    out["per_step"] = {int(k): stats(data.step == k) for k in names}
    out["errors_cm"] = err
    return out


def split_by_episode(data: KeypointData, holdout: float = 0.2, seed: int = 0) -> tuple[KeypointData, KeypointData]:
    n = len(data.episode_names)
    if n < 2:
        raise KeypointError("need at least 2 episodes to hold some out for evaluation")
    rng = np.random.default_rng(seed)
    k = min(n - 1, max(1, int(round(holdout * n))))
    test = set(rng.permutation(n)[:k].tolist())
    m = np.isin(data.episode, sorted(test))
    return data.subset(~m), data.subset(m)


# --------------------------------------------------------------------------------------------
# Checkpoint and predictor
# --------------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: KeypointNet, texts: Sequence[str], text_features: torch.Tensor,
                    plans: dict, metrics: dict | None = None, task_instructions: dict | None = None) -> Path:
    """Weights + config + the text features the model was trained with (so prediction needs no
    sentence model for known instructions) + task plans and each task's instruction (what an
    instruction is matched against to pick a plan); loadable with ``weights_only=True``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = asdict(model.cfg)
    cfg["workspace"] = [list(map(float, v)) for v in model.cfg.workspace]
    blob = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "config": cfg,
            "state_dict": {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).clone()
                           for k, v in model.state_dict().items()},
            "texts": list(texts), "text_features": text_features.to(torch.float16).clone(),
            "plans": json.loads(json.dumps(plans)),
            "task_instructions": {str(k): str(v) for k, v in (task_instructions or {}).items()},
            "metrics": json.loads(json.dumps(metrics or {}, default=float))}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


# An instruction must be at least this similar (cosine of MiniLM sentence features) to a trained
# task's instruction to be given that task's plan. Measured on the sim tasks: paraphrases 0.76-0.99
# ("grab the red cube" 0.92 pick_cube, "push the button" 0.88), "open the door" 0.43 at best. The
# cube tasks share words, so their margins are thin ("put the red cube on top of the green one":
# stack 0.81 vs bin 0.76; "lift the red block" ties pick and stack at 0.51): the rollout reports the
# task an instruction was read as.
MIN_TASK_SIMILARITY = 0.5


class KeypointPredictor:
    """``predict(cloud, instruction, previous=INITIAL_STATE) -> (xyz, confidence)``; ``predict_step``
    adds the gripper state and the tool yaw. Unknown instructions are encoded with policies.text.
    A task-conditioned predictor (``config.task_text``) also takes the task instruction, and
    ``resolve(instruction)`` names the trained task (and so the step plan) an instruction asks for."""

    def __init__(self, model: KeypointNet, texts: Sequence[str], text_features: torch.Tensor, plans: dict,
                 metrics: dict | None = None, path: str = "", task_instructions: dict | None = None):
        self.model = model.eval()
        self.config = model.cfg
        self._features = {t: f for t, f in zip(texts, text_features.float())}
        self.plans = plans
        self.task_instructions = dict(task_instructions or {})
        self.metrics = metrics or {}
        self.path = path
        self._encoder = None

    @classmethod
    def load(cls, path: str | Path) -> "KeypointPredictor":
        p = Path(path)
        if not p.is_file():
            raise KeypointError(f"{p}: no such keypoint checkpoint")
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise KeypointError(f"{p.name}: not a readable checkpoint ({type(exc).__name__})") from None
        if not isinstance(blob, dict) or blob.get("kind") != CHECKPOINT_KIND:
            raise KeypointError(f"{p.name}: not a keypoint checkpoint (kind {blob.get('kind') if isinstance(blob, dict) else None!r})")
        if int(blob.get("version", 0)) > CHECKPOINT_VERSION:
            raise KeypointError(f"{p.name}: checkpoint version {blob['version']} is newer than this code "
                                f"({CHECKPOINT_VERSION})")
        try:
            model = KeypointNet(KeypointConfig.from_dict(blob["config"]))
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
            return cls(model, blob["texts"], blob["text_features"], blob.get("plans", {}), blob.get("metrics", {}), str(p),
                       blob.get("task_instructions", {}))
        except (KeyError, RuntimeError, TypeError) as exc:
            raise KeypointError(f"{p.name}: damaged keypoint checkpoint ({str(exc).splitlines()[0][:120]})") from None

    def prepare_texts(self, texts: Iterable[str]) -> None:
        """Encode instructions before they are needed (the sentence model loads in seconds: not on a
        control thread mid-trial)."""
        for t in texts:
            self._feature(" ".join(str(t).split()))

    def _feature(self, text: str) -> torch.Tensor:
        f = self._features.get(text)
        if f is None:
            if self._encoder is None:
                from policies.text import TextEncoder

                self._encoder = TextEncoder()
            f = torch.as_tensor(self._encoder.encode_one(text), dtype=torch.float32)
            self._features[text] = f
        return f

    def cloud_from_frame(self, frame: Any) -> np.ndarray:
        ws = self.config.workspace
        return colour_cloud(frame.depth, frame.rgb, frame.depth_scale, frame.K, frame.T_base_camera, ws[0], ws[1],
                            self.config.n_points, seed=int(getattr(frame, "index", 0)))

    def _check_cloud(self, cloud: np.ndarray) -> np.ndarray:
        c = np.asarray(cloud, dtype=np.float32)
        if c.ndim != 2 or c.shape[1] != 6 or len(c) == 0 or not np.isfinite(c).all():
            raise KeypointError(f"cloud must be (N, 6) finite xyz + rgb rows, got shape {c.shape}")
        return c

    def resolve(self, instruction: str) -> tuple[str, float]:
        """(task, similarity): the trained task whose instruction is nearest ``instruction``."""
        text = " ".join(str(instruction).split())
        if not text:
            raise KeypointError("empty instruction")
        if not self.task_instructions:
            raise KeypointError(f"keypoint checkpoint {Path(self.path).name or ''} stores no task instructions "
                                "(trained before instruction conditioning): give --task instead")
        q = self._feature(text)
        sims = {t: float(F.cosine_similarity(q, self._feature(i), dim=0)) for t, i in self.task_instructions.items()}
        task = max(sims, key=sims.get)
        if sims[task] < MIN_TASK_SIMILARITY:
            known = "; ".join(f"{t}: \"{i}\"" for t, i in self.task_instructions.items())
            raise KeypointError(f"no trained task matches \"{text}\" (nearest {task} at {sims[task]:.2f}); "
                                f"this predictor knows {known}")
        return task, sims[task]

    @torch.no_grad()
    def predict_step(self, cloud: np.ndarray, instruction: str, previous: str = INITIAL_STATE,
                     task_instruction: str | None = None) -> dict:
        c = torch.as_tensor(self._check_cloud(cloud))[None]
        parts = [self._feature(instruction), self._feature(previous)]
        if self.config.task_text:
            if not task_instruction:
                raise KeypointError("this keypoint predictor is conditioned on the task instruction: give one")
            parts.append(self._feature(" ".join(str(task_instruction).split())))
        text = torch.cat(parts)[None]
        colours = torch.as_tensor(named_colours(task_instruction or ""))[None] if self.config.colour_cues else None
        out = self.model(c, text, colours)
        p = torch.softmax(out["heat"][0], dim=0)
        xyz = out["keypoint"][0].double().numpy()
        # Confidence: the heat mass within 2 σ of the prediction — a peaked, consistent heat scores ~1.
        d = (c[0, :, :3] + out["offset"][0] - out["keypoint"][0]).norm(dim=-1)
        conf = float(p[d <= 2 * self.config.sigma].sum())
        y4 = out["yaw4"][0].numpy()
        return {"xyz": xyz, "confidence": conf, "gripper": float(torch.sigmoid(out["gripper_logit"][0])),
                "yaw": float(math.atan2(y4[1], y4[0]) / 4)}

    def predict(self, cloud: np.ndarray, instruction: str, previous: str = INITIAL_STATE,
                task_instruction: str | None = None) -> tuple[np.ndarray, float]:
        r = self.predict_step(cloud, instruction, previous, task_instruction)
        return r["xyz"], r["confidence"]

    def plan(self, task: str) -> list[dict]:
        if task not in self.plans:
            raise KeypointError(f"keypoint checkpoint {Path(self.path).name or ''} has no plan for task {task!r} "
                                f"(trained on: {', '.join(self.plans) or 'none'})")
        return self.plans[task]


# --------------------------------------------------------------------------------------------
# Waypoint source
# --------------------------------------------------------------------------------------------


class PredictedSource:
    """WaypointSource "predicted": one waypoint per plan step, predicted from one cloud.

    ``waypoints(context)``: context is an RGB-D frame (robots.base.RGBDFrame) or an (N,6) xyz + rgb cloud in the
    base frame. Orientation is the oracle's top-down tool, turned about z by ``yaw``: "cloud" (default)
    measures the object's 90°-symmetric orientation from the cloud points around the grasp keypoint
    (``square_yaw``), as the oracle aligns the fingers with the cube's faces; "head" takes the network's
    yaw head (it scored ~21° median error on held-out pick_cube demos, chance level over ±45°); "zero"
    keeps the tool's home yaw. The gripper is the
    predicted state at the step's end; dwells follow the oracle's (DWELL, and MIN_GRIPPER_DWELL where
    the gripper changes). ``approach_height`` adds a waypoint that far above the end of the step that
    precedes a grasp (and above a press), as the oracle's pre-grasp pose: the demos' free move to the object is one
    segment, but a straight diagonal into the object would sweep the open fingers into it.
    """

    name = "predicted"

    def __init__(self, predictor: KeypointPredictor, task: str | None = None, plan: Sequence[dict] | None = None,
                 approach_height: float = 0.10, yaw: str = "cloud", instruction: str | None = None):
        # The instruction picks the plan (the nearest trained task's) and conditions every step;
        # without one, a task-conditioned predictor is given the task's own training instruction.
        # ``task`` is then only the caller's expectation (the sim task being judged): ``asked_task``
        # says which plan the instruction chose, and a mismatch is the predictor's mistake to report.
        self.asked_task = task
        self.similarity = None
        if instruction and plan is None and (task is None or predictor.task_instructions):
            task, self.similarity = predictor.resolve(instruction)
        self.task = task
        self.instruction = instruction or predictor.task_instructions.get(task or "", None)
        if plan is None:
            if task is None:
                raise KeypointError("PredictedSource needs an instruction, a task (for its plan) or an explicit plan")
            plan = predictor.plan(task)
        if not plan:
            raise KeypointError("empty step plan")
        self.predictor = predictor
        self.plan = [dict(s) for s in plan]
        self.approach_height = float(approach_height)
        if yaw not in ("cloud", "head", "zero"):
            raise KeypointError(f"yaw must be 'cloud', 'head' or 'zero', got {yaw!r}")
        self.yaw_mode = yaw
        self.last: list[dict] = []  # per-step predictions of the latest call (xyz, confidence, gripper, yaw)

    def waypoints(self, context: Any = None) -> list[Waypoint]:
        if context is None:
            raise KeypointError("predicted waypoints need a camera frame or a cloud")
        cloud = context if isinstance(context, np.ndarray) else self.predictor.cloud_from_frame(context)
        out: list[Waypoint] = []
        self.last = []
        prev = INITIAL_STATE
        for step in self.plan:
            r = self.predictor.predict_step(cloud, step["instruction"], prev, self.instruction)
            self.last.append({**r, "primitive": step["primitive"], "instruction": step["instruction"]})
            prev = step["instruction"]
        grasp = next((r for r in self.last if r["primitive"] == "grasp"), None)
        # One yaw for the whole plan, the grasp's (the oracle carries the cube with its grasp rotation).
        yaw = 0.0
        if self.yaw_mode == "cloud" and grasp is not None:
            yaw = square_yaw(np.asarray(cloud)[:, :3], grasp["xyz"])
        grip_prev = 1.0
        for k, (step, r) in enumerate(zip(self.plan, self.last)):
            if self.yaw_mode == "head":
                yaw = r["yaw"]
            quat = (Rotation.from_euler("z", yaw) * TOOL_DOWN).as_quat()
            grip = 1.0 if r["gripper"] > 0.5 else 0.0
            nxt = self.plan[k + 1]["primitive"] if k + 1 < len(self.plan) else ""
            if nxt == "grasp" and self.approach_height > 0:
                above = r["xyz"] + np.array([0.0, 0.0, self.approach_height])
                out.append(Waypoint(np.concatenate([above, quat]), grip, label="move"))
            if step["primitive"] == "press" and self.approach_height > 0:
                # The segmenter folds the oracle's move-above and lower into one "press" step: come
                # down onto the button from above, not diagonally into its housing.
                above = r["xyz"] + np.array([0.0, 0.0, self.approach_height])
                out.append(Waypoint(np.concatenate([above, quat]), grip_prev if k else grip, label="move"))
            dwell = DWELL.get(step["primitive"], 0.0)
            if grip != grip_prev:
                dwell = max(dwell, MIN_GRIPPER_DWELL)
            out.append(Waypoint(np.concatenate([r["xyz"], quat]), grip, dwell=dwell, label=step["primitive"]))
            grip_prev = grip
        return out

    @property
    def confidences(self) -> list[float]:
        return [r["confidence"] for r in self.last]


def square_yaw(points: np.ndarray, center: np.ndarray, radius: float = 0.03, below: float = 0.03,
               above: float = 0.04) -> float:
    """Yaw (rad, in [-π/4, π/4)) of a square-ish object seen from above around ``center``: the phase of
    the 4th angular harmonic of its points, Σ r⁴·e^{4iφ} (corners, the farthest points, dominate; for a
    square at yaw θ they sit at 45° + θ + k·90°, so the phase is π + 4θ). 0 when too few points."""
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    c = np.asarray(center, dtype=np.float64)
    d = pts[:, :2] - c[:2]
    m = (np.hypot(d[:, 0], d[:, 1]) < radius) & (pts[:, 2] > c[2] - below) & (pts[:, 2] < c[2] + above)
    if m.sum() < 6:
        return 0.0
    d = pts[m, :2] - pts[m, :2].mean(axis=0)
    r2 = (d ** 2).sum(1)
    z = np.sum(r2 ** 2 * np.exp(4j * np.arctan2(d[:, 1], d[:, 0])))
    if abs(z) < 1e-12:
        return 0.0
    return float((np.angle(z) - np.pi) / 4 + np.pi / 4) % (np.pi / 2) - np.pi / 4


def print_progress_json(event: dict) -> None:
    print(json.dumps(event), flush=True)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
