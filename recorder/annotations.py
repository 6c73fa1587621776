"""Segment annotations: data model, undoable operations, crash-safe storage, agreement scores.

Model
-----
A ``Segment`` covers frames ``[start, end)`` — start inclusive, end exclusive, like Python slices,
so a segment's length is ``end - start`` and adjacent segments share the number ``a.end == b.start``.
An ``AnnotationDoc`` is one annotator's segment list. Invariants (checked on every change):
segments are sorted, non-empty, inside ``[0, n_frames)`` and do not overlap; gaps are allowed
(a human may delete a segment without extending its neighbours). Auto proposals are contiguous.

Operations are plain frozen dataclasses. ``doc.apply(op)`` returns ``(new_doc, inverse_op)`` and
never mutates ``doc``; applying the inverse restores the previous document exactly, so a Qt
``QUndoStack`` command needs no logic of its own: redo = apply(op), undo = apply(inverse).

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

import dataclasses
import fcntl
import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .durable import copy_file, fsync_path
from .primitives import VocabularyError, check_primitive

SOURCES = ("auto", "human")
QUALITY_RANGE = (0, 3)
CONFIDENCE_RANGE = (0, 2)
EDITABLE_FIELDS = ("primitive", "instruction", "object", "quality", "confidence", "source")


class AnnotationError(ValueError):
    """An edit or file that would break the annotation invariants (one-line message)."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Segment:
    start: int  # first frame (inclusive)
    end: int  # one past the last frame (exclusive)
    primitive: str
    instruction: str = ""
    object: str = ""
    quality: int | None = None  # 0–3; None = not yet scored (auto proposals)
    confidence: int | None = None  # 0–2; None = not given
    source: str = "auto"  # auto | human
    updated_at: str = field(default_factory=now_iso)

    def __post_init__(self):
        for name in ("start", "end"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise AnnotationError(f"segment {name} must be an integer frame, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.end <= self.start:
            raise AnnotationError(f"segment [{self.start}, {self.end}) is empty; end must be > start")
        try:
            check_primitive(self.primitive)
        except VocabularyError as exc:
            raise AnnotationError(str(exc)) from None
        _check_score("quality", self.quality, QUALITY_RANGE)
        _check_score("confidence", self.confidence, CONFIDENCE_RANGE)
        if self.source not in SOURCES:
            raise AnnotationError(f"source {self.source!r} must be one of {SOURCES}")

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Segment":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise AnnotationError(f"unknown segment field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def _check_score(name: str, value, bounds: tuple[int, int]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not bounds[0] <= value <= bounds[1]:
        raise AnnotationError(f"{name} must be an integer {bounds[0]}–{bounds[1]} or empty, got {value!r}")


# ------------------------------------------------------------------------------------------------
# Operations (each a plain value; apply() lives on the document)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoveBoundary:
    """Move segment i's ``side`` ("end" or "start") to ``frame``; a touching neighbour follows."""
    index: int
    frame: int
    side: str = "end"


@dataclass(frozen=True)
class Split:
    """Split segment i at ``frame`` into [start, frame) and [frame, end), same labels."""
    index: int
    frame: int


@dataclass(frozen=True)
class Merge:
    """Merge segment i with segment i + 1; the result keeps segment i's labels."""
    index: int


@dataclass(frozen=True)
class Relabel:
    index: int
    primitive: str


@dataclass(frozen=True)
class SetField:
    index: int
    name: str
    value: Any


@dataclass(frozen=True)
class Delete:
    index: int


@dataclass(frozen=True)
class Insert:
    segment: Segment


@dataclass(frozen=True)
class AcceptAll:
    """Mark every auto proposal as verified (source human) with a default quality/confidence."""
    quality: int = 3
    confidence: int = 2


@dataclass(frozen=True)
class Replace:
    """Replace ``count`` segments from ``index`` with ``segments`` (the universal inverse)."""
    index: int
    count: int
    segments: tuple[Segment, ...]


Operation = MoveBoundary | Split | Merge | Relabel | SetField | Delete | Insert | AcceptAll | Replace


@dataclass(frozen=True)
class AnnotationDoc:
    annotator: str
    n_frames: int
    segments: tuple[Segment, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "segments", tuple(self.segments))
        if not self.annotator or "/" in self.annotator or self.annotator.startswith("_"):
            raise AnnotationError(f"annotator name {self.annotator!r} must be non-empty, without '/' or leading '_'")
        if self.n_frames < 0:
            raise AnnotationError(f"n_frames {self.n_frames} < 0")
        prev_end = 0
        for i, s in enumerate(self.segments):
            if s.start < prev_end:
                raise AnnotationError(f"segment {i} [{s.start}, {s.end}) overlaps or precedes the one before it (ends at {prev_end})")
            prev_end = s.end
        if self.segments and prev_end > self.n_frames:
            raise AnnotationError(f"segment ends at frame {prev_end}, past the episode's {self.n_frames} frames")

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> Segment:
        return self.segments[i]

    def boundaries(self) -> list[int]:
        """Interior cut frames (where one segment ends or starts), without 0 and n_frames."""
        cuts = {s.start for s in self.segments} | {s.end for s in self.segments}
        return sorted(c for c in cuts if 0 < c < self.n_frames)

    def frame_labels(self, empty: str = "") -> list[str]:
        labels = [empty] * self.n_frames
        for s in self.segments:
            labels[s.start:s.end] = [s.primitive] * s.length
        return labels

    def segment_at(self, frame: int) -> int | None:
        for i, s in enumerate(self.segments):
            if s.start <= frame < s.end:
                return i
        return None

    # -- operations ------------------------------------------------------------------------------

    def apply(self, op: Operation) -> tuple["AnnotationDoc", Operation]:
        """Return (new document, inverse operation); raise AnnotationError and change nothing on bad edits."""
        index, count, new = self._plan(op)
        old = self.segments[index:index + count]
        doc = dataclasses.replace(self, segments=self.segments[:index] + tuple(new) + self.segments[index + count:])
        return doc, Replace(index, len(new), tuple(old))

    def _seg(self, i: int) -> Segment:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < len(self.segments):
            raise AnnotationError(f"no segment {i} (have {len(self.segments)})")
        return self.segments[i]

    def _plan(self, op: Operation) -> tuple[int, int, list[Segment]]:
        stamp = now_iso()
        touch = {"updated_at": stamp}
        if isinstance(op, MoveBoundary):
            s = self._seg(op.index)
            f = int(op.frame)
            if op.side == "end":
                nxt = self.segments[op.index + 1] if op.index + 1 < len(self.segments) else None
                if nxt is not None and nxt.start == s.end:  # shared boundary: both move
                    if not s.start < f < nxt.end:
                        raise AnnotationError(f"boundary must stay inside ({s.start}, {nxt.end}), got {f}")
                    return op.index, 2, [dataclasses.replace(s, end=f, **touch), dataclasses.replace(nxt, start=f, **touch)]
                limit = nxt.start if nxt is not None else self.n_frames
                if not s.start < f <= limit:
                    raise AnnotationError(f"end must be in ({s.start}, {limit}], got {f}")
                return op.index, 1, [dataclasses.replace(s, end=f, **touch)]
            if op.side == "start":
                prv = self.segments[op.index - 1] if op.index > 0 else None
                if prv is not None and prv.end == s.start:
                    if not prv.start < f < s.end:
                        raise AnnotationError(f"boundary must stay inside ({prv.start}, {s.end}), got {f}")
                    return op.index - 1, 2, [dataclasses.replace(prv, end=f, **touch), dataclasses.replace(s, start=f, **touch)]
                limit = prv.end if prv is not None else 0
                if not limit <= f < s.end:
                    raise AnnotationError(f"start must be in [{limit}, {s.end}), got {f}")
                return op.index, 1, [dataclasses.replace(s, start=f, **touch)]
            raise AnnotationError(f"side must be 'start' or 'end', got {op.side!r}")
        if isinstance(op, Split):
            s = self._seg(op.index)
            if not s.start < op.frame < s.end:
                raise AnnotationError(f"split frame must be inside ({s.start}, {s.end}), got {op.frame}")
            return op.index, 1, [dataclasses.replace(s, end=int(op.frame), **touch),
                                 dataclasses.replace(s, start=int(op.frame), **touch)]
        if isinstance(op, Merge):
            a = self._seg(op.index)
            if op.index + 1 >= len(self.segments):
                raise AnnotationError(f"segment {op.index} is the last one; nothing to merge with")
            b = self.segments[op.index + 1]
            return op.index, 2, [dataclasses.replace(a, end=b.end, **touch)]
        if isinstance(op, Relabel):
            s = self._seg(op.index)
            return op.index, 1, [_replace_checked(s, primitive=op.primitive, **touch)]
        if isinstance(op, SetField):
            s = self._seg(op.index)
            if op.name not in EDITABLE_FIELDS:
                raise AnnotationError(f"field {op.name!r} is not editable; use one of {', '.join(EDITABLE_FIELDS)}")
            return op.index, 1, [_replace_checked(s, **{op.name: op.value}, **touch)]
        if isinstance(op, Delete):
            self._seg(op.index)
            return op.index, 1, []
        if isinstance(op, Insert):
            seg = op.segment
            if seg.end > self.n_frames:
                raise AnnotationError(f"segment ends at {seg.end}, past the episode's {self.n_frames} frames")
            pos = sum(1 for s in self.segments if s.start < seg.start)
            if (pos > 0 and self.segments[pos - 1].end > seg.start) or \
                    (pos < len(self.segments) and self.segments[pos].start < seg.end):
                raise AnnotationError(f"segment [{seg.start}, {seg.end}) overlaps an existing one")
            return pos, 0, [seg]
        if isinstance(op, AcceptAll):
            _check_score("quality", op.quality, QUALITY_RANGE)
            _check_score("confidence", op.confidence, CONFIDENCE_RANGE)
            new = [dataclasses.replace(
                s, source="human",
                quality=op.quality if s.quality is None else s.quality,
                confidence=op.confidence if s.confidence is None else s.confidence, **touch)
                if s.source == "auto" else s for s in self.segments]
            return 0, len(self.segments), new
        if isinstance(op, Replace):
            if not 0 <= op.index <= len(self.segments) or op.index + op.count > len(self.segments) or op.count < 0:
                raise AnnotationError(f"replace [{op.index}, {op.index + op.count}) outside {len(self.segments)} segments")
            merged = self.segments[:op.index] + tuple(op.segments) + self.segments[op.index + op.count:]
            AnnotationDoc(self.annotator, self.n_frames, merged)  # validates ordering / bounds
            return op.index, op.count, list(op.segments)
        raise AnnotationError(f"unknown operation {type(op).__name__}")

    # Convenience wrappers named as in the GUI; each returns (new_doc, inverse).
    def move_boundary(self, i: int, new_frame: int, side: str = "end"):
        return self.apply(MoveBoundary(i, new_frame, side))

    def split(self, i: int, frame: int):
        return self.apply(Split(i, frame))

    def merge(self, i: int):
        return self.apply(Merge(i))

    def relabel(self, i: int, primitive: str):
        return self.apply(Relabel(i, primitive))

    def set_field(self, i: int, name: str, value):
        return self.apply(SetField(i, name, value))

    def delete(self, i: int):
        return self.apply(Delete(i))

    def insert(self, segment: Segment):
        return self.apply(Insert(segment))

    def accept_all(self, quality: int = 3, confidence: int = 2):
        return self.apply(AcceptAll(quality, confidence))

    # -- serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"n_frames": self.n_frames, "segments": [s.to_dict() for s in self.segments]}

    @classmethod
    def from_dict(cls, annotator: str, d: dict) -> "AnnotationDoc":
        try:
            segs = tuple(Segment.from_dict(s) for s in d["segments"])
            return cls(annotator, int(d["n_frames"]), segs)
        except (KeyError, TypeError) as exc:
            raise AnnotationError(f"annotator {annotator!r}: malformed document ({exc})") from None


def _replace_checked(s: Segment, **changes) -> Segment:
    try:
        return dataclasses.replace(s, **changes)
    except TypeError as exc:
        raise AnnotationError(str(exc)) from None


# ------------------------------------------------------------------------------------------------
# Crash-safe storage inside the episode
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Agreement
# ------------------------------------------------------------------------------------------------


def krippendorff_alpha(data: np.ndarray | Sequence[Sequence[float | None]], level: str = "interval") -> float:
    """Krippendorff's α (Krippendorff 2011), computed by the ``krippendorff`` package.

    ``data`` is coders × units; missing values are None/NaN. Units with fewer than two values are
    not pairable and are dropped. ``level``: nominal | ordinal | interval. Where α's expected
    disagreement is zero (every pairable value identical) it is 1.0 here (perfect, trivial
    agreement) where the package says NaN or refuses a one-value domain.
    """
    import krippendorff

    arr = np.array([[np.nan if v is None else float(v) for v in row] for row in data], dtype=float)
    if arr.ndim != 2:
        raise ValueError("reliability data must be coders × units")
    if not np.isfinite(arr).any():
        raise ValueError("no values to compare")
    if level not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"level must be nominal, ordinal or interval, got {level!r}")
    pairable = np.isfinite(arr).sum(axis=0) >= 2
    if not pairable.any():
        raise ValueError("no unit has two or more values; α is undefined")
    arr = arr[:, pairable]  # unpairable units change nothing, but would widen the package's value domain
    if np.unique(arr[np.isfinite(arr)]).size < 2:
        return 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = krippendorff.alpha(reliability_data=arr, level_of_measurement=level)
    return 1.0 if np.isnan(alpha) else float(alpha)


def match_boundaries(pred: Sequence[int], true: Sequence[int], tol: int) -> int:
    """Number of one-to-one matches between two boundary lists with |pred - true| <= tol."""
    from scipy.optimize import linear_sum_assignment
    p, t = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if p.size == 0 or t.size == 0:
        return 0
    dist = np.abs(p[:, None] - t[None, :])
    cost = np.where(dist <= tol, dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return int(np.sum(dist[rows, cols] <= tol))


def boundary_f1(pred: Sequence[int], true: Sequence[int], tol: int = 3) -> tuple[float, float, float]:
    """(precision, recall, F1) of boundaries matched one-to-one within ±tol frames."""
    if len(pred) == 0 and len(true) == 0:
        return 1.0, 1.0, 1.0
    hits = match_boundaries(pred, true, tol)
    precision = hits / len(pred) if len(pred) else 0.0
    recall = hits / len(true) if len(true) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def boundary_agreement(a: AnnotationDoc, b: AnnotationDoc, tol: int = 3) -> float:
    """Boundary F1 between two annotators (symmetric) within ±tol frames."""
    return boundary_f1(a.boundaries(), b.boundaries(), tol)[2]


def quality_alpha(docs: Sequence[AnnotationDoc], level: str = "interval", min_overlap: float = 0.5) -> float:
    """Krippendorff's α over quality scores of several annotators of one episode.

    Units are the first document's segments; another annotator's score for a unit is that of its
    segment overlapping the unit by at least ``min_overlap`` of the unit (else missing).
    """
    if len(docs) < 2:
        raise ValueError("need at least two annotators")
    ref = docs[0]
    rows = []
    for d in docs:
        row = []
        for u in ref.segments:
            score = None
            for s in d.segments:
                inter = min(u.end, s.end) - max(u.start, s.start)
                if inter >= min_overlap * u.length and s.quality is not None:
                    score = s.quality
                    break
            row.append(score)
        rows.append(row)
    return krippendorff_alpha(rows, level)
