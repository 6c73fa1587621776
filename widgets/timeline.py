"""Episode timeline and segment editor (pyqtgraph).

Curves (gripper, speed, height, …) against the frame index, keyframe ticks, coloured segment bars
with their primitive, a draggable playhead and draggable segment boundaries that snap to frames and
to nearby keyframes.

The timeline never edits segments itself: it emits what the user asked for (``boundaryMoved``,
``splitRequested``, ``mergeRequested`` …) and the owner (the annotation model behind a QUndoStack)
applies the edit and calls ``set_segments`` back. A boundary drag the owner does not apply snaps
back, so the bars always show the model's state.

Keyboard: ``handle_key`` maps a key to a named action and ``trigger(name)`` runs it. The names,
titles and default keys are the app's action registry's (app/actions.py); given a Keymap, the
timeline follows the user's overrides too. The Annotate tab puts the same actions in its menus.

Segments are half-open frame intervals ``[start, end)``: touching segments share one boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from app import actions
from app.playback import Playback
from widgets import style

# Display order of primitives for the 1–9 keys (matches the vocabulary in DESIGN.md).
DEFAULT_PRIMITIVE_KEYS = ("grasp", "place", "lift", "lower", "transport", "wrist_rotate",
                          "reorient", "push", "pull")

# Vertical layout in view coordinates: curves in [0, 1], keyframe ticks above, bars below.
CURVE_LO, CURVE_HI = 0.0, 1.0
TICK_Y = 1.06
LANE_LO, LANE_HI = -0.40, -0.08
Y_MIN, Y_MAX = -0.44, 1.32   # the band above the ticks holds the legend


@dataclass(frozen=True)
class SegmentSpan:
    """What the timeline needs of a segment; ``set_segments`` accepts richer objects too."""

    start: int
    end: int            # exclusive
    primitive: str = ""
    label: str = ""     # shown instead of the primitive when given (e.g. an instruction)


def as_span(seg: Any) -> SegmentSpan:
    """Accept a SegmentSpan, an object with start/end/primitive attributes, a mapping with those
    keys, or a (start, end[, primitive]) tuple — the annotation model is free in its own type."""
    if isinstance(seg, SegmentSpan):
        return seg
    if isinstance(seg, Mapping):
        get = seg.get
    elif isinstance(seg, (tuple, list)):
        vals = list(seg) + ["", ""]
        return SegmentSpan(int(vals[0]), int(vals[1]), str(vals[2] or ""), str(vals[3] or ""))
    else:
        def get(key, default=None):
            return getattr(seg, key, default)
    start, end = get("start"), get("end")
    if start is None or end is None:
        raise ValueError(f"segment needs start and end, got {seg!r}")
    return SegmentSpan(int(start), int(end), str(get("primitive", "") or ""), str(get("label", "") or ""))


# The timeline's own actions: their names, titles and default keys live in the app's one action
# registry (app/actions.py, context "annotate"); the user's overrides arrive through a Keymap.
TIMELINE_ACTION_NAMES = ("play", "prev_frame", "next_frame", "prev_frame_10", "next_frame_10",
                         "prev_boundary", "next_boundary", "split", "merge", "delete", "undo", "redo",
                         *(f"primitive_{i}" for i in range(1, 10)))
# Action name → (default keys, description), as the registry has them.
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    n: (actions.get(n).keys, actions.get(n).label) for n in TIMELINE_ACTION_NAMES}


def _key_table(keymap: actions.Keymap | None = None) -> dict[tuple[int, int], str]:
    table: dict[tuple[int, int], str] = {}
    for name in TIMELINE_ACTION_NAMES:
        keys = keymap.keys(name) if keymap is not None else ACTIONS[name][0]
        for text in keys:
            combo = QtGui.QKeySequence(text)[0]
            mods = combo.keyboardModifiers() & ~QtCore.Qt.KeypadModifier
            table[(int(combo.key().value), int(mods.value))] = name
    return table


class _SnapLine(pg.InfiniteLine):
    """Vertical line whose position passes through a snapping function while dragged."""

    def __init__(self, *args, snap=None, **kwargs):
        self.snap = None   # InfiniteLine.__init__ already calls setPos
        super().__init__(*args, **kwargs)
        self.snap = snap

    def setPos(self, pos):  # noqa: N802 (Qt naming)
        if self.snap is not None and getattr(self, "moving", False):
            x = pos.x() if isinstance(pos, QtCore.QPointF) else (
                pos[0] if isinstance(pos, (list, tuple, np.ndarray)) and np.ndim(pos) else pos)
            pos = self.snap(self, float(x))
        super().setPos(pos)


class Timeline(QtWidgets.QWidget):
    frameChanged = QtCore.Signal(int)             # playhead moved by the user or playback
    boundaryMoved = QtCore.Signal(int, str, int)  # segment index, "start" | "end", new frame
    splitRequested = QtCore.Signal(int)           # frame
    mergeRequested = QtCore.Signal(int)           # segment index (merged with the next one)
    deleteRequested = QtCore.Signal(int)          # segment index
    primitiveRequested = QtCore.Signal(int, str)  # segment index, primitive name
    segmentSelected = QtCore.Signal(int)          # -1 when none
    undoRequested = QtCore.Signal()
    redoRequested = QtCore.Signal()
    playingChanged = QtCore.Signal(bool)

    SNAP_PX = 8.0   # keyframes closer than this (screen pixels) capture a dragged boundary

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, fps: float = 20.0,
                 primitive_keys: Sequence[str] = DEFAULT_PRIMITIVE_KEYS, keymap: actions.Keymap | None = None):
        super().__init__(parent)
        self.setFocusPolicy(QtCore.Qt.StrongFocus)
        self._n_frames = 1
        self._frame = 0
        self._fps = float(fps)
        self._segments: list[SegmentSpan] = []
        self._keyframes = np.zeros(0, dtype=int)
        self._selected = -1
        self._primitive_keys = list(primitive_keys)
        self._undo_stack: QtGui.QUndoStack | None = None
        self._set_segments_calls = 0
        self._keymap = keymap
        self._keys = _key_table(keymap)
        if keymap is not None:   # an override re-keys the timeline too (its old key must stop working)
            unsubscribe = keymap.subscribe(self._on_keymap_changed)
            self.destroyed.connect(lambda *_: unsubscribe())

        self.plot = pg.PlotWidget(background=style.BACKGROUND)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setFocusPolicy(QtCore.Qt.NoFocus)
        pi = self.plot.getPlotItem()
        pi.hideAxis("left")
        pi.showGrid(x=True, y=False, alpha=0.15)
        axis = pi.getAxis("bottom")
        axis.setPen(pg.mkPen(style.GRID))
        axis.setTextPen(pg.mkPen(style.TEXT_DIM))
        self.vb = pi.getViewBox()
        self.vb.setMouseEnabled(x=True, y=False)
        self.vb.setYRange(Y_MIN, Y_MAX, padding=0)
        self.vb.setLimits(yMin=Y_MIN, yMax=Y_MAX)
        self.legend = pi.addLegend(offset=(8, 4), labelTextColor=style.TEXT, labelTextSize="8pt",
                                   brush=pg.mkBrush(30, 33, 39, 180), colCount=4)
        self._curves: dict[str, pg.PlotDataItem] = {}

        self._tick_lines = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(style.GRID, width=1))
        self._tick_marks = pg.ScatterPlotItem(size=9, symbol="t", pen=None)
        pi.addItem(self._tick_lines)
        pi.addItem(self._tick_marks)

        lane_bg = QtWidgets.QGraphicsRectItem(-1e7, LANE_LO, 2e7, LANE_HI - LANE_LO)
        lane_bg.setBrush(pg.mkBrush(style.PANEL))
        lane_bg.setPen(pg.mkPen(None))
        lane_bg.setZValue(-10)
        pi.addItem(lane_bg, ignoreBounds=True)
        self._bar_items: list[QtWidgets.QGraphicsRectItem] = []
        self._label_items: list[pg.TextItem] = []
        self._boundary_lines: list[_SnapLine] = []
        self._boundary_owner: list[tuple[int, str]] = []   # per visible line: (segment, edge)

        self.playhead = _SnapLine(pos=0, angle=90, movable=True, snap=self._snap_playhead,
                                  pen=pg.mkPen(style.PLAYHEAD, width=2),
                                  hoverPen=pg.mkPen(style.ACCENT, width=3),
                                  label="{value:.0f}", labelOpts={"position": 0.97,
                                                                  "color": style.TEXT,
                                                                  "fill": (30, 33, 39, 200)})
        self.playhead.setZValue(100)
        self.playhead.sigPositionChanged.connect(self._on_playhead_moved)
        pi.addItem(self.playhead, ignoreBounds=True)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_click)
        self.vb.sigXRangeChanged.connect(lambda *_: self._update_label_visibility())

        # The same playback the Annotate controller uses (app/playback.py), for a timeline on its own.
        self._playback = Playback(lambda: self._frame, lambda f: self.set_frame(f, emit=True), parent=self)
        self._playback.n_frames, self._playback.fps = self._n_frames, self._fps
        self._playback.playingChanged.connect(self.playingChanged)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.set_n_frames(1)

    # -- data --------------------------------------------------------------------------------

    def set_n_frames(self, n: int, fps: float | None = None) -> None:
        self._n_frames = max(int(n), 1)
        if fps is not None:
            self._fps = float(fps)
        self._playback.n_frames, self._playback.fps = self._n_frames, self._fps
        self.vb.setLimits(xMin=-1, xMax=self._n_frames + 1)
        self.vb.setXRange(0, self._n_frames, padding=0.01)
        self.playhead.setBounds((0, self._n_frames - 1))
        self.set_frame(min(self._frame, self._n_frames - 1))

    @property
    def n_frames(self) -> int:
        return self._n_frames

    def set_curves(self, curves: Mapping[str, np.ndarray]) -> None:
        """Named per-frame series (e.g. gripper, speed, height); each is scaled to the curve
        lane on its own (their units differ), the legend shows the raw range."""
        for item in self._curves.values():
            self.plot.getPlotItem().removeItem(item)
        self._curves.clear()
        self.legend.clear()
        extra = iter(style.EXTRA_CURVE_COLORS * 4)
        for name, values in curves.items():
            v = np.asarray(values, dtype=float).ravel()
            if len(v) != self._n_frames:
                raise ValueError(f"curve {name!r} has {len(v)} values for {self._n_frames} frames")
            finite = v[np.isfinite(v)]
            lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
            span = hi - lo if hi > lo else 1.0
            y = CURVE_LO + 0.05 + 0.9 * (v - lo) / span
            color = style.CURVE_COLORS.get(name) or next(extra)
            item = pg.PlotDataItem(np.arange(len(v)), y, pen=pg.mkPen(color, width=1.5),
                                   connect="finite", name=f"{name}  {lo:.2g} … {hi:.2g}")
            self.plot.getPlotItem().addItem(item)
            self._curves[name] = item

    def set_keyframes(self, frames: Iterable[int], kinds: Iterable[str] | None = None) -> None:
        frames = np.asarray(list(frames), dtype=int).ravel()
        kinds = list(kinds) if kinds is not None else ["static"] * len(frames)
        if len(kinds) != len(frames):
            raise ValueError(f"{len(frames)} keyframes but {len(kinds)} kinds")
        order = np.argsort(frames, kind="stable")
        self._keyframes = frames[order]
        kinds = [kinds[i] for i in order]
        brushes = [pg.mkBrush(style.KEYFRAME_COLORS.get(k, style.TEXT_DIM)) for k in kinds]
        self._tick_marks.setData(x=self._keyframes, y=np.full(len(frames), TICK_Y), brush=brushes)
        xs = np.repeat(self._keyframes, 2).astype(float)
        ys = np.tile([CURVE_LO, TICK_Y - 0.03], len(frames))
        self._tick_lines.setData(xs, ys)

    def keyframes(self) -> np.ndarray:
        return self._keyframes.copy()

    def set_segments(self, segments: Iterable[Any]) -> None:
        spans = sorted((as_span(s) for s in segments), key=lambda s: (s.start, s.end))
        for s in spans:
            if s.end <= s.start:
                raise ValueError(f"segment [{s.start}, {s.end}) is empty or reversed")
        self._segments = spans
        self._set_segments_calls += 1
        self._rebuild_bars()
        if self._selected >= len(spans):
            self._select(-1)

    def segments(self) -> list[SegmentSpan]:
        return list(self._segments)

    def set_primitive_keys(self, names: Sequence[str]) -> None:
        """Primitive names for the keys 1–9, in order."""
        self._primitive_keys = list(names)[:9]

    def set_undo_stack(self, stack: QtGui.QUndoStack | None) -> None:
        """Ctrl+Z / Ctrl+Shift+Z then also drive this stack (the signals are emitted either way)."""
        self._undo_stack = stack

    # -- playhead and playback ---------------------------------------------------------------

    @property
    def frame(self) -> int:
        return self._frame

    def set_frame(self, frame: int, *, emit: bool = False) -> None:
        """Move the playhead. The owner calls this with emit=False (e.g. to follow its video);
        user actions inside the timeline emit ``frameChanged``."""
        frame = int(np.clip(frame, 0, self._n_frames - 1))
        changed = frame != self._frame
        self._frame = frame
        if abs(self.playhead.value() - frame) > 1e-9:
            self.playhead.setValue(frame)   # _on_playhead_moved sees _frame already equal
        if changed and emit:
            self.frameChanged.emit(frame)

    def _snap_playhead(self, _line, x: float) -> float:
        return float(np.clip(round(x), 0, self._n_frames - 1))

    def _on_playhead_moved(self, line) -> None:
        frame = int(round(line.value()))
        if frame != self._frame:
            self._frame = frame
            self.frameChanged.emit(frame)

    def is_playing(self) -> bool:
        return self._playback.is_playing()

    def set_playing(self, on: bool) -> None:
        self._playback.set_playing(on)

    # -- boundaries --------------------------------------------------------------------------

    def boundaries(self) -> list[int]:
        """Distinct boundary frames, sorted."""
        return sorted({b for s in self._segments for b in (s.start, s.end)})

    def snap_frame(self, x: float, lo: int = 0, hi: int | None = None) -> int:
        """Where a boundary dragged to ``x`` lands: the nearest keyframe when it is within
        SNAP_PX screen pixels, otherwise the nearest frame; clamped to [lo, hi]."""
        hi = self._n_frames if hi is None else hi
        frame = int(round(x))
        if len(self._keyframes):
            px = self.vb.viewPixelSize()[0] if self.vb.width() > 0 else 0.0
            k = self._keyframes[np.argmin(np.abs(self._keyframes - x))]
            if abs(k - x) <= self.SNAP_PX * px and lo <= k <= hi:
                frame = int(k)
        return int(np.clip(frame, lo, hi))

    def _boundary_limits(self, seg: int, edge: str) -> tuple[int, int]:
        """A boundary may not cross the other edge of its segment(s): segments never invert."""
        s = self._segments[seg]
        if edge == "start":
            prev_end = max((p.end for p in self._segments[:seg] if p.end <= s.start), default=0)
            return max(prev_end, 0), s.end - 1
        nxt = self._segments[seg + 1] if seg + 1 < len(self._segments) else None
        if nxt is not None and nxt.start == s.end:   # shared boundary: keep the next non-empty
            return s.start + 1, nxt.end - 1
        next_start = nxt.start if nxt is not None else self._n_frames
        return s.start + 1, next_start

    def _snap_boundary(self, line: _SnapLine, x: float) -> float:
        seg, edge = self._boundary_owner[self._boundary_lines.index(line)]
        lo, hi = self._boundary_limits(seg, edge)
        return float(self.snap_frame(x, lo, hi))

    def _on_boundary_released(self, line: _SnapLine) -> None:
        i = self._boundary_lines.index(line)
        seg, edge = self._boundary_owner[i]
        old = getattr(self._segments[seg], edge)
        new = int(round(line.value()))
        calls = self._set_segments_calls
        if new != old:
            self.boundaryMoved.emit(seg, edge, new)
        if self._set_segments_calls == calls:
            # The owner did not apply it (or rejected it): show the model's state again.
            line.setValue(old)

    def _rebuild_bars(self) -> None:
        pi = self.plot.getPlotItem()
        for item in self._bar_items + self._label_items:
            pi.removeItem(item)
        self._bar_items, self._label_items = [], []
        owners: list[tuple[int, str, int]] = []
        for i, s in enumerate(self._segments):
            color = QtGui.QColor(style.primitive_color(s.primitive))
            rect = QtWidgets.QGraphicsRectItem(s.start, LANE_LO, s.end - s.start, LANE_HI - LANE_LO)
            color.setAlpha(230)
            rect.setBrush(QtGui.QBrush(color))
            pen = QtGui.QPen(QtGui.QColor(style.BACKGROUND))
            pen.setCosmetic(True)
            rect.setPen(pen)
            rect.setZValue(-5)
            pi.addItem(rect, ignoreBounds=True)
            self._bar_items.append(rect)
            text = s.label or s.primitive or "?"
            label = pg.TextItem(text, color="#ffffff", anchor=(0.5, 0.5))
            label.setPos((s.start + s.end) / 2.0, (LANE_LO + LANE_HI) / 2)
            label.setZValue(-4)
            pi.addItem(label, ignoreBounds=True)
            self._label_items.append(label)
            if i == 0 or self._segments[i - 1].end != s.start:
                owners.append((i, "start", s.start))
            # A boundary shared by touching segments is one handle, reported as the left
            # segment's end; the model keeps its neighbour touching.
            owners.append((i, "end", s.end))
        while len(self._boundary_lines) < len(owners):
            line = _SnapLine(angle=90, movable=True, snap=self._snap_boundary,
                             pen=pg.mkPen("#e5e9f0", width=2),
                             hoverPen=pg.mkPen(style.ACCENT, width=4))
            line.setSpan((LANE_LO - Y_MIN) / (Y_MAX - Y_MIN), (LANE_HI - Y_MIN) / (Y_MAX - Y_MIN))
            line.setZValue(50)
            line.sigPositionChangeFinished.connect(self._on_boundary_released)
            pi.addItem(line, ignoreBounds=True)
            self._boundary_lines.append(line)
        self._boundary_owner = [(seg, edge) for seg, edge, _ in owners]
        for line, (_, _, frame) in zip(self._boundary_lines, owners):
            line.moving = False
            line.setValue(frame)
            line.setVisible(True)
        for line in self._boundary_lines[len(owners):]:
            line.setVisible(False)
        self._highlight_selected()
        self._update_label_visibility()

    def _update_label_visibility(self) -> None:
        px = self.vb.viewPixelSize()[0] if self.vb.width() > 0 else 1.0
        for s, label in zip(self._segments, self._label_items):
            width_px = (s.end - s.start) / px if px > 0 else 0
            label.setVisible(width_px >= label.boundingRect().width() + 6)

    # -- selection ---------------------------------------------------------------------------

    def segment_at(self, frame: int) -> int:
        for i, s in enumerate(self._segments):
            if s.start <= frame < s.end:
                return i
        return -1

    def selected_segment(self) -> int:
        """The clicked segment, else the one under the playhead (-1 if none)."""
        if 0 <= self._selected < len(self._segments):
            return self._selected
        return self.segment_at(self._frame)

    def select_segment(self, index: int) -> None:
        self._select(index if 0 <= index < len(self._segments) else -1)

    def _select(self, index: int) -> None:
        if index != self._selected:
            self._selected = index
            self._highlight_selected()
            self.segmentSelected.emit(index)

    def _highlight_selected(self) -> None:
        for i, rect in enumerate(self._bar_items):
            pen = QtGui.QPen(QtGui.QColor("#ffffff" if i == self._selected else style.BACKGROUND))
            pen.setCosmetic(True)
            pen.setWidthF(2.0 if i == self._selected else 1.0)
            rect.setPen(pen)
            rect.setZValue(-4.5 if i == self._selected else -5)

    def _on_scene_click(self, event) -> None:
        if event.button() != QtCore.Qt.LeftButton or event.isAccepted():
            return
        p = self.vb.mapSceneToView(event.scenePos())
        frame = int(np.clip(round(p.x()), 0, self._n_frames - 1))
        if LANE_LO <= p.y() <= LANE_HI:
            self._select(self.segment_at(frame))
        else:
            self.set_frame(frame, emit=True)
        self.setFocus()

    # -- keyboard ----------------------------------------------------------------------------

    @staticmethod
    def shortcuts() -> list[tuple[str, str, str]]:
        """(action name, default key sequence, description) of the timeline's registry actions."""
        return [(name, keys[0], text) for name, (keys, text) in ACTIONS.items()]

    def _on_keymap_changed(self, name: str) -> None:
        if name.removeprefix(actions.PREFIX) in ACTIONS:
            self._keys = _key_table(self._keymap)

    def handle_key(self, key: int, modifiers: QtCore.Qt.KeyboardModifier = QtCore.Qt.NoModifier) -> bool:
        mods = QtCore.Qt.KeyboardModifier(modifiers) & ~QtCore.Qt.KeypadModifier
        name = self._keys.get((int(key), int(mods.value)))
        if name is None and mods & QtCore.Qt.ShiftModifier:
            # "[" / "]" / digits arrive with Shift on some layouts; the key itself decides.
            name = self._keys.get((int(key), int((mods & ~QtCore.Qt.ShiftModifier).value)))
            if name in ("prev_frame", "next_frame"):
                name = None
        if name is None:
            return False
        self.trigger(name)
        return True

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802
        if not self.handle_key(event.key(), event.modifiers()):
            super().keyPressEvent(event)

    def trigger(self, name: str) -> None:
        """Run a named action (see ``ACTIONS``)."""
        seg = self.selected_segment()
        if name == "play":
            self.set_playing(not self.is_playing())
        elif name in ("prev_frame", "next_frame", "prev_frame_10", "next_frame_10"):
            step = 10 if name.endswith("_10") else 1
            self.set_frame(self._frame + (step if name.startswith("next") else -step), emit=True)
        elif name == "prev_boundary":
            before = [b for b in self.boundaries() if b < self._frame]
            if before:
                self.set_frame(before[-1], emit=True)
        elif name == "next_boundary":
            after = [b for b in self.boundaries() if b > self._frame]
            if after:
                self.set_frame(after[0], emit=True)
        elif name == "split":
            self.splitRequested.emit(self._frame)
        elif name == "merge":
            if 0 <= seg < len(self._segments) - 1:
                self.mergeRequested.emit(seg)
        elif name == "delete":
            if seg >= 0:
                self.deleteRequested.emit(seg)
        elif name.startswith("primitive_"):
            k = int(name.rsplit("_", 1)[1]) - 1
            if seg >= 0 and k < len(self._primitive_keys):
                self.primitiveRequested.emit(seg, self._primitive_keys[k])
        elif name == "undo":
            self.undoRequested.emit()
            if self._undo_stack is not None:
                self._undo_stack.undo()
        elif name == "redo":
            self.redoRequested.emit()
            if self._undo_stack is not None:
                self._undo_stack.redo()
        else:
            raise ValueError(f"unknown timeline action {name!r}")
