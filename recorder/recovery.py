"""Turn episodes left behind by a killed recorder into valid files.

A partial episode is an ``.h5`` with a ``.recording`` marker whose writer process is gone. Its SWMR layout stays readable after
a SIGKILL; recovery reads it in SWMR-reader mode, finds the longest prefix of frames present in
*every* dataset, and rebuilds it into a fresh file (compressed image chunks copied as they are,
not re-encoded) that replaces the partial one only after it validates. The result carries
``outcome="unknown"`` and ``recovered=1``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from recorder.episode import MARKER_SUFFIX, marker_path, process_start_ticks, read_marker
from recorder.schema import FRAME_FIELDS, EpisodeError, attr_str, validate

__all__ = ["Recovered", "recover_partial", "recover_file", "writer_alive"]


@dataclass
class Recovered:
    path: Path
    status: str  # recovered | empty (nothing worth keeping, removed) | live (still recording) | failed
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


def recover_partial(folder: str | os.PathLike) -> list[Recovered]:
    """Recover every partial episode in ``folder`` whose writer is dead; never raises per file."""
    folder = Path(folder)
    results = []
    for tmp in folder.glob("*.h5.recovering"):
        tmp.unlink(missing_ok=True)  # an earlier recovery that was itself interrupted
    for path in _partials(folder):
        if writer_alive(read_marker(path)):
            results.append(Recovered(path, "live", message="writer process still running"))
            continue
        try:
            results.append(recover_file(path))
        except EpisodeError as exc:
            results.append(Recovered(path, "failed", message=str(exc)))
    return results


def _consistent_length(f: h5py.File) -> int:
    """Frames present in every dataset: the shortest extent, cut back to written, decodable data."""
    datasets = [f[s.path] for s in FRAME_FIELDS if s.path in f]
    datasets += [ds for ds in f.get("extras", {}).values() if isinstance(ds, h5py.Dataset)]
    n = min(ds.shape[0] for ds in datasets)
    # Vector fields are NaN-filled, so a slot whose extent was grown but whose data never landed shows.
    for ds in datasets:
        if ds.dtype.kind == "f" and n:
            bad = ~np.isfinite(ds[:n].reshape(n, -1)).all(axis=1)
            if bad.any():
                n = int(np.argmax(bad))
    t = f["time"][:n]
    if n > 1 and np.any(np.diff(t) < 0):
        n = int(np.argmax(np.diff(t) < 0)) + 1
    for name in ("obs/rgb", "obs/depth"):
        if name not in f:
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


def recover_file(path: str | os.PathLike) -> Recovered:
    """Rebuild one partial episode in place (atomically); see the module docstring."""
    path = Path(path)
    tmp = path.with_name(path.name + ".recovering")
    try:
        src = h5py.File(path, "r", swmr=True, libver="latest")
    except OSError:
        try:
            src = h5py.File(path, "r")
        except OSError as exc:
            # Killed before the first frame made the file SWMR: nothing but attributes was in it.
            path.unlink(missing_ok=True)
            marker_path(path).unlink(missing_ok=True)
            return Recovered(path, "empty", message=f"unreadable partial file removed ({exc})")
    try:
        with src:
            if "time" not in src:
                n = 0
            else:
                n = _consistent_length(src)
            if n == 0:
                src.close()
                path.unlink(missing_ok=True)
                marker_path(path).unlink(missing_ok=True)
                return Recovered(path, "empty", message="no complete frame; partial file removed")
            with h5py.File(tmp, "w", libver="latest") as dst:
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                notes = attr_str(src.attrs.get("notes", ""))
                dst.attrs.update({"outcome": "unknown", "recovered": 1, "state": "complete",
                                  "notes": (notes + " " if notes else "") + f"recovered after a crash: {n} frames"})
                if "camera" in src:
                    cam = dst.create_group("camera")
                    for key, value in src["camera"].attrs.items():
                        cam.attrs[key] = value
                datasets = [src[s.path] for s in FRAME_FIELDS if s.path in src]
                datasets += [ds for ds in src.get("extras", {}).values() if isinstance(ds, h5py.Dataset)]
                for ds in datasets:
                    _copy_dataset(ds, dst, n)
                validate(dst, path)
        os.replace(tmp, path)
    except EpisodeError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise EpisodeError(path, "recovery", f"{type(exc).__name__}: {exc}") from None
    marker_path(path).unlink(missing_ok=True)
    return Recovered(path, "recovered", n_frames=n)
