"""Where the Annotate tab's episodes come from: one small protocol, two implementations.

``EpisodeSource`` is everything the annotate controller asks of an episode — its vectors and
metadata (``read``), its frames (``frames``, also opened in the frame-decoder child process), its
annotation documents (``load_docs`` / ``save_doc``) and where proposals go (``store_proposals``).

* ``Hdf5Source``: an ActStudio HDF5 episode (recorder.episode.EpisodeReader; documents in the
  file's crash-safe annotation store; keyframes in /keyframes).
* ``LeRobotSource``: one episode of a LeRobotDataset v3 folder, addressed as
  ``<dataset>/episode_NNNNNN`` (recorder.lerobot_dataset: parquet vectors, mp4 frames via PyAV;
  recorder.lerobot_annotations: documents in meta/actstudio_annotations.json, the saving
  annotator's segments written as LeRobot subtasks).

``source_for(path)`` picks one. No Qt here (the decoder child process imports this module).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from recorder.annotations import AnnotationDoc


@dataclass
class EpisodeVectors:
    """What the UI shows besides frames, read once off the UI thread."""
    n_frames: int
    fps: float
    time: np.ndarray
    ee_pose: np.ndarray | None
    gripper: np.ndarray | None
    keyframes: list[tuple[int, str]]
    has_images: bool
    depth_scale: float = 0.001
    has_store: bool = False
    meta: dict = field(default_factory=dict)
    curves: dict[str, np.ndarray] | None = None   # timeline curves when not derived from the EE pose
    cannot_propose: str = ""                        # why proposals are impossible ('' when they are not)


class FrameReader(Protocol):
    n_frames: int

    def read(self, i: int, depth_on: bool) -> tuple[np.ndarray, np.ndarray | None]: ...

    def close(self) -> None: ...


class EpisodeSource(Protocol):
    path: Path
    kind: str

    def read(self) -> EpisodeVectors: ...

    def frames(self) -> FrameReader: ...

    def load_docs(self) -> dict[str, AnnotationDoc]: ...

    def save_doc(self, doc: AnnotationDoc) -> None: ...

    def store_proposals(self, keyframes: list, doc: AnnotationDoc) -> None: ...


# ------------------------------------------------------------------------------------------------
# ActStudio HDF5 episodes
# ------------------------------------------------------------------------------------------------


class _Hdf5Frames:
    def __init__(self, path: Path):
        from recorder.episode import EpisodeReader
        self._r = EpisodeReader(path, migrate=False)
        self.n_frames = self._r.n_frames

    def read(self, i: int, depth_on: bool):
        return self._r.rgb(i), (self._r.depth(i) if depth_on else None)

    def close(self) -> None:
        self._r.close()


class Hdf5Source:
    kind = "hdf5"

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> EpisodeVectors:
        import h5py

        from recorder.annotations import STORE_PATH
        from recorder.episode import EpisodeReader

        with EpisodeReader(self.path) as r:
            v = EpisodeVectors(
                n_frames=r.n_frames, fps=float(r.meta["fps"]), time=np.asarray(r.time, float),
                ee_pose=np.asarray(r.ee_pose, float), gripper=np.asarray(r.gripper, float),
                keyframes=[(k["index"], k["kind"]) for k in r.keyframes], has_images=r.has_images,
                depth_scale=r.camera.depth_scale if r.camera is not None else 0.001, meta=dict(r.meta))
        with h5py.File(self.path, "r") as f:
            v.has_store = STORE_PATH in f
        return v

    def frames(self) -> _Hdf5Frames:
        return _Hdf5Frames(self.path)

    def load_docs(self) -> dict[str, AnnotationDoc]:
        from recorder.annotations import load_annotations
        return load_annotations(self.path)

    def save_doc(self, doc: AnnotationDoc) -> None:
        from recorder.annotations import save_annotations
        save_annotations(self.path, doc)

    def store_proposals(self, keyframes: list, doc: AnnotationDoc) -> None:
        from recorder.annotations import save_annotations
        from recorder.keyframes import write_keyframes
        write_keyframes(self.path, keyframes)   # structural change: also creates the store
        save_annotations(self.path, doc)


# ------------------------------------------------------------------------------------------------
# LeRobot v3 episodes
# ------------------------------------------------------------------------------------------------


class _LeRobotFrames:
    def __init__(self, ep):
        from recorder.lerobot_dataset import VideoFrames
        self.n_frames = ep.n_frames
        self._v = VideoFrames(ep.video["path"], ep.video["from_timestamp"], ep.fps, ep.n_frames)

    def read(self, i: int, depth_on: bool):
        return self._v.rgb(i), None   # depth video (if any) is not shown

    def close(self) -> None:
        self._v.close()


class LeRobotSource:
    kind = "lerobot"

    def __init__(self, root: Path, index: int):
        self.root, self.index = Path(root), int(index)
        from recorder.lerobot_dataset import episode_path
        self.path = episode_path(root, index)
        self._ep = None

    def episode(self):
        if self._ep is None:
            from recorder.lerobot_dataset import load_episode
            self._ep = load_episode(self.root, self.index)
        return self._ep

    def read(self) -> EpisodeVectors:
        from recorder import lerobot_annotations as la
        ep = self.episode()
        la.recover(self.root)
        meta = {"fps": ep.fps, "task": ep.task, "instruction": ep.task, "robot": ep.info.get("robot_type") or "",
                "source": "lerobot", "camera": ep.camera or "", "codebase_version": ep.info.get("codebase_version")}
        return EpisodeVectors(
            n_frames=ep.n_frames, fps=ep.fps, time=ep.time, ee_pose=ep.ee_pose, gripper=ep.gripper,
            keyframes=la.keyframes(self.root, self.index), has_images=ep.video is not None,
            has_store=(self.root / la.SIDECAR).exists(), meta=meta,
            curves=None if ep.ee_pose is not None else ep.curves(), cannot_propose=ep.missing_for_proposals())

    def frames(self) -> _LeRobotFrames:
        return _LeRobotFrames(self.episode())

    def load_docs(self) -> dict[str, AnnotationDoc]:
        from recorder import lerobot_annotations as la
        ep = self.episode()
        return la.load_docs(self.root, self.index, ep.time, ep.subtasks)

    def save_doc(self, doc: AnnotationDoc) -> None:
        """A human's document: stored in the sidecar and written as the episode's LeRobot subtasks."""
        from recorder import lerobot_annotations as la
        la.save_docs(self.root, self.index, [doc], subtasks_from=doc.annotator, times=self.episode().time)

    def store_proposals(self, keyframes: list, doc: AnnotationDoc) -> None:
        """Proposals go to the sidecar only: LeRobot's subtasks are what a human saved."""
        from recorder import lerobot_annotations as la
        la.save_docs(self.root, self.index, [doc], keyframes=[(k.frame, k.kind) for k in keyframes])


def source_for(path: str | Path) -> EpisodeSource:
    from recorder.lerobot_dataset import lerobot_ref
    ref = lerobot_ref(path)
    if ref is not None:
        return LeRobotSource(*ref)
    return Hdf5Source(Path(path))


class FrameSequence:
    """An episode's RGB frames as a sequence (``len``, ``[i]``), decoded on demand: what
    policies.suggest.Suggester takes for sources it cannot open by path."""

    def __init__(self, source: EpisodeSource):
        self._reader = source.frames()

    def __len__(self) -> int:
        return self._reader.n_frames

    def __getitem__(self, i: int) -> np.ndarray:
        return self._reader.read(int(i), False)[0]

    def close(self) -> None:
        self._reader.close()


def frames_for_suggester(path: str | Path):
    """What the label Suggester gets for an episode: the HDF5 path itself (it reads the file), a
    FrameSequence for other sources (close it after use)."""
    src = source_for(path)
    return FrameSequence(src) if src.kind != "hdf5" else str(path)
