"""Guided hand-eye calibration: the arm visits N poses, the board is detected live, residuals shown,
Accept stores the result for the camera (app/calibration.py does the work, off the UI thread).

Two threads besides the UI: a preview that detects the board in the newest frame a few times a
second (the overlay), and the run (arm moves, detections, solve). They share the camera through one
lock and read it only with ``latest()``, so neither can steal the other's frame.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from PySide6 import QtCore, QtWidgets

from app.calibration import (METHODS, SETUPS, CalibrationError, CalibrationResult, Progress, apply_to_camera,
                             camera_key, fresh_frame, pose_set, run_calibration, save_result, sim_pose_centre, sim_truth,
                             transform_error)
from robots.charuco import DICTIONARIES, BoardError, BoardSpec, CharucoBoard, draw_detection
from widgets import style
from widgets.camera_view import CameraView

PREVIEW_PERIOD_S = 0.25


class _SharedCamera:
    """The dialog's view of the camera: ``latest()`` under a lock; ``wait_frame`` polls it, so the
    run and the preview never consume each other's frames."""

    def __init__(self, camera, lock: threading.Lock):
        self._cam, self._lock = camera, lock
        self.name = camera.name
        self._last_index = None

    def latest(self):
        with self._lock:
            return self._cam.latest()

    def wait_frame(self, timeout: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            f = self.latest()
            if f is not None and f.index != self._last_index:
                self._last_index = f.index
                return f
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no new frame within {timeout:g} s")
            time.sleep(0.01)


class CalibrationDialog(QtWidgets.QDialog):
    previewReady = QtCore.Signal(object, str)  # overlay rgb, caption
    progressed = QtCore.Signal(object)  # Progress
    finished_ok = QtCore.Signal(object)  # CalibrationResult
    failed = QtCore.Signal(str)
    stored = QtCore.Signal(str)  # path of the stored calibration

    def __init__(self, arm, camera, *, lab=None, robot: str = "", parent: QtWidgets.QWidget | None = None,
                 store_dir=None):
        super().__init__(parent)
        self.setWindowTitle("Calibrate camera")
        self.setObjectName("calibration_dialog")
        self.arm, self.camera, self.lab, self.robot = arm, camera, lab, robot
        self.store_dir = store_dir
        self.result: CalibrationResult | None = None
        self._lock = threading.Lock()
        self._cam = _SharedCamera(camera, self._lock)
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._running = False
        self._preview_board = CharucoBoard(BoardSpec())
        self._preview_board_lock = threading.Lock()

        self.view = CameraView(title="board detection")
        self.view.setMinimumSize(480, 360)

        self.setup = QtWidgets.QComboBox()
        self.setup.addItems(SETUPS)
        # A camera on the wrist moves with the arm: eye-in-hand (the sim names it so).
        self.setup.setCurrentText("eye-in-hand" if str(getattr(camera, "name", "")).endswith("wrist_cam")
                                  else "eye-to-hand")
        self.setup.setToolTip("eye-to-hand: camera fixed, board on the gripper; eye-in-hand: camera on the wrist")
        self.n_poses = QtWidgets.QSpinBox()
        self.n_poses.setRange(5, 40)
        self.n_poses.setValue(8)
        self.seed = QtWidgets.QSpinBox()
        self.seed.setRange(0, 9999)
        self.method = QtWidgets.QComboBox()
        self.method.addItems(METHODS)
        self.method.setCurrentText("park")
        self.squares = QtWidgets.QLineEdit("5x4")
        self.square_mm = QtWidgets.QDoubleSpinBox()
        self.square_mm.setRange(5.0, 200.0)
        self.square_mm.setValue(40.0)
        self.marker_mm = QtWidgets.QDoubleSpinBox()
        self.marker_mm.setRange(3.0, 190.0)
        self.marker_mm.setValue(30.0)
        self.dictionary = QtWidgets.QComboBox()
        self.dictionary.addItems(DICTIONARIES)
        for w in (self.squares, self.square_mm, self.marker_mm, self.dictionary):
            w.setToolTip("must match the printed board")
        self.square_mm.setSuffix(" mm")
        self.marker_mm.setSuffix(" mm")
        form = QtWidgets.QFormLayout()
        form.addRow("Set-up", self.setup)
        form.addRow("Poses", self.n_poses)
        form.addRow("Pose set seed", self.seed)
        form.addRow("Start method", self.method)
        form.addRow("Board squares", self.squares)
        form.addRow("Square", self.square_mm)
        form.addRow("Marker", self.marker_mm)
        form.addRow("Dictionary", self.dictionary)
        self._inputs = (self.setup, self.n_poses, self.seed, self.method, self.squares, self.square_mm,
                        self.marker_mm, self.dictionary)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 8)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m poses")
        self.status = QtWidgets.QLabel(
            "Move to the centre pose, check the board is detected, then Start." if lab is not None else
            "Jog the arm so the camera sees the board squarely (the poses are taken around the current "
            "tool pose), check it is detected, then Start.")
        self.status.setWordWrap(True)
        self.residuals = QtWidgets.QLabel("")
        self.residuals.setObjectName("calibration_residuals")
        self.residuals.setWordWrap(True)
        self.residuals.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setMinimumHeight(90)

        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setObjectName("calibration_start")
        self.start_button.clicked.connect(self.start)
        self.accept_button = QtWidgets.QPushButton("Accept")
        self.accept_button.setObjectName("calibration_accept")
        self.accept_button.setEnabled(False)
        self.accept_button.clicked.connect(self.accept_result)
        # Sim: the pose set is centred where the plate faces the scene camera; this shows it there.
        # Hardware: the operator jogs the arm (teleop) before opening the dialog — the centre is
        # wherever the tool is when Start is pressed.
        self.centre_button = QtWidgets.QPushButton("Move to centre pose")
        self.centre_button.setObjectName("calibration_centre")
        self.centre_button.setToolTip("move the arm to the centre of the pose set (simulated lab)")
        self.centre_button.clicked.connect(self.move_to_centre)
        self.centre_button.setVisible(lab is not None)
        self.cancel_button = QtWidgets.QPushButton("Close")
        self.cancel_button.clicked.connect(self.reject)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.centre_button)
        buttons.addStretch(1)
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.cancel_button)

        side = QtWidgets.QVBoxLayout()
        side.addLayout(form)
        side.addWidget(self.progress)
        side.addWidget(self.status)
        side.addWidget(self.residuals)
        side.addStretch(1)
        side_w = QtWidgets.QWidget()
        side_w.setLayout(side)
        side_w.setFixedWidth(330)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.view, 1)
        top.addWidget(side_w)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(top, 1)
        lay.addWidget(self.log)
        lay.addLayout(buttons)

        self.previewReady.connect(self._show_preview)
        self.progressed.connect(self._on_progress)
        self.finished_ok.connect(self._on_result)
        self.failed.connect(self._on_failed)
        for w in (self.squares, self.square_mm, self.marker_mm, self.dictionary):
            (w.textChanged if isinstance(w, QtWidgets.QLineEdit) else
             w.currentTextChanged if isinstance(w, QtWidgets.QComboBox) else w.valueChanged).connect(self._board_changed)

        self.setup.currentTextChanged.connect(self._show_sim_board)
        # Sim: the board for the chosen set-up is drawn while this dialog is open (on the gripper, or
        # on its stand for the wrist camera), and the simulator's true camera pose lets the dialog
        # show the calibration error next to the residuals.
        self._show_sim_board()
        self._preview = threading.Thread(target=self._preview_loop, name="calibration-preview", daemon=True)
        self._preview.start()
        self.resize(1000, 640)

    # ------------------------------------------------------------------ inputs
    def board_spec(self) -> BoardSpec:
        try:
            sx, sy = (int(v) for v in self.squares.text().lower().split("x"))
        except ValueError:
            raise BoardError(f"board squares must look like 5x4, got {self.squares.text()!r}") from None
        return BoardSpec(sx, sy, self.square_mm.value() / 1000.0, self.marker_mm.value() / 1000.0,
                         self.dictionary.currentText())

    def _board_changed(self, *_) -> None:
        try:
            board = CharucoBoard(self.board_spec())
        except BoardError as exc:
            self.status.setText(str(exc))
            return
        with self._preview_board_lock:
            self._preview_board = board

    def _show_sim_board(self, *_) -> None:
        if self.lab is not None:
            self.lab.show_calibration_board(True, "gripper" if self.setup.currentText() == "eye-to-hand" else "table")

    def _set_inputs_enabled(self, on: bool) -> None:
        for w in self._inputs:
            w.setEnabled(on)

    # ------------------------------------------------------------------ preview thread
    def _preview_loop(self) -> None:
        while not self._stop.wait(PREVIEW_PERIOD_S):
            try:
                f = self._cam.latest()
            except Exception:
                continue
            if f is None:
                continue
            with self._preview_board_lock:
                board = self._preview_board
            det = board.detect(f.rgb)
            pose = board.pose(det, f.K) if det.found else None
            overlay = draw_detection(f.rgb, det, f.K, pose)
            caption = (f"board: {len(det.ids)} corners, PnP {pose.reprojection_px:.2f} px" if pose is not None
                       else f"board not detected ({len(det.ids)} corners)")
            if not self._stop.is_set():
                self.previewReady.emit(overlay, caption)

    def _show_preview(self, rgb: np.ndarray, caption: str) -> None:
        self.view.set_frame(rgb, label=caption)

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        """Start (or redo) a calibration run with the current settings."""
        if self._running:
            return
        try:
            spec = self.board_spec()
            state = self.arm.state()
            centre = (sim_pose_centre(self.robot, self.setup.currentText()) if self.lab is not None
                      else np.asarray(state.ee_pose, float))
            poses = pose_set(centre, self.n_poses.value(), self.seed.value(), workspace=self.arm.limits.workspace)
        except (BoardError, CalibrationError) as exc:
            self._on_failed(str(exc))
            return
        setup, method = self.setup.currentText(), self.method.currentText()
        self.result = None
        self.accept_button.setEnabled(False)
        self.residuals.setText("")
        self.progress.setRange(0, len(poses))
        self.progress.setValue(0)
        self.log.appendPlainText(f"— {setup}, {len(poses)} poses, {spec.describe()}")
        self.status.setText("moving through the poses …")
        self.start_button.setEnabled(False)
        self.centre_button.setEnabled(False)
        self.start_button.setText("Redo")
        self._set_inputs_enabled(False)
        self._cancel.clear()
        self._running = True

        def work():
            try:
                result = run_calibration(self.arm, self._cam, poses, spec, setup=setup, method=method,
                                         on_progress=self.progressed.emit, should_stop=self._cancel.is_set)
                if self.lab is not None:  # the arm is back at rest: frame and pose belong together
                    result.truth = sim_truth(setup, fresh_frame(self._cam, time.monotonic()), self.arm.state().ee_pose)
            except Exception as exc:  # a device error mid-run still ends in a message, not a hang
                if self._cancel.is_set():  # E-STOP / Close: whatever the interrupted move raised
                    self.failed.emit("calibration stopped; the arm stays where it is")
                elif isinstance(exc, (CalibrationError, BoardError)):
                    self.failed.emit(str(exc))
                else:
                    self.failed.emit(f"{type(exc).__name__}: {exc}".splitlines()[0])
            else:
                self.finished_ok.emit(result)

        threading.Thread(target=work, name="calibration-run", daemon=True).start()

    def move_to_centre(self) -> None:
        if self._running or self.lab is None:
            return
        self._running = True
        self.start_button.setEnabled(False)
        self.centre_button.setEnabled(False)
        self.status.setText("moving to the centre pose …")
        setup = self.setup.currentText()

        def work():
            try:
                self.arm.move_to(sim_pose_centre(self.robot, setup))
            except Exception as exc:
                self.failed.emit(f"move to the centre pose failed: {exc}".splitlines()[0])
            else:
                self.failed.emit("")  # not a failure: re-enables the inputs

        threading.Thread(target=work, name="calibration-centre", daemon=True).start()

    def _on_progress(self, p: Progress) -> None:
        self.progress.setValue(p.index + 1)
        self.log.appendPlainText(p.message)

    def _on_result(self, result: CalibrationResult) -> None:
        self._running = False
        self.result = result
        self._set_inputs_enabled(True)
        self.start_button.setEnabled(True)
        self.centre_button.setEnabled(True)
        self.accept_button.setEnabled(True)
        s = result.residuals.summary()
        lines = [f"<b>{result.n_views} views</b> · residuals (rms / max):",
                 f"translation {s['translation_mm_rms']:.2f} / {s['translation_mm_max']:.2f} mm",
                 f"rotation {s['rotation_deg_rms']:.3f} / {s['rotation_deg_max']:.3f} deg",
                 f"reprojection {s['reprojection_px_rms']:.2f} / {s['reprojection_px_max']:.2f} px"]
        if result.truth is not None:
            dt, dr = transform_error(result.T, result.truth)
            lines.append(f"error vs simulator truth: {dt:.2f} mm, {dr:.3f} deg")
        for w in result.warnings:
            lines.append(f"<span style='color:{style.WARNING}'>⚠ {w}</span>")
        self.residuals.setText("<br>".join(lines))
        self.status.setText("Accept stores this calibration for the camera; Redo runs again.")
        self.log.appendPlainText(result.report())

    def _on_failed(self, message: str) -> None:
        self._running = False
        self._set_inputs_enabled(True)
        self.start_button.setEnabled(True)
        self.centre_button.setEnabled(True)
        if not message:
            self.status.setText("At the centre pose: check the board is detected, then Start.")
            return
        self.status.setText(f"<span style='color:{style.ERROR}'>{message}</span>")
        self.log.appendPlainText(f"failed: {message}")

    @property
    def running(self) -> bool:
        return self._running

    def accept_result(self) -> None:
        if self.result is None:
            return
        key = camera_key(self.camera, self.robot)
        try:
            path = save_result(self.result, key, robot=self.robot, directory=self.store_dir)
        except (OSError, ValueError) as exc:
            self._on_failed(f"cannot store the calibration: {exc}")
            return
        applied = apply_to_camera(self.camera, self.result)
        self.log.appendPlainText(f"stored for camera {key}: {path}" + (" (in use now)" if applied else ""))
        self.stored.emit(str(path))
        self.accept()

    # ------------------------------------------------------------------ closing
    def cancel_run(self, on: bool = True) -> None:
        """Stop after the current pose (E-STOP — ``estopChanged(True)`` —, Close)."""
        if on:
            self._cancel.set()

    def done(self, r: int) -> None:  # accept / reject / close all end here
        if self._running:
            self.cancel_run()
            self.status.setText("stopping after the current pose …")
            QtCore.QTimer.singleShot(200, lambda: self.done(r))
            return
        self._stop.set()
        self._preview.join(timeout=2.0)
        if self.lab is not None:
            try:
                self.lab.show_calibration_board(False)
            except Exception:
                pass
        super().done(r)
