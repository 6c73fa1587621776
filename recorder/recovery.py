"""Turn episodes left behind by a killed recorder into valid files.

A partial episode is an ``.h5`` with a ``.recording`` marker whose writer process is gone. Its SWMR layout stays readable after
a SIGKILL; recovery reads it in SWMR-reader mode, finds the longest prefix of frames present in
*every* dataset, and rebuilds it into a fresh file (compressed image chunks and H.264 packets
copied as they are, not re-encoded; a video stream cut mid-GOP keeps every frame up to its last
whole packet, recorder/video.py) that replaces the partial one only after it validates. The result carries
``recovered=1`` and ``outcome="unknown"``, or the operator's verdict when the recorder died while
saving it (the marker carries it, recorder/episode.py).

Recovery never deletes a file that may hold frames: one it cannot read is moved aside to
``<file>.unreadable`` and reported. What it does remove: the marker and ``.creating`` shell of a
take killed before its first frame (by construction frame-free), the ``.finalizing`` copy of a
save that was cut short (the partial it was copied from is still there), and a readable partial
with no complete frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from recorder.durable import fsync_path, remove_dead_temporaries
from recorder.episode import (
    MARKER_SUFFIX,
    creating_path,
    finalizing_path,
    marker_path,
    process_start_ticks,
    read_marker,
)
from recorder.h5flags import clear_write_flags
from recorder.schema import OUTCOMES, RGB_STREAM, EpisodeError, attr_str, frame_fields, rgb_is_video, validate
from recorder.video import VideoDecoder, valid_prefix

__all__ = ["Recovered", "dead_partials", "recover_partial", "recover_file", "writer_alive", "discard_partial",
           "remove_stale_temporaries"]


@dataclass
class Recovered:
    path: Path
    # recovered | complete (was already saved; stale marker removed) | empty (no frame; removed)
    # | kept (unreadable, moved aside) | live (still recording) | failed
    status: str
    n_frames: int = 0
    message: str = ""

    def __str__(self) -> str:
        return f"{self.path.name}: {self.status}" + (f" ({self.message})" if self.message else "")


def writer_alive(marker: dict | None) -> bool:
    """Is the process that wrote this marker still running (same pid *and* same start time)?"""
    if not marker or "pid" not in marker:
        return False
    pid = int(marker["pid"])
    if pid == os.getpid():
        return True  # a writer of this very process: never recover under its feet
    ticks = process_start_ticks(pid)
    if ticks is None:
        return False
    return marker.get("start_ticks") in (None, ticks)


def _partials(folder: Path) -> list[Path]:
    # Markers only: opening every file to look for state=recording would make each start O(files).
    # A partial whose marker was lost fails to open as "still being recorded" and the dataset
    # index hands it to recover_file (recorder/dataset.py).
    return sorted(m.with_name(m.name[: -len(MARKER_SUFFIX)]) for m in folder.glob(f"*.h5{MARKER_SUFFIX}"))


def dead_partials(folder: str | os.PathLike) -> list[Path]:
    """Partial episodes whose writer is gone and that may hold frames (for the app to ask about).

    Takes killed before their first frame hold nothing to ask about: their shells are removed here."""
    out = []
    for path in _partials(Path(folder)):
        if writer_alive(read_marker(path)):
            continue
        if path.exists():
            out.append(path)
        else:
            recover_file(path)  # only the marker and the frame-free .creating shell: cleaned up
    return out


def recover_partial(folder: str | os.PathLike) -> list[Recovered]:
    """Recover every partial episode in ``folder`` whose writer is dead; never raises per file."""
    folder = Path(folder)
    results = []
    for tmp in folder.glob("*.h5.recovering"):
        tmp.unlink(missing_ok=True)  # an earlier recovery that was itself interrupted
    remove_stale_temporaries(folder)
    for path in _partials(folder):
        if writer_alive(read_marker(path)):
            results.append(Recovered(path, "live", message="writer process still running"))
            continue
        try:
            results.append(recover_file(path))
        except EpisodeError as exc:
            results.append(Recovered(path, "failed", message=str(exc)))
    return results


def _fields(f: h5py.File):
    try:
        version = int(f.attrs.get("schema_version", 2))
    except (TypeError, ValueError):
        version = 2
    return frame_fields(version)


def _consistent_length(f: h5py.File) -> int:
    """Frames present in every dataset: the shortest extent, cut back to written, decodable data.

    v2 RGB: an index row counts once it is written (not the -1 fill), its packet lies inside the
    written stream and matches its CRC-32, and the last kept frame decodes (from its GOP's
    keyframe): a stream cut mid-GOP keeps every frame up to the last whole packet."""
    datasets = [f[s.path] for s in _fields(f) if s.path in f]
    datasets += [ds for ds in f.get("extras", {}).values() if isinstance(ds, h5py.Dataset)]
    n = min(ds.shape[0] for ds in datasets)
    # Vector fields are NaN-filled, so a slot whose extent was grown but whose data never landed shows.
    for ds in datasets:
        if ds.dtype.kind == "f" and n:
            bad = ~np.isfinite(ds[:n].reshape(n, -1)).all(axis=1)
            if bad.any():
                n = int(np.argmax(bad))
    if rgb_is_video(f) and n:
        n = valid_prefix(f["obs/rgb/index"][:n], f[RGB_STREAM])
    t = f["time"][:n]
    if n > 1 and np.any(np.diff(t) < 0):
        n = int(np.argmax(np.diff(t) < 0)) + 1
    for name in ("obs/rgb", "obs/depth"):
        if not isinstance(f.get(name), h5py.Dataset):
            continue
        ds = f[name]
        zeros = (0,) * (ds.ndim - 1)
        for i in range(n):
            if ds.id.get_chunk_info_by_coord((i, *zeros)).byte_offset is None:
                n = i
                break
        while n:  # the last chunk may have been cut mid-write
            try:
                ds[n - 1]
                break
            except Exception:
                n -= 1
    while n and rgb_is_video(f):  # the packets are whole (CRC); the decoder must agree
        try:
            VideoDecoder(f["obs/rgb"], n).frame(n - 1)
            break
        except Exception:
            n -= 1
    return n


def _copy_dataset(src: h5py.Dataset, dst_file: h5py.File, n: int) -> None:
    parent = dst_file.require_group(src.parent.name)
    trailing = src.shape[1:]
    space = h5py.h5s.create_simple((n, *trailing), (h5py.h5s.UNLIMITED, *trailing))
    # The source's creation property list carries chunking, fill value and the exact filter
    # pipeline, so compressed chunks can be copied byte for byte.
    dsid = h5py.h5d.create(parent.id, src.name.rsplit("/", 1)[1].encode(), src.id.get_type(), space,
                           dcpl=src.id.get_create_plist())
    dst = h5py.Dataset(dsid)
    if src.chunks and src.chunks[0] == 1 and src.ndim > 1:
        zeros = (0,) * (src.ndim - 1)
        for i in range(n):
            mask, chunk = src.id.read_direct_chunk((i, *zeros))
            dsid.write_direct_chunk((i, *zeros), chunk, mask)
    elif n:
        dst[:n] = src[:n]
    for key, value in src.attrs.items():
        dst.attrs[key] = value


def _unique_aside(path: Path, suffix: str) -> Path:
    aside = path.with_name(path.name + suffix)
    k = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}{suffix}.{k}")
        k += 1
    return aside


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of writers that died: ``.finalizing`` copies (the partial they were
    copied from is intact) and annotation rebuild copies ``<file>.<pid>.annot-tmp``."""
    folder = Path(folder)
    removed = []
    for tmp in folder.glob("*.h5.finalizing"):
        episode = tmp.with_name(tmp.name[: -len(".finalizing")])
        if not writer_alive(read_marker(episode)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    for episode in {tmp.name.rsplit(".", 2)[0] for tmp in folder.glob("*.annot-tmp")}:  # name.h5.pid.annot-tmp
        removed += remove_dead_temporaries(folder / episode, ".annot-tmp")
    return removed


def _open_partial(path: Path) -> h5py.File | None:
    """Open a dead writer's file: as a SWMR reader, plainly, or after clearing the "open for write"
    flags a killed non-SWMR writer left (recorder/h5flags.py; files of older versions' finalize)."""
    for attempt in range(2):
        try:
            return h5py.File(path, "r", swmr=True, libver="latest")
        except Exception:  # OSError, or RuntimeError for a damaged superblock
            try:
                return h5py.File(path, "r")
            except Exception:
                if attempt or not clear_write_flags(path):
                    return None
    return None


def recover_file(path: str | os.PathLike) -> Recovered:
    """Rebuild one partial episode in place (atomically); see the module docstring."""
    path = Path(path)
    marker = read_marker(path) or {}
    finalizing_path(path).unlink(missing_ok=True)
    if not path.exists():
        # Killed before the first frame: only the marker and the frame-free .creating shell exist.
        creating_path(path).unlink(missing_ok=True)
        marker_path(path).unlink(missing_ok=True)
        return Recovered(path, "empty", message="killed before the first frame; nothing was recorded")
    src = _open_partial(path)
    if src is None:
        # Never delete what we cannot read: it may hold frames another tool can still get out.
        aside = _unique_aside(path, ".unreadable")
        os.replace(path, aside)
        marker_path(path).unlink(missing_ok=True)
        return Recovered(path, "kept", message=f"cannot be opened by HDF5; kept as {aside.name} (not deleted)")
    tmp = path.with_name(path.name + ".recovering")
    try:
        with src:
            if attr_str(src.attrs.get("state", "")) == "complete":
                # Killed after the complete episode replaced the partial, before the marker went.
                n = int(src["time"].shape[0]) if "time" in src else 0
                src.close()
                marker_path(path).unlink(missing_ok=True)
                return Recovered(path, "complete", n_frames=n, message="already saved; stale marker removed")
            n = _consistent_length(src) if "time" in src else 0
            if n == 0:
                src.close()
                path.unlink(missing_ok=True)
                marker_path(path).unlink(missing_ok=True)
                return Recovered(path, "empty", message="no complete frame; partial file removed")
            outcome = marker.get("outcome") if marker.get("outcome") in OUTCOMES else "unknown"
            saving = marker.get("phase") == "finalizing"
            with h5py.File(tmp, "w", libver="latest") as dst:
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                notes = str(marker.get("notes", "")) if saving else attr_str(src.attrs.get("notes", ""))
                when = "while saving it" if saving else "during recording"
                dst.attrs.update({"outcome": outcome, "recovered": 1, "state": "complete",
                                  "notes": (notes + " " if notes else "") + f"recovered after a crash {when}: {n} frames"})
                if "camera" in src:
                    cam = dst.create_group("camera")
                    for key, value in src["camera"].attrs.items():
                        cam.attrs[key] = value
                datasets = [src[s.path] for s in _fields(src) if s.path in src]
                datasets += [ds for ds in src.get("extras", {}).values() if isinstance(ds, h5py.Dataset)]
                for ds in datasets:
                    _copy_dataset(ds, dst, n)
                if rgb_is_video(src):  # the packet bytes of the kept frames, and the stream's settings
                    last = src["obs/rgb/index"][n - 1]
                    _copy_dataset(src[RGB_STREAM], dst, int(last[0] + last[1]))
                    for key, value in src["obs/rgb"].attrs.items():
                        dst["obs/rgb"].attrs[key] = value
                validate(dst, path)
                _propose(dst)
            fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except EpisodeError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise EpisodeError(path, "recovery", f"{type(exc).__name__}: {exc}") from None
    marker_path(path).unlink(missing_ok=True)
    return Recovered(path, "recovered", n_frames=n)


def _propose(f: h5py.File) -> None:
    """Keyframes + segment proposals, as a finalized take has them (a convenience: never fatal)."""
    try:
        from recorder.proposals import write_into_open_file

        write_into_open_file(f)
    except Exception as exc:
        f.attrs["notes"] = attr_str(f.attrs.get("notes", "")) + f" (no segment proposals: {exc})"


def discard_partial(path: str | os.PathLike) -> None:
    """The operator chose to throw a crashed take away: remove it and everything that belongs to it."""
    path = Path(path)
    for p in (path, creating_path(path), finalizing_path(path), marker_path(path)):
        p.unlink(missing_ok=True)
