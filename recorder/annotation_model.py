"""Segment annotations: the data model and its undoable operations (pure, no file I/O).

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
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

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
