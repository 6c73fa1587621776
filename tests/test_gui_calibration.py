"""The calibration dialog driven with pytest-qt on the REAL simulated lab (xArm6), and its entry point
in the main window (Tools > Calibrate camera…, the uncalibrated badge)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6 import QtCore

from app.settings import Settings
from robots import calibration_store
from robots.sim.lab import SimLab
from widgets.calibration_dialog import CalibrationDialog
from widgets.main_window import MainWindow

pytestmark = pytest.mark.timeout(400)
CONNECT_MS = 90_000


@pytest.fixture(scope="module")
def lab():
    lab = SimLab.start("xarm6", realtime=False, render_hz=10.0)
    arm, cam = lab.arm(), lab.camera()
    arm.connect()
    cam.start()
    yield lab, arm, cam
    lab.close()


def test_dialog_detects_the_board_calibrates_and_accept_stores(qtbot, lab, tmp_path):
    lab, arm, cam = lab
    dlg = CalibrationDialog(arm, cam, lab=lab, robot="sim-xarm6", store_dir=tmp_path)
    qtbot.addWidget(dlg)
    dlg.show()
    # Live overlay: the preview shows frames and, at the centre pose, finds the board.
    qtbot.mouseClick(dlg.centre_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: not dlg.running, timeout=60_000)
    qtbot.waitUntil(lambda: "board: 12 corners" in dlg.view._frame_label, timeout=20_000)
    assert not dlg.accept_button.isEnabled()
    qtbot.mouseClick(dlg.start_button, QtCore.Qt.LeftButton)
    assert dlg.running and not dlg.start_button.isEnabled() and dlg.start_button.text() == "Redo"
    qtbot.waitUntil(lambda: dlg.progress.value() >= 2, timeout=60_000)  # progress while the arm moves
    qtbot.waitUntil(lambda: not dlg.running, timeout=180_000)
    assert dlg.result is not None, dlg.status.text()
    assert dlg.progress.value() == dlg.progress.maximum() == 8
    text = dlg.residuals.text()
    assert "residuals" in text and "reprojection" in text
    err_mm = float(text.split("error vs simulator truth: ")[1].split(" mm")[0])
    assert err_mm < 5.0
    assert dlg.accept_button.isEnabled() and dlg.start_button.isEnabled()
    with qtbot.waitSignal(dlg.stored, timeout=5_000) as stored:
        qtbot.mouseClick(dlg.accept_button, QtCore.Qt.LeftButton)
    doc = json.loads(open(stored.args[0]).read())
    assert doc["serial"] == "sim-xarm6-scene_cam" and doc["setup"] == "eye-to-hand"
    np.testing.assert_allclose(doc["T_base_camera"], dlg.result.T)
    assert not dlg.isVisible()
    # Closing hid the board again: task images never show it.
    from app.calibration import fresh_frame
    from robots.charuco import BoardSpec, CharucoBoard
    import time

    assert not CharucoBoard(BoardSpec()).detect(fresh_frame(cam, time.monotonic()).rgb).found


def test_dialog_reports_bad_input_without_moving(qtbot, lab, tmp_path):
    lab, arm, cam = lab
    before = arm.state().ee_pose.copy()
    dlg = CalibrationDialog(arm, cam, lab=lab, robot="sim-xarm6", store_dir=tmp_path)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.squares.setText("5by4")
    qtbot.mouseClick(dlg.start_button, QtCore.Qt.LeftButton)
    assert not dlg.running and "5x4" in dlg.status.text()
    dlg.squares.setText("5x4")
    dlg.marker_mm.setValue(60.0)  # bigger than the 40 mm square
    qtbot.mouseClick(dlg.start_button, QtCore.Qt.LeftButton)
    assert not dlg.running and "marker size" in dlg.status.text()
    assert np.linalg.norm(arm.state().ee_pose[:3] - before[:3]) < 0.002
    dlg.done(0)


def test_main_window_tools_menu_opens_the_dialog_with_teleop_paused(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv(calibration_store.ENV_DIR, str(tmp_path / "calib"))
    win = MainWindow(Settings(tmp_path / "settings.ini"), dataset=tmp_path / "data",
                     devices=("sim-xarm6", "sim", "scripted", 20.0))
    qtbot.addWidget(win)
    win.show()
    try:
        assert not win.act_calibrate.isEnabled()  # nothing connected
        with qtbot.waitSignal(win.controller.connectedChanged, timeout=CONNECT_MS):
            qtbot.mouseClick(win.device_bar.connect_button, QtCore.Qt.LeftButton)
        qtbot.waitUntil(win.act_calibrate.isEnabled, timeout=10_000)
        assert "Calibrate camera" in [a.text().replace("&", "") for m in win.menuBar().actions()
                                      if m.text() == "&Tools" for a in m.menu().actions()][0]
        # The simulated camera knows its pose: no badge. A hardware camera without calibration shows it.
        assert win.device_bar.calibration_badge.isHidden()
        win.controller.session.camera.calibrated = False
        win._update_calibration_badge()
        assert not win.device_bar.calibration_badge.isHidden()
        win.controller.session.camera.calibrated = True
        win._update_calibration_badge()

        win.act_calibrate.trigger()
        dlg = win.calibration_dialog
        assert dlg is not None and dlg.isVisible()
        assert win.controller.busy == "calibrating the camera" and win.controller.loop is None
        assert not win.act_calibrate.isEnabled() and not win.act_record.isEnabled()
        qtbot.mouseClick(dlg.cancel_button, QtCore.Qt.LeftButton)
        qtbot.waitUntil(lambda: win.calibration_dialog is None, timeout=10_000)
        assert not win.controller.busy and win.controller.loop is not None and win.controller.loop.running
        assert win.act_calibrate.isEnabled()
    finally:
        win.controller.shutdown()
        win.close()


def test_estop_during_a_run_stops_the_pose_sequence_and_the_arm_stays(qtbot, tmp_path, monkeypatch):
    import app.calibration

    monkeypatch.setenv(calibration_store.ENV_DIR, str(tmp_path / "calib"))
    # The stopped sim arm never finishes the move it was in; its move_to times out (then the run ends).
    monkeypatch.setattr(app.calibration, "MOVE_TIMEOUT_S", 6.0)
    win = MainWindow(Settings(tmp_path / "settings.ini"), dataset=tmp_path / "data",
                     devices=("sim-xarm6", "sim", "scripted", 20.0))
    qtbot.addWidget(win)
    win.show()
    try:
        with qtbot.waitSignal(win.controller.connectedChanged, timeout=CONNECT_MS):
            qtbot.mouseClick(win.device_bar.connect_button, QtCore.Qt.LeftButton)
        qtbot.waitUntil(win.act_calibrate.isEnabled, timeout=10_000)
        win.act_calibrate.trigger()
        dlg = win.calibration_dialog
        qtbot.mouseClick(dlg.start_button, QtCore.Qt.LeftButton)
        qtbot.waitUntil(lambda: dlg.progress.value() >= 1, timeout=60_000)
        win.act_estop.trigger()
        qtbot.waitUntil(lambda: not dlg.running, timeout=60_000)
        assert dlg.result is None and not dlg.accept_button.isEnabled()
        assert "calibration stopped; the arm stays where it is" in dlg.status.text()
        arm = win.controller.session.arm
        p0 = arm.state().ee_pose[:3].copy()
        qtbot.wait(1500)
        assert np.linalg.norm(arm.state().ee_pose[:3] - p0) < 0.002  # no move back after the E-STOP
        qtbot.mouseClick(dlg.cancel_button, QtCore.Qt.LeftButton)
        qtbot.waitUntil(lambda: win.calibration_dialog is None, timeout=10_000)
        assert win.controller.estopped and win.controller.loop is not None and win.controller.loop.estopped
    finally:
        win.controller.shutdown()
        win.close()
