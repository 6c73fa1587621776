"""Clips for the RoboAct-CLIP encoder: building them from episodes and loading them for training.

A clip folder has the layout of ``recorder.export.export_encoder_clips``: ``clip_XXXXX.npz``
(``frames`` (n,H,W,3) uint8, ``indices``) and ``captions.jsonl``. Clips built here also store
``proprio`` (n,8: ee xyz + quat xyzw + gripper at the sampled frames, for the proprio-only baseline) and
are downsampled when written (full 640×480 clips are ~3 MB each; the encoder sees 64×48).

Labels come from an annotator's verified segments (the export's rule) or, for simulated episodes, from
the scripted expert's per-frame phases (``/extras/expert_phase`` mapped with
``recorder.segments.phases_to_primitives``) — exact, so held-out accuracy measures the encoder rather
than the proposal heuristics.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from recorder.episode import EpisodeReader
from recorder.export import CLIP_FRAMES, clip_indices, verified_segments
from recorder.primitives import caption
from recorder.segments import phases_to_primitives

SUBJECT = "robot"  # every clip here shows a robot; the vocabulary keeps the paper's subject slot
DEFAULT_SIZE = (48, 64)  # (H, W) the encoder sees; 4:3 like the D435 stream
MIN_SEGMENT = 3  # frames; shorter expert phases are transition jitter


class ClipDataError(ValueError):
    """A clip folder or episode that cannot be used (one-line message naming the file)."""


def object_name(obj_id: str) -> str:
    """Scene object id → caption words: "cube_red" → "red cube", "bin" → "bin"."""
    parts = obj_id.split("_")
    return " ".join(reversed(parts)) if len(parts) == 2 else obj_id.replace("_", " ")


def task_object(task: str | None) -> str:
    """The object a simulated task manipulates (its first object), or "" when unknown."""
    if not task:
        return ""
    try:
        from robots.sim.tasks import get_task

        return object_name(get_task(task).objects[0])
    except Exception:  # unknown task names come from real robots; they simply have no object
        return ""


def expert_segments(phases, gripper, min_len: int = MIN_SEGMENT) -> list[tuple[int, int, str]]:
    """(start, end, primitive) runs of the expert phases mapped to primitives; runs < ``min_len`` dropped."""
    prims = phases_to_primitives(phases, gripper)
    out, pos = [], 0
    for prim, run in itertools.groupby(prims):
        n = len(list(run))
        if n >= min_len:
            out.append((pos, pos + n, prim))
        pos += n
    return out


def crop_frames(frames: np.ndarray, crop: tuple[float, float, float, float] | None) -> np.ndarray:
    """Keep the (top, bottom, left, right) fractions of each frame; ``None`` keeps all."""
    if crop is None:
        return frames
    t, b, l, r = crop
    if not (0 <= t < b <= 1 and 0 <= l < r <= 1):
        raise ClipDataError(f"crop must be fractions top<bottom, left<right in [0, 1], got {crop}")
    h, w = frames.shape[1:3]
    return frames[:, int(t * h):int(np.ceil(b * h)), int(l * w):int(np.ceil(r * w))]


def resize_frames(frames: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """(n,H,W,3) uint8 → (n,h,w,3) uint8 with antialiasing (plain bilinear aliases thin gripper fingers)."""
    if frames.shape[1:3] == tuple(size):
        return frames
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def camera_frames(r: EpisodeReader, idx: np.ndarray) -> int:
    """How many distinct camera images the sampled ticks show (``/extras/frame_index``), or -1 when
    the episode does not record it. A starved sim renderer repeats its last image for seconds, so a
    short segment can show one still image: no motion for any encoder to see."""
    fi = r.extras.get("frame_index")
    if fi is None:
        return -1
    return int(len(np.unique(np.asarray(fi)[idx])))


def _proprio(r: EpisodeReader, idx: np.ndarray) -> np.ndarray:
    return np.hstack([r.ee_pose[idx], r.gripper[idx, None].astype(float)]).astype(np.float32)


def segment_frames(r: EpisodeReader, start: int, end: int, n_frames: int = CLIP_FRAMES,
                   size: tuple[int, int] = DEFAULT_SIZE, crop=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (n,h,w,3) uint8, indices, proprio (n,8)) of one segment of an open episode."""
    if r.camera is None:
        raise ClipDataError(f"{Path(r.path).name}: recorded without a camera; no frames for clips")
    total = len(r.time)
    if not 0 <= start < end <= total:
        raise ClipDataError(f"{Path(r.path).name}: segment [{start}, {end}) outside 0..{total}")
    idx = clip_indices(start, end, n_frames)
    frames = resize_frames(crop_frames(np.stack([r.rgb(int(i)) for i in idx]), crop), size)
    return frames, idx, _proprio(r, idx)


def build_clips(episodes: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                labels: str = "expert", n_frames: int = CLIP_FRAMES, size: tuple[int, int] = DEFAULT_SIZE,
                min_quality: float = 2, crop: tuple[float, float, float, float] | None = None) -> int:
    """Write clips of every labelled segment of ``episodes``; return the count.

    ``labels="expert"`` uses the sim expert's phases (episodes without them are an error);
    any other value names the annotator whose verified segments (quality ≥ ``min_quality``) are used.
    ``crop`` (top, bottom, left, right fractions) cuts the frames to the workspace before downsampling:
    in the sim's third-person view the arm fills a small part of the 640×480 image, and at 64×48 its
    motion would be a pixel or two. The crop is stored in captions.jsonl; suggestions must use the same.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    tmp = out / "captions.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as cap:
        for ep in episodes:
            ep = Path(ep)
            with EpisodeReader(ep) as r:
                obj = task_object(r.meta.get("task"))
                if labels == "expert":
                    if "expert_phase" not in r.extras:
                        raise ClipDataError(f"{ep.name}: no /extras/expert_phase (not a scripted sim demo); "
                                            "use --labels <annotator>")
                    segs = [(a, b, p, obj) for a, b, p in expert_segments(r.extras["expert_phase"], r.gripper)]
                else:
                    segs = [(v.segment.start, v.segment.end, v.segment.primitive, v.segment.object or obj)
                            for v in verified_segments(ep, min_quality, labels)]
                for a, b, prim, o in segs:
                    frames, idx, prop = segment_frames(r, a, b, n_frames, size, crop)
                    name = f"clip_{count:05d}.npz"
                    np.savez_compressed(out / name, frames=frames, indices=idx, proprio=prop)
                    cap.write(json.dumps({
                        "clip": name, "caption": caption(prim, o), "primitive": prim, "object": o,
                        "subject": SUBJECT, "episode": ep.name, "task": r.meta.get("task"),
                        "robot": str(r.meta.get("robot", "")),
                        "start": int(a), "end": int(b), "crop": list(crop) if crop else None,
                        "camera_frames": camera_frames(r, idx)}) + "\n")
                    count += 1
    os.replace(tmp, out / "captions.jsonl")
    return count


@dataclass(frozen=True)
class ClipRecord:
    clip: str
    caption: str
    primitive: str
    object: str
    subject: str
    episode: str
    task: str
    camera_frames: int = -1  # distinct camera images among the clip's frames; -1 unknown
    robot: str = ""  # the episode's robot ("sim-franka", "sim-xarm6"); "" in folders built before it was kept


class ClipDataset:
    """All clips of a folder in memory: ``frames`` (N,n,3,h,w) uint8 tensor, ``proprio`` (N,n,8) or None."""

    def __init__(self, folder: str | os.PathLike, size: tuple[int, int] = DEFAULT_SIZE):
        folder = Path(folder)
        index = folder / "captions.jsonl"
        if not index.is_file():
            raise ClipDataError(f"{folder}: no captions.jsonl (not an encoder-clip export)")
        self.folder = folder
        self.records: list[ClipRecord] = []
        self.crop: tuple | None = None  # the crop the clips were built with (suggestions repeat it)
        frames, proprio = [], []
        with open(index, encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    rec = ClipRecord(d["clip"], d["caption"], d["primitive"], d.get("object") or "",
                                     d.get("subject") or SUBJECT, d.get("episode", ""), d.get("task") or "",
                                     int(d.get("camera_frames", -1)), str(d.get("robot") or ""))
                except (json.JSONDecodeError, KeyError) as exc:
                    raise ClipDataError(f"{index}: line {ln}: bad record ({exc})") from None
                crop = tuple(d["crop"]) if d.get("crop") else None
                if self.records and crop != self.crop:
                    raise ClipDataError(f"{index}: line {ln}: crop {crop} differs from the folder's {self.crop}")
                self.crop = crop
                try:
                    with np.load(folder / rec.clip) as z:
                        f = z["frames"]
                        p = z["proprio"] if "proprio" in z.files else None
                except (OSError, KeyError, ValueError) as exc:
                    raise ClipDataError(f"{folder / rec.clip}: unreadable clip ({exc})") from None
                if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
                    raise ClipDataError(f"{folder / rec.clip}: frames must be (n,H,W,3) uint8, got {f.shape} {f.dtype}")
                if frames and f.shape[0] != frames[0].shape[0]:
                    raise ClipDataError(f"{folder / rec.clip}: {f.shape[0]} frames, others have {frames[0].shape[0]}")
                frames.append(resize_frames(f, size))
                proprio.append(p)
                self.records.append(rec)
        if not self.records:
            raise ClipDataError(f"{index}: no clips")
        self.frames = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).contiguous()
        self.proprio = (torch.from_numpy(np.stack(proprio)) if all(p is not None for p in proprio) else None)

    def __len__(self) -> int:
        return len(self.records)

    def vocab(self) -> dict[str, list[str]]:
        """Sorted class names per slot, as seen in this folder."""
        return {"subject": sorted({r.subject for r in self.records}),
                "action": sorted({r.primitive for r in self.records}),
                "object": sorted({r.object for r in self.records})}

    def episode_folds(self, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """``k`` (train, test) splits whose test parts hold every episode once: each task's episodes are
        dealt round-robin after a seeded shuffle, so every fold tests on every task."""
        if k < 2:
            raise ClipDataError(f"cross-validation needs at least 2 folds, got {k}")
        rng = np.random.default_rng(seed)
        fold_of: dict[str, int] = {}
        by_task: dict[str, list[str]] = {}
        for r in self.records:
            eps = by_task.setdefault(r.task, [])
            if r.episode not in eps:
                eps.append(r.episode)
        for task in sorted(by_task):
            for i, ep in enumerate(rng.permutation(sorted(by_task[task])).tolist()):
                fold_of[ep] = i % k
        folds = np.array([fold_of[r.episode] for r in self.records])
        return [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(k)]

    def split_by_episode(self, holdout: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) clip indices with whole episodes held out, per task, so no test clip shares
        an episode (and its scene layout) with a training clip."""
        rng = np.random.default_rng(seed)
        by_task: dict[str, list[str]] = {}
        for r in self.records:
            eps = by_task.setdefault(r.task, [])
            if r.episode not in eps:
                eps.append(r.episode)
        test_eps = set()
        for task in sorted(by_task):
            eps = sorted(by_task[task])
            k = int(round(holdout * len(eps)))
            if len(eps) > 1:
                k = min(max(k, 1), len(eps) - 1)
            else:
                k = 0
            test_eps.update(rng.permutation(eps)[:k].tolist())
        test = np.array([i for i, r in enumerate(self.records) if r.episode in test_eps], dtype=int)
        train = np.array([i for i, r in enumerate(self.records) if r.episode not in test_eps], dtype=int)
        return train, test
