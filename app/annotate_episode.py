"""What the Annotate tab needs of one episode, read once off the UI thread: curves, keyframes and
every annotator's document (not the images: those come from app/frame_cache.py on demand)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recorder.annotations import STORE_PATH, AnnotationDoc, load_annotations


@dataclass
class EpisodeData:
    path: Path
    n_frames: int
    fps: float
    time: np.ndarray
    ee_pose: np.ndarray
    gripper: np.ndarray
    keyframes: list[tuple[int, str]]
    docs: dict[str, AnnotationDoc]
    has_images: bool
    depth_scale: float = 0.001
    has_store: bool = False
    meta: dict = field(default_factory=dict)

    def curves(self) -> dict[str, np.ndarray]:
        """Gripper opening, EE speed (m/s) and height (m) per frame, for the timeline."""
        pos = self.ee_pose[:, :3]
        if self.n_frames > 1:
            dt = np.gradient(self.time) if np.all(np.diff(self.time) > 0) else np.full(self.n_frames, 1.0 / self.fps)
            speed = np.linalg.norm(np.gradient(pos, axis=0), axis=1) / dt
        else:
            speed = np.zeros(self.n_frames)
        return {"gripper": self.gripper.astype(float), "speed": speed, "height": pos[:, 2].copy()}


def load_episode(path: Path) -> EpisodeData:
    """Read everything but the images (raises EpisodeError / StoreError with one-line messages)."""
    import h5py

    from recorder.episode import EpisodeReader

    with EpisodeReader(path) as r:
        data = EpisodeData(
            path=Path(path), n_frames=r.n_frames, fps=float(r.meta["fps"]), time=np.asarray(r.time, float),
            ee_pose=np.asarray(r.ee_pose, float), gripper=np.asarray(r.gripper, float),
            keyframes=[(k["index"], k["kind"]) for k in r.keyframes], docs={}, has_images=r.has_images,
            depth_scale=r.camera.depth_scale if r.camera is not None else 0.001, meta=dict(r.meta))
    with h5py.File(path, "r") as f:
        data.has_store = STORE_PATH in f
    data.docs = load_annotations(path)
    return data


def annotation_status(docs: dict[str, AnnotationDoc]) -> tuple[str, list[str]]:
    """(new | proposed | verified, annotators with segments) — the dataset browser's column,
    computed from the crash-safe store (the dataset index reads only the older layout)."""
    names = sorted(n for n, d in docs.items() if len(d))
    if not names:
        return "new", []
    human = any(s.source == "human" for n in names for s in docs[n].segments)
    return ("verified" if human else "proposed"), names
