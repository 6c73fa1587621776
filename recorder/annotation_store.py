"""Annotations stored inside the episode file, crash-safe: two A/B slots written with pwrite + fsync.

Storage (crash safety)
----------------------
Episodes are multi-GB HDF5 files; rewriting one per autosave is too slow, and HDF5 in-place edits
can leave a file unreadable if the process dies mid-flush. All annotators' documents are therefore
serialised together (JSON) into one of two fixed slots of a pre-allocated, contiguous, uncompressed
uint8 dataset ``/annotations/_store``. A save writes the slot *not* holding the current version,
with a header {magic, version, length, CRC32}, straight to the dataset's file offset with
``os.pwrite`` + ``fsync`` — no HDF5 metadata is touched, so the file structure cannot be damaged.
A reader takes the valid slot with the highest version: a save cut short leaves a slot with a bad
CRC and the previous version wins; a finished save wins over it. Creating the store (once per
episode, or to grow it) is a structural change, done on a copy that atomically replaces the file.
"""
from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .annotation_model import AnnotationDoc, AnnotationError, now_iso
from .durable import copy_file, fsync_path

STORE_PATH = "annotations/_store"
_MAGIC = b"ASA1"
_HEADER = struct.Struct("<4sQII")  # magic, version, payload length, crc32(version|length|payload)
DEFAULT_SLOT_BYTES = 1 << 20  # ~4000 segments of JSON across all annotators; grows when needed
_local_lock = threading.Lock()  # POSIX record locks do not exclude threads of one process


class StoreError(AnnotationError):
    """The annotation store of an episode cannot be read or written (one line, names the file)."""


def _crc(version: int, payload: bytes) -> int:
    return zlib.crc32(struct.pack("<QI", version, len(payload)) + payload)


def _store_location(path: Path) -> tuple[int, int] | None:
    """(file offset, slot size) of the store, or None if the episode has none yet."""
    import h5py
    import hdf5plugin  # noqa: F401  (episodes use Blosc/Zstd filters; h5py needs them registered)
    try:
        with h5py.File(path, "r") as f:
            ds = f.get(STORE_PATH)
            if ds is None:
                return None
            offset = ds.id.get_offset()
            if offset is None or ds.dtype != np.uint8 or ds.ndim != 1 or ds.chunks is not None or ds.shape[0] % 2:
                raise StoreError(f"{path.name}: /{STORE_PATH}: not a contiguous uint8 (2×slot) dataset")
            return int(offset), ds.shape[0] // 2
    except OSError as exc:
        raise StoreError(f"{path.name}: cannot open ({' '.join(str(exc).split())})") from None


def _read_slot(fd: int, offset: int, slot: int, size: int) -> tuple[int, bytes] | None:
    raw = os.pread(fd, size, offset + slot * size)
    if len(raw) < _HEADER.size:
        return None
    magic, version, length, crc = _HEADER.unpack_from(raw)
    if magic != _MAGIC or length > size - _HEADER.size:
        return None
    payload = raw[_HEADER.size:_HEADER.size + length]
    if len(payload) != length or _crc(version, payload) != crc:
        return None  # a save that was cut short: ignore this slot
    return version, payload


def _read_current(fd: int, offset: int, size: int) -> tuple[int, int, dict]:
    """(slot index, version, payload dict) of the newest valid slot; version 0 = empty store."""
    best = None
    for slot in (0, 1):
        got = _read_slot(fd, offset, slot, size)
        if got is not None and (best is None or got[0] > best[1]):
            best = (slot, got[0], got[1])
    if best is None:
        return 1, 0, {}
    return best[0], best[1], json.loads(best[2].decode("utf-8"))


def read_store(path: str | os.PathLike) -> tuple[int, dict]:
    """(version, payload) stored in an episode; (0, {}) when it has no annotations yet."""
    path = Path(path)
    loc = _store_location(path)
    if loc is None:
        return 0, {}
    fd = os.open(path, os.O_RDONLY)
    try:
        _, version, payload = _read_current(fd, *loc)
        return version, payload
    finally:
        os.close(fd)


def load_annotations(path: str | os.PathLike) -> dict[str, AnnotationDoc]:
    """All annotators' documents stored in an episode (empty dict if none)."""
    path = Path(path)
    _, payload = read_store(path)
    try:
        return {name: AnnotationDoc.from_dict(name, d) for name, d in payload.get("annotators", {}).items()}
    except AnnotationError as exc:
        raise StoreError(f"{path.name}: /annotations: {exc}") from None


def create_store(h5file, slot_bytes: int = DEFAULT_SLOT_BYTES, payload: bytes | None = None, version: int = 0) -> None:
    """Allocate the store in an h5py file open for writing (the writer may call this at creation,
    while the file is still being built, to spare the first save a copy)."""
    if STORE_PATH in h5file:
        del h5file[STORE_PATH]
    buf = np.zeros(2 * slot_bytes, dtype=np.uint8)
    if payload is not None:
        header = _HEADER.pack(_MAGIC, version, len(payload), _crc(version, payload))
        blob = np.frombuffer(header + payload, dtype=np.uint8)
        buf[:len(blob)] = blob
    h5file.require_group("annotations")
    # Contiguous and uncompressed, written now, so the bytes have a fixed file offset.
    h5file.create_dataset(STORE_PATH, data=buf, chunks=None)


def rebuild_with_store(path: str | os.PathLike, payload: bytes | None, version: int,
                       slot_bytes: int = DEFAULT_SLOT_BYTES, extra=None) -> None:
    """Structural change on a copy, then an atomic rename: a crash leaves the old file intact.

    ``extra(h5file)`` may add other datasets (e.g. keyframes) in the same step.
    """
    import h5py
    import hdf5plugin  # noqa: F401
    path = Path(path)
    # The pid in the name lets recovery tell a dead save's leftover from a save in progress.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.annot-tmp")
    try:
        copy_file(path, tmp)
        with h5py.File(tmp, "r+") as f:
            if payload is not None or STORE_PATH not in f:
                create_store(f, slot_bytes, payload, version)
            if extra is not None:
                extra(f)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as exc:
        raise StoreError(f"{path.name}: cannot rewrite ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def save_annotations(path: str | os.PathLike, docs: Iterable[AnnotationDoc] | AnnotationDoc,
                     replace_all: bool = False) -> int:
    """Store documents (other annotators are kept unless ``replace_all``); return the new version.

    Crash-safe: see the module docstring. The common case costs one pwrite + fsync of the JSON.
    """
    path = Path(path)
    if isinstance(docs, AnnotationDoc):
        docs = [docs]
    docs = list(docs)
    if not path.exists():
        raise StoreError(f"{path.name}: no such episode file")
    with _local_lock:
        loc = _store_location(path)
        if loc is None:
            # First save ever: allocate the store on a copy. Re-check under the lock afterwards.
            payload = _encode({}, docs, replace_all)
            slot = max(DEFAULT_SLOT_BYTES, _grow(len(payload)))
            rebuild_with_store(path, payload, 1, slot)
            return 1
        offset, size = loc
        fd = os.open(path, os.O_RDWR)
        try:
            # Lock only the store's bytes: HDF5 readers elsewhere use flock(), which this does not block.
            fcntl.lockf(fd, fcntl.LOCK_EX, 2 * size, offset, os.SEEK_SET)
            try:
                slot, version, current = _read_current(fd, offset, size)
                payload = _encode(current, docs, replace_all)
                new_version = version + 1
                if len(payload) + _HEADER.size > size:
                    os.close(fd)
                    fd = -1
                    rebuild_with_store(path, payload, new_version, _grow(len(payload)))
                    return new_version
                target = 1 - slot
                blob = _HEADER.pack(_MAGIC, new_version, len(payload), _crc(new_version, payload)) + payload
                os.pwrite(fd, blob, offset + target * size)
                os.fsync(fd)
                return new_version
            finally:
                if fd >= 0:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 2 * size, offset, os.SEEK_SET)
        finally:
            if fd >= 0:
                os.close(fd)


def _grow(payload_len: int) -> int:
    size = DEFAULT_SLOT_BYTES
    while size < 2 * (payload_len + _HEADER.size):
        size *= 2
    return size


def _encode(current: dict, docs: Sequence[AnnotationDoc], replace_all: bool) -> bytes:
    annotators = {} if replace_all else dict(current.get("annotators", {}))
    for d in docs:
        annotators[d.annotator] = d.to_dict()
    body = {"format": "actstudio.annotations", "saved_at": now_iso(), "annotators": annotators}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
