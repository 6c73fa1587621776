"""Frame-by-frame playback of a recorded episode: one frame per ``1 / fps`` on a precise QTimer.

Shared by the Annotate controller (which plays and may loop the segment under the playhead) and the
Timeline widget (which plays on its own when used without a controller), so both advance, stop and
loop the same way. The owner keeps the frame: ``Playback`` only reads it and asks for the next one.
"""
from __future__ import annotations

from typing import Callable

from PySide6 import QtCore


class Playback(QtCore.QObject):
    """Plays frames ``0 … n_frames - 1`` through ``get_frame`` / ``set_frame`` callbacks.

    Not looping, playback stops on the last frame, and starting it there begins again at frame 0.
    With ``loop`` on, starting takes the span ``span_at(frame)`` (``[start, end)``, or None when there
    is no span there) and playback wraps inside it.
    """

    playingChanged = QtCore.Signal(bool)

    def __init__(self, get_frame: Callable[[], int], set_frame: Callable[[int], None], *,
                 span_at: Callable[[int], tuple[int, int] | None] | None = None,
                 parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._get_frame = get_frame
        self._set_frame = set_frame
        self._span_at = span_at or (lambda _frame: None)
        self.n_frames = 0
        self.fps = 30.0
        self.loop = False
        self.loop_span: tuple[int, int] | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.PreciseTimer)
        self._timer.timeout.connect(self._on_tick)

    def is_playing(self) -> bool:
        return self._timer.isActive()

    def set_playing(self, on: bool) -> None:
        if on == self.is_playing():
            return
        if on:
            if self.loop:
                self.loop_span = self._span_at(self._get_frame())
            elif self._get_frame() >= self.n_frames - 1:
                self._set_frame(0)
            self._timer.start(max(1, int(round(1000.0 / self.fps))))
        else:
            self._timer.stop()
        self.playingChanged.emit(bool(on))

    def set_loop(self, on: bool) -> None:
        """Loop the span under the current frame (picked now, and again whenever playing starts)."""
        self.loop = bool(on)
        self.loop_span = self._span_at(self._get_frame()) if on else None

    def _on_tick(self) -> None:
        nxt = self._get_frame() + 1
        if self.loop and self.loop_span is not None:
            start, end = self.loop_span
            if not start <= nxt < end:
                nxt = start
        elif nxt >= self.n_frames:
            self.set_playing(False)
            return
        self._set_frame(nxt)
