"""Device bar: pick robot / camera / input by URI, connect, status lights, live readouts, E-STOP.

A view only: it emits ``connectRequested(robot, camera, input, rate)`` / ``disconnectRequested`` /
``estopRequested`` / ``resetEstopRequested`` / ``recoverRequested`` / ``homeRequested`` and shows what
the controller reports. A latched fault turns the robot light red and shows its reason beside the
lights (full text in the tooltip) until Recover clears it.
"""
from __future__ import annotations

import html

from PySide6 import QtCore, QtGui, QtWidgets

from robots.device_config import ArmConfig, CameraConfig, InputConfig
from robots.factory import parse_arm, parse_camera, parse_input, UriError
from widgets import style

# Choices and tooltips come from the device registry (robots/device_config.py): a new device kind
# shows up here without touching the bar. Inputs list the sim's scripted operator first.
ROBOTS = ArmConfig.examples()
CAMERAS = CameraConfig.examples()
INPUTS = sorted(InputConfig.examples(), key=lambda uri: uri != "scripted")
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
    c.setMinimumContentsLength(10)
    c.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
    return c


class DeviceBar(QtWidgets.QFrame):
    connectRequested = QtCore.Signal(str, str, str, float)
    disconnectRequested = QtCore.Signal()
    estopRequested = QtCore.Signal()
    resetEstopRequested = QtCore.Signal()
    recoverRequested = QtCore.Signal()
    homeRequested = QtCore.Signal()
    invalidUri = QtCore.Signal(str)
    calibrateRequested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("device_bar")
        self.robot = _uri_combo(ROBOTS, ArmConfig.usage())
        self.camera = _uri_combo(CAMERAS, CameraConfig.usage())
        self.input = _uri_combo(INPUTS, InputConfig.usage())
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

        # Fault banner: a second row, shown only while a fault is latched, so the reason is readable in
        # full without widening the bar.
        self.fault_banner = QtWidgets.QFrame()
        self.fault_banner.setObjectName("fault_banner")
        self.fault_banner.setStyleSheet(f"QFrame#fault_banner {{ background: {style.ERROR}; border-radius: 4px; }}"
                                        "QFrame#fault_banner QLabel { color: white; }")
        self.fault_label = QtWidgets.QLabel("")
        self.fault_label.setObjectName("fault_label")
        self.fault_label.setWordWrap(True)
        self.fault_label.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.recover_button = QtWidgets.QPushButton("Recover  (Ctrl+Shift+R)")
        self.recover_button.setObjectName("recover_button")
        self.recover_button.setToolTip("Clear the controller fault (reflex, error code, controller e-stop) "
                                       "so the arm can move again")
        self.recover_button.setStyleSheet("QPushButton { background: white; color: #8e0000; font-weight: bold; "
                                          "padding: 4px 12px; border-radius: 4px; }")
        self.recover_button.setEnabled(False)
        self.recover_button.clicked.connect(self.recoverRequested)
        banner = QtWidgets.QHBoxLayout(self.fault_banner)
        banner.setContentsMargins(10, 4, 6, 4)
        icon = QtWidgets.QLabel("\u26a0")
        icon.setStyleSheet("font-size: 18px")
        banner.addWidget(icon)
        banner.addWidget(self.fault_label, 1)
        banner.addWidget(self.recover_button)
        self.fault_banner.hide()
        self.home_button = QtWidgets.QPushButton("Home")
        self.home_button.setObjectName("home_button")
        self.home_button.setToolTip("Move the arm to its home configuration (Ctrl+Shift+H)")
        self.home_button.setEnabled(False)
        self.home_button.clicked.connect(self.homeRequested)
        self._fault = ""

        # Two rows with the E-STOP beside both: the devices on top, what they report below. In one
        # row the bar needed 1618 px and pushed the E-STOP off a 1600 px screen (issue 12); the
        # window must fit 1280 × 800 with the E-STOP in view.
        devices = QtWidgets.QHBoxLayout()
        devices.setSpacing(6)
        for caption, w in (("Robot", self.robot), ("Camera", self.camera), ("Input", self.input),
                           ("Rate", self.rate)):
            lab = QtWidgets.QLabel(caption)
            lab.setBuddy(w)
            lab.setStyleSheet(f"color: {style.TEXT_DIM}")
            devices.addWidget(lab)
            devices.addWidget(w, 1)
            devices.addSpacing(4)
        devices.addWidget(self.connect_button)
        devices.addWidget(self.busy)
        readouts = QtWidgets.QHBoxLayout()
        readouts.setSpacing(8)
        for light in self.lights.values():
            readouts.addWidget(light)
            if light is self.lights["camera"]:
                readouts.addWidget(self.calibration_badge)
        readouts.addSpacing(12)
        for lab in (self.rate_label, self.dropped_label, self.lag_label):
            readouts.addWidget(lab)
        readouts.addStretch(1)
        readouts.addWidget(self.home_button)
        rows = QtWidgets.QVBoxLayout()
        rows.setSpacing(4)
        rows.addLayout(devices)
        rows.addLayout(readouts)

        # The fault banner is a row of its own under the bar, shown only while a fault is latched.
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(8, 6, 8, 6)
        outer.setSpacing(4)
        lay = QtWidgets.QHBoxLayout()
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(10)
        outer.addLayout(lay)
        outer.addWidget(self.fault_banner)
        lay.addLayout(rows, 1)
        lay.addWidget(self.reset_button)
        lay.addWidget(self.estop_button)
        self.estop_button.setSizePolicy(QtWidgets.QSizePolicy.Fixed, QtWidgets.QSizePolicy.Expanding)
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
        self.home_button.setEnabled(connected)
        self.recover_button.setEnabled(connected)
        if not connected:
            self.set_fault("")

    def set_fault(self, reason: str) -> None:
        """Show a latched fault (red light + reason) or clear it (``""``)."""
        self._fault = reason = (reason or "").strip()
        if reason:
            kind, _, detail = reason.partition(": ")
            detail = html.escape(detail)
            text = {"arm_fault": "Arm fault", "arm_error": "Arm error", "arm_disconnected": "Arm lost",
                    "outside_workspace": "Outside workspace", "input_lost": "Input lost",
                    "source_error": "Source error"}.get(kind, kind)
            self.fault_label.setText(f"<b>{text}</b>" + (f": {detail}" if detail else "")
                                     + ("" if "Recover" in detail else " — remove the cause, then Recover."))
            self.fault_label.setToolTip(f"{reason}\n\nPress Recover once the cause is removed.")
            self.lights["robot"].set_state("red")
        else:
            self.fault_label.setText("")
            self.fault_label.setToolTip("")
        self.fault_banner.setVisible(bool(reason))

    @property
    def fault(self) -> str:
        return self._fault

    def set_lights(self, lights: dict) -> None:
        for k, v in lights.items():
            if k in self.lights:
                if k == "robot" and self._fault:
                    v = "red"  # a latched fault stays red until Recover, whatever the tick says
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
