"""What the Annotate tab needs of one episode, read once off the UI thread: curves, keyframes and
every annotator's document (not the images: those come from app/frame_cache.py on demand)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.episode_source import source_for
from recorder.annotations import AnnotationDoc


@dataclass
class EpisodeData:
    path: Path
    n_frames: int
    fps: float
    time: np.ndarray
    ee_pose: np.ndarray | None          # None: the source has no EE pose (a LeRobot dataset without one)
    gripper: np.ndarray | None
    keyframes: list[tuple[int, str]]
    docs: dict[str, AnnotationDoc]
    has_images: bool
    depth_scale: float = 0.001
    has_store: bool = False
    meta: dict = field(default_factory=dict)
    source_curves: dict[str, np.ndarray] | None = None   # the source's own curves (no EE pose)
    cannot_propose: str = ""            # why automatic proposals are impossible ('' when possible)

    def curves(self) -> dict[str, np.ndarray]:
        """Gripper opening, EE speed (m/s) and height (m) per frame, for the timeline."""
        if self.source_curves is not None or self.ee_pose is None:
            return dict(self.source_curves or {})
        pos = self.ee_pose[:, :3]
        if self.n_frames > 1:
            dt = np.gradient(self.time) if np.all(np.diff(self.time) > 0) else np.full(self.n_frames, 1.0 / self.fps)
            speed = np.linalg.norm(np.gradient(pos, axis=0), axis=1) / dt
        else:
            speed = np.zeros(self.n_frames)
        return {"gripper": self.gripper.astype(float), "speed": speed, "height": pos[:, 2].copy()}


def load_episode(path: Path) -> EpisodeData:
    """Read everything but the images from the episode's source (HDF5 episode or LeRobot episode;
    app.episode_source); raises with one-line messages."""
    src = source_for(path)
    v = src.read()
    return EpisodeData(path=Path(path), n_frames=v.n_frames, fps=v.fps, time=v.time, ee_pose=v.ee_pose,
                       gripper=v.gripper, keyframes=v.keyframes, docs=src.load_docs(), has_images=v.has_images,
                       depth_scale=v.depth_scale, has_store=v.has_store, meta=v.meta, source_curves=v.curves,
                       cannot_propose=v.cannot_propose)


def annotation_status(docs: dict[str, AnnotationDoc]) -> tuple[str, list[str]]:
    """(new | proposed | verified, annotators with segments) — the dataset browser's column,
    computed from the crash-safe store (the dataset index reads only the older layout)."""
    names = sorted(n for n, d in docs.items() if len(d))
    if not names:
        return "new", []
    human = any(s.source == "human" for n in names for s in docs[n].segments)
    return ("verified" if human else "proposed"), names
