"""A latched robot fault in the main window: red light + reason in the device bar until Recover.

Driven on the REAL simulated lab (sim-xarm6, whose simulated controller mirrors xArm's state 4 after
emergency_stop): E-STOP stops the controller, Reset E-stop leaves the arm faulted ("needs Recover"),
the device bar shows it, Recover clears it, Home moves the arm to its home pose with the loop paused.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PySide6 import QtCore

from app.settings import Settings
from widgets.main_window import MainWindow, apply_theme

ROOT = Path(__file__).resolve().parents[1]
CONNECT_MS = 90_000


@pytest.fixture
def window(qtbot, tmp_path):
    from PySide6 import QtWidgets

    apply_theme(QtWidgets.QApplication.instance())  # the screenshot shows the app as users see it
    win = MainWindow(Settings(tmp_path / "settings.ini"), dataset=tmp_path / "data",
                     devices=("sim-xarm6", "sim", "scripted", 20.0))
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    yield win
    win.controller.shutdown()
    win.close()


def test_fault_shows_red_light_and_reason_until_recover_and_home_works(qtbot, window, tmp_path):
    win, bar, ctl = window, window.device_bar, window.controller
    with qtbot.waitSignal(ctl.connectedChanged, timeout=CONNECT_MS):
        qtbot.mouseClick(bar.connect_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: bar.lights["robot"].state == "green", timeout=20_000)
    assert not bar.fault_banner.isVisible() and bar.home_button.isEnabled()

    # E-STOP stops the simulated controller; Reset E-stop releases the app's latch only.
    qtbot.mouseClick(bar.estop_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: ctl.loop is not None and ctl.loop.estopped, timeout=5_000)
    assert ctl.loop.arm.state().error.startswith("e-stopped")
    qtbot.mouseClick(bar.reset_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: not ctl.estopped, timeout=5_000)
    qtbot.waitUntil(lambda: bar.fault_banner.isVisible(), timeout=5_000)
    assert ctl.fault.startswith("arm_fault: e-stopped")
    assert bar.fault_banner.isVisible() and "e-stopped on the controller" in bar.fault_label.text()
    assert "Recover" in bar.fault_label.toolTip()
    assert bar.lights["robot"].state == "red"
    assert bar.recover_button.isEnabled() and not win.act_record.isEnabled()
    assert not ctl.start_recording()  # refused with a reason while faulted
    qtbot.wait(300)  # a few UI polls: the light must STAY red (latched), not flicker back
    assert bar.lights["robot"].state == "red"
    assert ctl._latest is not None and not ctl._latest.commanding  # the loop commands nothing
    # Written where ACTSTUDIO_SCREENSHOTS points (docs/screenshots to refresh the README's), else tmp.
    shots = Path(os.environ.get("ACTSTUDIO_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert win.grab().save(str(shots / "fault.png"))

    # Recover clears the controller state and the latch; the light goes green again.
    with qtbot.waitSignal(ctl.faultChanged, timeout=10_000, check_params_cb=lambda r: r == ""):
        qtbot.mouseClick(bar.recover_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: bar.lights["robot"].state == "green", timeout=5_000)
    assert not bar.fault_banner.isVisible() and ctl.loop.arm.state().error == ""
    assert win.act_record.isEnabled()

    # Home: away from home first (through the arm's own blocking move), then the Home button.
    arm = ctl.session.arm
    home = np.asarray(ctl.session.lab.info["home_pose"], dtype=float)
    ctl._stop_loop()
    arm.move_to(np.r_[home[:3] + [0.08, 0.08, 0.05], home[3:]], timeout=20)
    ctl._start_teleop_loop(ctl.session, ctl.recorder)
    assert np.linalg.norm(arm.state().ee_pose[:3] - home[:3]) > 0.05
    with qtbot.waitSignal(ctl.busyChanged, timeout=5_000, check_params_cb=lambda b, w: b and w.startswith("homing")):
        qtbot.mouseClick(bar.home_button, QtCore.Qt.LeftButton)
    assert bar.busy.isVisible() or ctl.busy.startswith("homing")
    qtbot.waitUntil(lambda: not ctl.busy and ctl.loop is not None and ctl.loop.running, timeout=30_000)
    assert np.linalg.norm(arm.state().ee_pose[:3] - home[:3]) < 0.01
    assert bar.lights["robot"].state == "green"


def test_lab_settings_dialog_saves_checked_values_and_refuses_a_bad_box(qtbot, tmp_path):
    from PySide6 import QtWidgets

    from app.lab_settings import load_lab_config
    from widgets.lab_settings_dialog import LabSettingsDialog

    apply_theme(QtWidgets.QApplication.instance())
    settings = Settings(tmp_path / "s.ini")
    dlg = LabSettingsDialog(settings, "xarm6:192.168.1.208")
    qtbot.addWidget(dlg)
    dlg.show()
    assert dlg.family.currentText() == "xarm6" and dlg.tcp[2].value() == pytest.approx(0.172)
    dlg.tcp[2].setValue(0.18)
    dlg.hi[2].setValue(0.45)
    shots = Path(os.environ.get("ACTSTUDIO_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert dlg.grab().save(str(shots / "lab_settings.png"))
    dlg.lo[0].setValue(0.7)  # lower corner beyond the upper one: refused, nothing stored
    dlg.accept()
    assert dlg.isVisible() and "below its upper corner" in dlg.error.text()
    assert not settings.contains("lab/xarm6/workspace")
    dlg.lo[0].setValue(0.2)
    dlg.accept()
    assert not dlg.isVisible()
    cfg = load_lab_config("xarm6", settings)
    assert cfg.tcp_offset == pytest.approx((0, 0, 0.18)) and cfg.workspace.hi[2] == pytest.approx(0.45)
