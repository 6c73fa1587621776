"""Exports of annotated episodes.

(a) language-action episodes (LA4VLA): JSON lines, one per verified segment (quality ≥ 2) — the
    atomic instruction, the state sequence (ee pose + gripper), the action sequence and segment
    meta; no images, by design (vision-agnostic pre-training).
(b) encoder clips: one ``.npz`` per segment with 16 uniformly sampled RGB frames, plus
    ``captions.jsonl`` with "Robot <action> <object>, action is <action>".
(c) robomimic HDF5 (``data/demo_i/{obs,actions,rewards,dones}``, ``data`` attrs ``total`` and
    ``env_args``) — loadable by ``robomimic.utils.dataset.SequenceDataset`` (tests/test_export.py).
(d) LeRobotDataset v3.0 folders: recorder/export_lerobot.py (written with pyarrow + PyAV; lerobot
    itself, Python 3.12 + torch < 2.12, is only needed to load them).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .annotations import AnnotationDoc, Segment, load_annotations
from .durable import atomic_dir, atomic_file
from .primitives import caption

MIN_QUALITY = 2
CLIP_FRAMES = 16


class ExportError(ValueError):
    """An export that cannot proceed (one line, names the file)."""


@dataclass
class VerifiedSegment:
    episode: Path
    annotator: str
    segment: Segment
    quality: float  # mean over annotators who scored a segment with the same span


def verified_segments(path: str | os.PathLike, min_quality: float = MIN_QUALITY,
                      annotator: str | None = None) -> list[VerifiedSegment]:
    """Segments kept for training: scored ≥ ``min_quality``.

    With several annotators the score is the mean over the annotators whose segment has the same
    span (LA4VLA 7.6); each span is exported once, with the labels of the first annotator (sorted by
    name) that has it. ``annotator`` restricts the export to one annotator's document.
    """
    path = Path(path)
    docs: dict[str, AnnotationDoc] = load_annotations(path)
    if annotator is not None:
        if annotator not in docs:
            raise ExportError(f"{path.name}: no annotations by {annotator!r} (have: {', '.join(docs) or 'none'})")
        docs = {annotator: docs[annotator]}
    spans: dict[tuple[int, int], list[tuple[str, Segment]]] = {}
    for name in sorted(docs):
        for s in docs[name].segments:
            spans.setdefault((s.start, s.end), []).append((name, s))
    out = []
    for (a, b), entries in sorted(spans.items()):
        scores = [s.quality for _, s in entries if s.quality is not None]
        if not scores:
            continue
        q = float(np.mean(scores))
        if q >= min_quality:
            name, seg = next((n, s) for n, s in entries if s.quality is not None)
            out.append(VerifiedSegment(path, name, seg, q))
    return out


def _open(path: Path):
    from .episode import EpisodeReader
    return EpisodeReader(path)


def export_language_action(episodes: Sequence[str | os.PathLike], out: str | os.PathLike,
                           min_quality: float = MIN_QUALITY, annotator: str | None = None) -> int:
    """Write LA episodes as JSON lines; return how many were written."""
    count = 0
    with atomic_file(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for ep in episodes:
            segs = verified_segments(ep, min_quality, annotator)
            if not segs:
                continue
            with _open(Path(ep)) as r:
                for v in segs:
                    s = v.segment
                    state = np.hstack([r.ee_pose[s.start:s.end], r.gripper[s.start:s.end, None].astype(float)])
                    rec = {
                        "instruction": s.instruction, "primitive": s.primitive, "object": s.object,
                        "quality": v.quality, "confidence": s.confidence, "annotator": v.annotator,
                        "episode": Path(ep).name, "start": s.start, "end": s.end,
                        "robot": r.meta.get("robot"), "task": r.meta.get("task"), "fps": r.meta.get("fps"),
                        "state_keys": ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper"],
                        "time": (r.time[s.start:s.end] - r.time[s.start]).round(6).tolist(),
                        "state": state.round(6).tolist(),
                        "action": r.action[s.start:s.end].round(6).tolist(),
                    }
                    fh.write(json.dumps(rec) + "\n")
                    count += 1
    return count


def clip_indices(start: int, end: int, n: int = CLIP_FRAMES) -> np.ndarray:
    """``n`` frame indices spread uniformly over [start, end) (repeats when the segment is shorter)."""
    return np.linspace(start, end - 1, n).round().astype(int)


def export_encoder_clips(episodes: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                         n_frames: int = CLIP_FRAMES, min_quality: float = MIN_QUALITY,
                         annotator: str | None = None) -> int:
    """Write ``clip_XXXXX.npz`` (frames (n,H,W,3) uint8, indices) + ``captions.jsonl``; return the count.

    Built in a temporary folder that replaces ``out_dir`` at the end (a crash keeps the old export)."""
    count = 0
    with atomic_dir(out_dir) as tmp_dir, open(tmp_dir / "captions.jsonl", "w", encoding="utf-8") as cap:
        for ep in episodes:
            segs = verified_segments(ep, min_quality, annotator)
            if not segs:
                continue
            with _open(Path(ep)) as r:
                if r.camera is None:
                    raise ExportError(f"{Path(ep).name}: recorded without a camera; no frames for clips")
                for v in segs:
                    s = v.segment
                    idx = clip_indices(s.start, s.end, n_frames)
                    frames = np.stack([r.rgb(i) for i in idx])
                    name = f"clip_{count:05d}.npz"
                    np.savez_compressed(tmp_dir / name, frames=frames, indices=idx)
                    cap.write(json.dumps({
                        "clip": name, "caption": caption(s.primitive, s.object), "primitive": s.primitive,
                        "object": s.object, "instruction": s.instruction, "episode": Path(ep).name,
                        "start": s.start, "end": s.end, "quality": v.quality}) + "\n")
                    count += 1
    return count


def export_robomimic(episodes: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                     images: bool = False, only_success: bool = False) -> int:
    """Whole episodes as a robomimic HDF5 dataset; return the number of demos.

    obs: ``robot0_eef_pos`` (3), ``robot0_eef_quat`` (4, xyzw), ``robot0_gripper_qpos`` (1),
    ``robot0_joint_pos`` (DoF), and with ``images`` ``agentview_image`` (H,W,3 uint8).
    actions: our (T, 8) absolute target pose + gripper. rewards: 1 on the last frame of successful
    episodes. Written to a temporary name and renamed, so a failed export leaves nothing half-done.
    """
    import h5py
    total = 0
    demos = 0
    env_meta = None
    with atomic_file(out) as tmp:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            for ep in episodes:
                with _open(Path(ep)) as r:
                    if only_success and r.outcome != "success":
                        continue
                    if images and r.camera is None:
                        raise ExportError(f"{Path(ep).name}: recorded without a camera; cannot export images")
                    n = r.n_frames
                    g = data.create_group(f"demo_{demos}")
                    g.attrs["num_samples"] = n
                    g.attrs["source_episode"] = Path(ep).name
                    obs = g.create_group("obs")
                    obs["robot0_eef_pos"] = r.ee_pose[:, :3]
                    obs["robot0_eef_quat"] = r.ee_pose[:, 3:7]
                    obs["robot0_gripper_qpos"] = r.gripper[:, None].astype(np.float64)
                    obs["robot0_joint_pos"] = r.joint_pos
                    if images:
                        ds = obs.create_dataset("agentview_image", (n, r.camera.height, r.camera.width, 3),
                                                dtype=np.uint8, chunks=(1, r.camera.height, r.camera.width, 3),
                                                compression="gzip", compression_opts=1)
                        for i in range(n):
                            ds[i] = r.rgb(i)
                    g["actions"] = r.action
                    rewards = np.zeros(n)
                    dones = np.zeros(n, dtype=np.int64)
                    dones[-1] = 1
                    if r.outcome == "success":
                        rewards[-1] = 1.0
                    g["rewards"] = rewards
                    g["dones"] = dones
                    total += n
                    demos += 1
                    env_meta = env_meta or {"env_name": f"actstudio/{r.meta.get('task')}", "type": 1,
                                            "env_kwargs": {"robot": r.meta.get("robot"), "fps": r.meta.get("fps")}}
            data.attrs["total"] = total
            data.attrs["env_args"] = json.dumps(env_meta or {"env_name": "actstudio", "type": 1, "env_kwargs": {}})
            mask = f.create_group("mask")
            mask["all"] = np.array([f"demo_{i}".encode() for i in range(demos)], dtype="S")
    return demos


def find_episodes(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Episode files named directly or found (``*.h5``, sorted) in the given directories."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.glob("*.h5") if not x.name.endswith((".tmp", ".annot-tmp"))))
        elif p.exists():
            out.append(p)
        else:
            raise ExportError(f"{p}: no such file or directory")
    return out
