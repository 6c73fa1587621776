"""Recorded-episode player: the frame (RGB, depth or both) and a transport row.

Frames arrive from the owner (already decoded off the UI thread); the player only wraps and
paints them. A recorded episode has no live signal, so the camera view's "NO SIGNAL" overlay is off.
"""
from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtWidgets

from widgets import style
from widgets.camera_view import CameraView


class VideoPlayer(QtWidgets.QWidget):
    playToggled = QtCore.Signal()
    loopToggled = QtCore.Signal(bool)
    modeChanged = QtCore.Signal(str)       # rgb | depth | both

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.view = CameraView(no_signal_after=float("inf"))
        self.view.setFocusPolicy(QtCore.Qt.NoFocus)
        self.shown_frame = -1
        self.frames_shown = 0
        self._n = 1
        self._fps = 20.0

        bar = QtWidgets.QWidget()
        bar.setObjectName("viewToolbar")
        bar.setStyleSheet(style.TOOLBAR_QSS)
        self.play_button = QtWidgets.QToolButton()
        self.play_button.setText("▶ Play")
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.clicked.connect(self.playToggled)
        self.loop_button = QtWidgets.QToolButton()
        self.loop_button.setText("⟲ Loop segment")
        self.loop_button.setToolTip("Loop the current segment while playing (L)")
        self.loop_button.setCheckable(True)
        self.loop_button.toggled.connect(self.loopToggled)
        self.mode = QtWidgets.QComboBox()
        self.mode.addItems(["rgb", "depth", "both"])
        self.mode.currentTextChanged.connect(self._on_mode)
        self.position = QtWidgets.QLabel("—")
        self.position.setMinimumWidth(190)
        for w in (self.play_button, self.loop_button, self.mode):
            w.setFocusPolicy(QtCore.Qt.NoFocus)
        row = QtWidgets.QHBoxLayout(bar)
        row.setContentsMargins(4, 2, 4, 2)
        row.addWidget(self.play_button)
        row.addWidget(self.loop_button)
        row.addStretch(1)
        row.addWidget(self.position)
        row.addWidget(QtWidgets.QLabel("view"))
        row.addWidget(self.mode)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.view, 1)
        lay.addWidget(bar)

    def set_episode(self, n_frames: int, fps: float, depth_scale: float = 0.001) -> None:
        self._n, self._fps = max(1, int(n_frames)), float(fps)
        self.view.clear()
        self.view.depth_scale = depth_scale
        self.shown_frame = -1
        self.set_position(0)

    def set_position(self, frame: int) -> None:
        self.position.setText(f"frame {frame} / {self._n - 1}   ·   {frame / self._fps:6.2f} s")

    def show_frame(self, frame: int, rgb: np.ndarray | None, depth: np.ndarray | None) -> None:
        self.view.set_frame(rgb, depth, label=f"frame {frame}")
        self.shown_frame = frame
        self.frames_shown += 1

    def set_playing(self, on: bool) -> None:
        self.play_button.setText("⏸ Pause" if on else "▶ Play")

    def set_looping(self, on: bool) -> None:
        if self.loop_button.isChecked() != on:
            self.loop_button.blockSignals(True)
            self.loop_button.setChecked(on)
            self.loop_button.blockSignals(False)

    def _on_mode(self, mode: str) -> None:
        self.view.set_mode(mode)
        self.modeChanged.emit(mode)
