"""Device bar: pick robot / camera / input by URI, connect, status lights, live readouts, E-STOP.

A view only: it emits ``connectRequested(robot, camera, input, rate)`` / ``disconnectRequested`` /
``estopRequested`` / ``resetEstopRequested`` and shows what the controller reports.
"""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from robots.factory import parse_arm, parse_camera, parse_input, UriError
from widgets import style

ROBOTS = ["sim-franka", "sim-xarm6", "franka:172.16.0.2", "xarm6:192.168.1.208"]
CAMERAS = ["sim", "sim-wrist", "realsense", "bag:recording.bag", "none"]
INPUTS = ["scripted", "keyboard", "spacemouse", "none"]
LIGHT_COLORS = {"off": "#4a505c", "green": "#3bb273", "amber": style.WARNING, "red": style.ERROR}


class StatusLight(QtWidgets.QWidget):
    """A coloured dot with a caption; tooltip says what the colour means."""

    def __init__(self, caption: str, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.caption = caption
        self.state = "off"
        self.setMinimumWidth(QtGui.QFontMetrics(self.font()).horizontalAdvance(caption) + 22)
        self.setFixedHeight(22)
        self.setToolTip(f"{caption}: not connected")

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            meaning = {"off": "not connected", "green": "ok", "amber": "waiting / held",
                       "red": "fault"}[state]
            self.setToolTip(f"{self.caption}: {meaning}")
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QtGui.QPainter(self)
        p.setRenderHint(QtGui.QPainter.Antialiasing)
        h = self.height()
        p.setPen(QtCore.Qt.NoPen)
        p.setBrush(QtGui.QColor(LIGHT_COLORS[self.state]))
        p.drawEllipse(QtCore.QRectF(2, h / 2 - 6, 12, 12))
        p.setPen(QtGui.QColor(style.TEXT))
        p.drawText(QtCore.QRectF(19, 0, self.width() - 19, h), QtCore.Qt.AlignVCenter, self.caption)


def _uri_combo(items: list[str], tip: str) -> QtWidgets.QComboBox:
    c = QtWidgets.QComboBox()
    c.setEditable(True)  # hardware addresses and bag paths are typed
    c.addItems(items)
    c.setInsertPolicy(QtWidgets.QComboBox.NoInsert)
    c.setToolTip(tip)
    c.setMinimumContentsLength(12)
    c.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
    return c


class DeviceBar(QtWidgets.QFrame):
    connectRequested = QtCore.Signal(str, str, str, float)
    disconnectRequested = QtCore.Signal()
    estopRequested = QtCore.Signal()
    resetEstopRequested = QtCore.Signal()
    invalidUri = QtCore.Signal(str)
    calibrateRequested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("device_bar")
        self.robot = _uri_combo(ROBOTS, "sim-franka | sim-xarm6 | franka:<ip> | xarm6:<ip>")
        self.camera = _uri_combo(CAMERAS, "sim | sim-wrist | realsense[:SERIAL] | bag:PATH | none")
        self.input = _uri_combo(INPUTS, "scripted (sim) | keyboard | spacemouse | none")
        self.rate = QtWidgets.QDoubleSpinBox()
        self.rate.setRange(1.0, 100.0)
        self.rate.setDecimals(0)
        self.rate.setSuffix(" Hz")
        self.rate.setValue(20.0)
        self.rate.setToolTip("control rate")
        self.connect_button = QtWidgets.QPushButton("Connect")
        self.connect_button.setObjectName("connect_button")
        self.connect_button.setMinimumWidth(104)
        self.connect_button.clicked.connect(self._on_connect_clicked)
        self.busy = QtWidgets.QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate: device start-up has no measurable progress
        self.busy.setFixedWidth(70)
        self.busy.setTextVisible(False)
        self.busy.hide()

        self.lights = {k: StatusLight(k.capitalize()) for k in ("robot", "camera", "input")}
        # Shown while a hardware camera has no hand-eye calibration: its clouds are in the camera
        # frame, not the robot's, so crops and the action expert see nothing useful. Click = calibrate.
        self.calibration_badge = QtWidgets.QToolButton()
        self.calibration_badge.setObjectName("calibration_badge")
        self.calibration_badge.setText("⚠ uncalibrated")
        self.calibration_badge.setToolTip("This camera has no hand-eye calibration: T_base_camera is the identity and "
                                          "point clouds stay in the camera frame. Click to calibrate "
                                          "(Tools > Calibrate camera…).")
        self.calibration_badge.setStyleSheet(f"QToolButton {{ color: #1b1d22; background: {style.WARNING}; "
                                             "border-radius: 4px; padding: 2px 6px; font-weight: bold; }")
        self.calibration_badge.setFocusPolicy(QtCore.Qt.NoFocus)
        self.calibration_badge.clicked.connect(self.calibrateRequested)
        self.calibration_badge.hide()
        self.rate_label = QtWidgets.QLabel("— Hz")
        self.dropped_label = QtWidgets.QLabel("dropped 0")
        self.lag_label = QtWidgets.QLabel("lag 0")
        for lab, tip in ((self.rate_label, "control rate measured from tick periods"),
                         (self.dropped_label, "camera frames never seen + frames the recorder could not keep"),
                         (self.lag_label, "frames waiting for the episode writer")):
            lab.setToolTip(tip)
            lab.setMinimumWidth(QtGui.QFontMetrics(lab.font()).horizontalAdvance("000.0 / 100 Hz"))

        self.estop_button = QtWidgets.QPushButton("E-STOP  (Esc)")
        self.estop_button.setObjectName("estop_button")
        self.estop_button.setToolTip("Emergency stop: halts the arm now and latches until reset (Esc, anywhere)")
        self.estop_button.setMinimumSize(150, 44)
        self.estop_button.setFocusPolicy(QtCore.Qt.NoFocus)
        self.estop_button.clicked.connect(self.estopRequested)
        self.reset_button = QtWidgets.QPushButton("Reset E-stop")
        self.reset_button.setObjectName("reset_estop_button")
        self.reset_button.setEnabled(False)
        self.reset_button.clicked.connect(self.resetEstopRequested)

        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(8)
        for caption, w in (("Robot", self.robot), ("Camera", self.camera), ("Input", self.input),
                           ("Rate", self.rate)):
            lab = QtWidgets.QLabel(caption)
            lab.setBuddy(w)
            lab.setStyleSheet(f"color: {style.TEXT_DIM}")
            lay.addWidget(lab)
            lay.addWidget(w)
        lay.addWidget(self.connect_button)
        lay.addWidget(self.busy)
        lay.addSpacing(12)
        for light in self.lights.values():
            lay.addWidget(light)
            if light is self.lights["camera"]:
                lay.addWidget(self.calibration_badge)
        lay.addSpacing(8)
        for lab in (self.rate_label, self.dropped_label, self.lag_label):
            lay.addWidget(lab)
        lay.addStretch(1)
        lay.addWidget(self.reset_button)
        lay.addWidget(self.estop_button)
        self._connected = False

    # ---------------------------------------------------------------- values
    def values(self) -> tuple[str, str, str, float]:
        return (self.robot.currentText().strip(), self.camera.currentText().strip(),
                self.input.currentText().strip(), float(self.rate.value()))

    def set_values(self, robot: str, camera: str, inp: str, rate: float) -> None:
        for combo, text in ((self.robot, robot), (self.camera, camera), (self.input, inp)):
            combo.setCurrentText(text)
        self.rate.setValue(rate)

    def _on_connect_clicked(self) -> None:
        if self._connected:
            self.disconnectRequested.emit()
            return
        robot, camera, inp, rate = self.values()
        try:  # catch typos here, before anything starts
            parse_arm(robot), parse_camera(camera), parse_input(inp)
        except UriError as exc:
            self.invalidUri.emit(str(exc))
            return
        self.connectRequested.emit(robot, camera, inp, rate)

    # ---------------------------------------------------------------- controller feedback
    def set_busy(self, busy: bool, what: str = "") -> None:
        self.busy.setVisible(busy)
        self.busy.setToolTip(what)
        self.connect_button.setEnabled(not busy)

    def set_connected(self, connected: bool) -> None:
        self._connected = connected
        self.connect_button.setText("Disconnect" if connected else "Connect")
        for w in (self.robot, self.camera, self.input, self.rate):
            w.setEnabled(not connected)

    def set_lights(self, lights: dict) -> None:
        for k, v in lights.items():
            if k in self.lights:
                self.lights[k].set_state(v)

    def set_stats(self, stats) -> None:
        if stats.target_hz:
            self.rate_label.setText(f"{stats.rate_hz:5.1f} / {stats.target_hz:g} Hz")
            low = stats.rate_hz and stats.rate_hz < 0.9 * stats.target_hz
            self.rate_label.setStyleSheet(f"color: {style.WARNING}" if low else "")
        else:
            self.rate_label.setText("— Hz")
        self.dropped_label.setText(f"dropped {stats.dropped}")
        self.dropped_label.setStyleSheet(f"color: {style.WARNING}" if stats.dropped else "")
        self.lag_label.setText(f"lag {stats.lag}")
        self.lag_label.setStyleSheet(f"color: {style.WARNING}" if stats.lag > 5 else "")

    def set_camera_calibrated(self, calibrated: bool | None) -> None:
        """False shows the uncalibrated badge; True or None (no camera) hides it."""
        self.calibration_badge.setVisible(calibrated is False)

    def set_estopped(self, on: bool) -> None:
        self.reset_button.setEnabled(on)
        self.estop_button.setText("E-STOPPED" if on else "E-STOP  (Esc)")
