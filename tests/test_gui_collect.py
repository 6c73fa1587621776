"""The main window's Collect flow, driven with pytest-qt on the REAL simulated lab.

connect sim-franka → scripted episode → outcome dialog → Success → the episode is listed and reads
back with outcome success; keyboard teleop + F5 record + D(iscard); Esc E-STOP stops the arm;
bad device URIs and crashed episodes reach the operator as dialogs.

No GL widget is in the Collect tab, so these run on Qt's offscreen platform as well as under Xvfb.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets

from app.settings import Settings
from recorder.episode import EpisodeReader
from widgets.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[1]
CONNECT_MS = 90_000  # the sim process starts in ~5 s idle, much longer on a loaded CI box


@pytest.fixture
def make_window(qtbot, tmp_path):
    made = []

    def make(devices, dataset=None):
        win = MainWindow(Settings(tmp_path / "settings.ini"), dataset=dataset or tmp_path / "data",
                         devices=devices)
        qtbot.addWidget(win)
        win.resize(1400, 850)
        win.show()
        made.append(win)
        return win

    yield make
    for win in made:
        win.controller.shutdown()  # sim process stopped, a take left by a failed test kept
        win.close()


def _connect(qtbot, win):
    with qtbot.waitSignal(win.controller.connectedChanged, timeout=CONNECT_MS):
        qtbot.mouseClick(win.device_bar.connect_button, QtCore.Qt.LeftButton)
    assert win.device_bar.connect_button.text() == "Disconnect"
    # Live frames reach the camera view and the lights turn green.
    qtbot.waitUntil(lambda: win.collect_tab.camera_view.fps() > 0, timeout=20_000)
    qtbot.waitUntil(lambda: win.device_bar.lights["robot"].state == "green"
                    and win.device_bar.lights["camera"].state == "green", timeout=10_000)


def _franky_sim_can_hold_its_loop() -> bool:
    # franky-sim streams libfranka UDP at 1 kHz into this process; with the 1-minute load above
    # ~2 per core it drops the connection ("UDP receive: Timeout") and franky's client then aborts
    # the whole interpreter on teardown. Measured: fine at load < 3, lost at load 9-15 (2 cores).
    return os.getloadavg()[0] < 2.0 * (os.cpu_count() or 1)


@pytest.mark.parametrize("robot", ["sim-franka", "sim-xarm6"])
def test_scripted_episode_marked_success_is_listed_and_reads_back(qtbot, make_window, tmp_path, robot):
    if robot == "sim-franka" and not _franky_sim_can_hold_its_loop():
        pytest.skip(f"load average {os.getloadavg()[0]:.1f}: franky-sim cannot hold its 1 kHz loop "
                    "(the sim-xarm6 case runs the same flow)")
    win = make_window((robot, "sim", "scripted", 20.0))
    _connect(qtbot, win)
    tab = win.collect_tab
    assert tab.scripted_button.isEnabled()
    qtbot.mouseClick(tab.scripted_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.controller.recording, timeout=10_000)
    assert tab.record_button.text() == "■ Stop"
    # The rate readout shows the measured control rate while recording.
    qtbot.waitUntil(lambda: "/ 20 Hz" in win.device_bar.rate_label.text(), timeout=5_000)
    qtbot.waitUntil(lambda: win.outcome_dialog is not None, timeout=60_000)
    dlg = win.outcome_dialog
    request = dlg.request
    assert request.default in ("success", "failure") and request.reason == "expert finished"
    assert dlg.button(request.default).isDefault()  # the sim's verdict is the default answer
    qtbot.keyClicks(dlg.notes, "clean grasp")
    with qtbot.waitSignal(win.controller.episodeSaved, timeout=20_000) as saved:
        qtbot.mouseClick(dlg.button("success"), QtCore.Qt.LeftButton)
    path = saved.args[0].path
    assert path is not None and path.parent == tmp_path / "data"
    qtbot.waitUntil(lambda: path.name in tab.episode_list.names(), timeout=5_000)
    assert tab.episode_list.row(path.name)["outcome"] == "success"
    assert "1 episodes · 1 success" in tab.summary.text()
    with EpisodeReader(path) as ep:
        assert ep.meta["outcome"] == "success" and ep.meta["robot"] == robot
        assert ep.meta["task"] == "pick_cube" and ep.meta["instruction"] == "pick up the red cube"
        assert ep.n_frames > 40
        assert {"grasp", "lift"} <= set(ep.extras["expert_phase"])
        assert ep.rgb(ep.n_frames // 2).std() > 5
    # Back to teleop: a fresh control loop runs, the next scripted run would use the next seed.
    qtbot.waitUntil(lambda: win.controller.loop is not None and win.controller.loop.running, timeout=10_000)
    assert win.controller.next_seed == 1 and not win.controller.recording
    # The Annotate tab opens the dataset just recorded into, with the take listed (issue 12).
    win.settings.set("annotate/annotator", "ci")
    win.tabs.setCurrentWidget(win.annotate_tab)
    qtbot.waitUntil(lambda: [r["name"] for r in win.annotate_tab.browser.rows()] == [path.name], timeout=10_000)


def test_keyboard_record_keys_and_esc_estop_stop_the_arm(qtbot, make_window, tmp_path):
    # sim-xarm6: its servo loop runs inside the sim process. franky-sim's 1 kHz libfranka stream
    # into this process stalls ("loop_stalled", then "UDP receive: Timeout") when CI load reaches
    # ~15 on 2 cores, which made this timing-sensitive test flaky on sim-franka.
    win = make_window(("sim-xarm6", "sim", "keyboard", 20.0))
    _connect(qtbot, win)
    ctl = win.controller
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=5_000)
    # F5 starts a take; W (held) drives the arm away from the operator (+x).
    qtbot.keyClick(win, QtCore.Qt.Key_F5)
    qtbot.waitUntil(lambda: ctl.recording, timeout=10_000)
    x0 = ctl.loop.arm.state().ee_pose[:3].copy()
    qtbot.keyPress(win.collect_tab.camera_view, QtCore.Qt.Key_W)
    qtbot.waitUntil(lambda: ctl.loop.arm.state().ee_pose[0] - x0[0] > 0.02, timeout=5_000)
    qtbot.keyRelease(win.collect_tab.camera_view, QtCore.Qt.Key_W)
    d = ctl.loop.arm.state().ee_pose[:3] - x0
    assert abs(d[1]) < 0.5 * d[0] and abs(d[2]) < 0.5 * d[0], d  # mostly along +x
    # F5 stops; D in the outcome dialog discards the take (no file left).
    qtbot.keyClick(win, QtCore.Qt.Key_F5)
    qtbot.waitUntil(lambda: win.outcome_dialog is not None, timeout=10_000)
    # The timer shows the take's duration and stops with it while the dialog is open (issue 12:
    # it kept counting, 44.9 s for a 7.1 s take).
    rec_status = win.collect_tab.rec_status
    qtbot.waitUntil(lambda: "outcome?" in rec_status.text(), timeout=5_000)
    shown = rec_status.text()
    assert f"{win.outcome_dialog.request.seconds:5.1f} s" in shown, shown
    qtbot.wait(1200)
    assert rec_status.text() == shown
    # D typed as an operator would: into whatever has the focus (not the notes field).
    qtbot.waitUntil(lambda: QtWidgets.QApplication.focusWidget() is not None, timeout=5_000)
    assert QtWidgets.QApplication.focusWidget() is not win.outcome_dialog.notes
    with qtbot.waitSignal(ctl.episodeSaved, timeout=10_000) as saved:
        qtbot.keyClick(QtWidgets.QApplication.focusWidget(), QtCore.Qt.Key_D)
    assert saved.args[0].path is None and not list((tmp_path / "data").glob("*.h5"))
    qtbot.waitUntil(lambda: ctl.loop is not None and ctl.loop.running, timeout=10_000)

    # Moving again, then Esc: the loop latches the e-stop, the arm is stopped and stays put.
    qtbot.keyPress(win.collect_tab.camera_view, QtCore.Qt.Key_A)
    qtbot.wait(400)
    loop = ctl.loop
    qtbot.keyClick(win.collect_tab.task, QtCore.Qt.Key_Escape)  # from a child widget: app-wide shortcut
    qtbot.waitUntil(lambda: loop.estopped and any(r == "estop" for _, r in loop.stop_calls), timeout=2_000)
    qtbot.wait(400)  # franky-sim's velocity dead-man settles
    p1 = loop.arm.state().ee_pose[:3].copy()
    qtbot.wait(500)
    p2 = loop.arm.state().ee_pose[:3]
    qtbot.keyRelease(win.collect_tab.camera_view, QtCore.Qt.Key_A)
    assert np.linalg.norm(p2 - p1) < 0.003, (p1, p2)  # held although A was still down
    assert win.device_bar.estop_button.text() == "E-STOPPED"
    assert not win.act_record.isEnabled() and win.device_bar.reset_button.isEnabled()
    qtbot.mouseClick(win.device_bar.reset_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: not ctl.estopped and not loop.estopped, timeout=5_000)
    # E-STOP also stopped the (simulated) controller: after the reset the arm needs Recover.
    qtbot.waitUntil(lambda: ctl.fault.startswith("arm_fault"), timeout=5_000)
    assert not win.act_record.isEnabled()
    qtbot.mouseClick(win.device_bar.recover_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: not ctl.fault and win.act_record.isEnabled(), timeout=10_000)


def test_bad_uri_shows_one_line_error_and_connects_nothing(qtbot, make_window):
    win = make_window(("sim-franka", "kinect", "keyboard", 20.0))
    qtbot.mouseClick(win.device_bar.connect_button, QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.error_box is not None and win.error_box.isVisible(), timeout=5_000)
    text = win.error_box.text()
    assert text.startswith("unknown camera 'kinect'") and "\n" not in text
    assert "unknown camera" in win.statusBar().currentMessage()
    assert not win.controller.connected and not win.controller.busy


def test_crashed_episode_prompts_recover_on_start(qtbot, make_window, tmp_path):
    from test_collect_controller import CRASHING_WRITER

    data = tmp_path / "data"
    data.mkdir()
    path = data / "crashed.h5"
    child = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(path)], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    assert child.stdout.readline()
    qtbot.wait(1500)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    win = make_window(("sim-franka", "sim", "scripted", 20.0), dataset=data)
    qtbot.waitUntil(lambda: win.recovery_dialog is not None and win.recovery_dialog.isVisible(), timeout=10_000)
    assert "crashed.h5" in win.recovery_dialog.informativeText()
    # The unrecovered file is listed in red with its message as the tooltip.
    qtbot.waitUntil(lambda: win.collect_tab.episode_list.row("crashed.h5") is not None, timeout=5_000)
    assert win.collect_tab.episode_list.row("crashed.h5")["outcome"] == "bad"
    with qtbot.waitSignal(win.controller.recoveryDone, timeout=20_000):
        qtbot.mouseClick(win.recovery_dialog.buttons["recover"], QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: win.collect_tab.episode_list.row("crashed.h5")["outcome"] == "unknown", timeout=5_000)
    with EpisodeReader(path) as ep:
        assert ep.n_frames > 0


def test_settings_persist_devices_task_and_geometry(qtbot, make_window, tmp_path):
    win = make_window(("sim-xarm6", "none", "keyboard", 50.0))
    win.collect_tab.set_task("stack_cubes", "stack red on green")
    win.resize(1200, 800)
    qtbot.waitUntil(lambda: win.controller.dataset_folder is not None, timeout=5_000)
    win.close()
    s = Settings(tmp_path / "settings.ini")
    assert s.get("devices/robot") == "sim-xarm6" and s.get("devices/camera") == "none"
    assert s.get("devices/rate_hz") == 50.0
    assert s.get("collect/task") == "stack_cubes" and s.get("collect/instruction") == "stack red on green"
    assert s.get("dataset/folder") == str(tmp_path / "data")
    win2 = MainWindow(s)
    qtbot.addWidget(win2)
    assert win2.device_bar.values() == ("sim-xarm6", "none", "keyboard", 50.0)
    assert win2.collect_tab.task.currentText() == "stack_cubes"
    assert not s.get("window/geometry").isEmpty()  # restored by restoreGeometry (screen-dependent)
    win2.close()
