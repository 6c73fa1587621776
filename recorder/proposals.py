"""Keyframes + auto segment proposals written into an episode file.

Adding /keyframes and the annotation store are structural HDF5 changes, which are only crash-safe
while nobody else can see the file. The episode writer therefore adds them at ``finalize`` (the file
is still marked as recording, so a crash there is handled by recovery), and every recorded episode
reaches the Annotate view already "proposed" — with no multi-GB copy on the first annotation save.
Files that arrive without them (older recordings, other tools) go through ``propose_file``, which
makes the change on a copy and swaps it in atomically.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from recorder.annotation_model import AnnotationDoc
from recorder.annotation_store import (DEFAULT_SLOT_BYTES, STORE_PATH, _encode, _grow, create_store, load_annotations,
                                       rebuild_with_store, save_annotations)
from recorder.keyframes import Keyframe, KeyframeParams, detect_keyframes
from recorder.segments import SegmentParams, propose_doc

AUTO = "auto"


def compute_proposals(ee_pose: np.ndarray, gripper: np.ndarray, fps: float, annotator: str = AUTO,
                      kf_params: KeyframeParams = KeyframeParams(),
                      seg_params: SegmentParams = SegmentParams()) -> tuple[list[Keyframe], AnnotationDoc]:
    return (detect_keyframes(ee_pose, gripper, kf_params),
            propose_doc(ee_pose, gripper, fps, annotator=annotator, params=seg_params))


def _put_keyframes(f: h5py.File, keyframes: list[Keyframe]) -> None:
    if "keyframes" in f:
        del f["keyframes"]
    g = f.create_group("keyframes")
    g.create_dataset("index", data=np.array([k.frame for k in keyframes], dtype=np.int64))
    g.create_dataset("kind", data=np.array([k.kind for k in keyframes], dtype=object),
                     dtype=h5py.string_dtype("utf-8"))


def write_into_open_file(f: h5py.File, annotator: str = AUTO) -> tuple[list[Keyframe], AnnotationDoc]:
    """Detect and store keyframes + an ``annotator`` proposal document in a file open for writing
    (no SWMR, no other readers). Documents of other annotators already stored are kept."""
    ee, grip = f["obs/ee_pose"][()], f["obs/gripper"][()]
    kfs, doc = compute_proposals(ee, grip, float(f.attrs["fps"]), annotator)
    _put_keyframes(f, kfs)
    if STORE_PATH in f:
        return kfs, doc  # an existing store is updated through save_annotations by the caller
    payload = _encode({}, [doc], replace_all=True)
    create_store(f, max(DEFAULT_SLOT_BYTES, _grow(len(payload))), payload, version=1)
    return kfs, doc


def propose_file(path: str | Path, annotator: str = AUTO) -> tuple[list[Keyframe], AnnotationDoc]:
    """Keyframes + proposals for a closed episode file (crash-safe; copies the file only when it
    lacks /keyframes or the annotation store)."""
    path = Path(path)
    from recorder.episode import EpisodeReader

    with EpisodeReader(path) as r:
        ee, grip, fps = r.ee_pose, r.gripper, float(r.meta["fps"])
        has_keyframes = bool(r.keyframes) or "keyframes" in r._f  # noqa: SLF001
        has_store = STORE_PATH in r._f  # noqa: SLF001
    kfs, doc = compute_proposals(ee, grip, fps, annotator)
    if has_store and has_keyframes and _same_keyframes(path, kfs):
        save_annotations(path, doc)
    else:
        current = load_annotations(path) if has_store else {}
        others = [d for name, d in current.items() if name != annotator]
        payload = _encode({}, [*others, doc], replace_all=True)
        version = 1 + max(0, _store_version(path) if has_store else 0)
        rebuild_with_store(path, payload, version, max(DEFAULT_SLOT_BYTES, _grow(len(payload))),
                           extra=lambda f: _put_keyframes(f, kfs))
    return kfs, doc


def _store_version(path: Path) -> int:
    from recorder.annotations import read_store

    return read_store(path)[0]


def _same_keyframes(path: Path, kfs: list[Keyframe]) -> bool:
    from recorder.episode import EpisodeReader

    with EpisodeReader(path) as r:
        stored = [(k["index"], k["kind"]) for k in r.keyframes]
    return stored == [(k.frame, k.kind) for k in kfs]
