"""Lab settings dialog: the bench's TCP offset and workspace box per robot family (Devices menu).

Values are checked with robots.lab_config before they are stored (app/lab_settings.py); a bad box
shows its one-line reason in the dialog and nothing is saved. They take effect at the next Connect:
the driver writes the TCP offset to the controller and the workspace bounds the safety filter.
"""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from app.lab_settings import load_lab_config, save_lab_config
from robots.lab_config import LabConfig
from widgets import style

FAMILIES = ("franka", "xarm6")


def _spin(lo: float, hi: float, tip: str) -> QtWidgets.QDoubleSpinBox:
    s = QtWidgets.QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(4)
    s.setSingleStep(0.005)
    s.setSuffix(" m")
    s.setToolTip(tip)
    return s


class LabSettingsDialog(QtWidgets.QDialog):
    def __init__(self, settings, robot: str = "franka", parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Lab settings")
        self.settings = settings
        self.family = QtWidgets.QComboBox()
        self.family.addItems(FAMILIES)
        self.tcp = [_spin(-0.4, 0.4, f"TCP {a}: fingertip centre in the flange frame") for a in "xyz"]
        self.lo = [_spin(-1.5, 1.5, f"workspace {a} min (robot base frame)") for a in "xyz"]
        self.hi = [_spin(-1.5, 1.5, f"workspace {a} max (robot base frame)") for a in "xyz"]
        self.error = QtWidgets.QLabel("")
        self.error.setObjectName("lab_settings_error")
        self.error.setStyleSheet(f"color: {style.ERROR}")
        self.error.setWordWrap(True)

        form = QtWidgets.QGridLayout()
        form.addWidget(QtWidgets.QLabel("Robot"), 0, 0)
        form.addWidget(self.family, 0, 1, 1, 3)
        for col, axis in enumerate("xyz", start=1):
            head = QtWidgets.QLabel(axis)
            head.setAlignment(QtCore.Qt.AlignCenter)
            form.addWidget(head, 1, col)
        for row, (name, spins) in enumerate((("TCP offset (flange → fingertips)", self.tcp),
                                             ("Workspace min", self.lo), ("Workspace max", self.hi)), start=2):
            form.addWidget(QtWidgets.QLabel(name), row, 0)
            for col, sp in enumerate(spins, start=1):
                form.addWidget(sp, row, col)
        note = QtWidgets.QLabel("Applies at the next Connect. The box bounds the fingertips (TCP), must lie in the "
                                "robot's reach box and stay above the table (z ≥ 0). Simulated grippers keep "
                                "their modelled TCP.")
        note.setWordWrap(True)
        note.setStyleSheet(f"color: {style.TEXT_DIM}")
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Save | QtWidgets.QDialogButtonBox.Cancel
                                             | QtWidgets.QDialogButtonBox.RestoreDefaults)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QtWidgets.QDialogButtonBox.RestoreDefaults).clicked.connect(
            lambda: self._show(LabConfig.default(self.family.currentText())))
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(self.error)
        lay.addWidget(buttons)

        self.family.currentTextChanged.connect(self._load)
        fam = robot.removeprefix("sim-").partition(":")[0]
        self.family.setCurrentText(fam if fam in FAMILIES else FAMILIES[0])
        self._load(self.family.currentText())

    def _load(self, fam: str) -> None:
        self._show(load_lab_config(fam, self.settings))
        self.error.setText("")

    def _show(self, cfg: LabConfig) -> None:
        for sp, v in zip(self.tcp + self.lo + self.hi, (*cfg.tcp_offset, *cfg.workspace.lo, *cfg.workspace.hi)):
            sp.setValue(float(v))

    def config(self) -> LabConfig:
        """The values shown, checked; ValueError with one line if they do not pass."""
        return LabConfig.from_values(self.family.currentText(), [s.value() for s in self.tcp],
                                     [s.value() for s in self.lo + self.hi])

    def accept(self) -> None:
        try:
            cfg = self.config()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        save_lab_config(cfg, self.settings)
        super().accept()
