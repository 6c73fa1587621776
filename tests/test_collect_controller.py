"""CollectController flows (no widgets) and the Settings wrapper they persist through."""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray

from app.settings import Settings


def test_settings_round_trip_typed(tmp_path):
    ini = tmp_path / "s.ini"
    s = Settings(ini)
    assert s.get("devices/robot") == "sim-franka"  # registered default
    s.set("devices/robot", "sim-xarm6")
    s.set("view/point_size", 3.5)
    s.set("view/show_depth", False)
    s.set("collect/next_seed", 7)
    s.set("dataset/folder", tmp_path / "data")
    s.set("recent", ["a", "b"])
    s.set("window/geometry", QByteArray(b"\x01\x02"))
    s.sync()
    t = Settings(ini)  # a fresh instance reads the ini file back, where everything is text
    assert t.get("devices/robot") == "sim-xarm6"
    assert t.get("view/point_size") == 3.5
    assert t.get("view/show_depth") is False
    assert t.get("collect/next_seed") == 7
    assert t.get("dataset/folder", Path()) == tmp_path / "data"
    assert t.get("recent", []) == ["a", "b"]
    assert bytes(t.get("window/geometry")) == b"\x01\x02"


def test_settings_bad_value_falls_back_to_default(tmp_path):
    ini = tmp_path / "s.ini"
    ini.write_text("[view]\npoint_size=huge\nshow_depth=maybe\n")
    s = Settings(ini)
    assert s.get("view/point_size") == 2.0
    assert s.get("view/show_depth") is True
    assert s.get("view/point_size", 5.0) == 5.0


# ---------------------------------------------------------------------------------------------
# Controller flows on the real simulated lab (its own process; franky-sim serves the Franka).
# ---------------------------------------------------------------------------------------------
import numpy as np  # noqa: E402

from app.collect_controller import CollectController, HoldSource  # noqa: E402
from recorder.recovery import dead_partials  # noqa: E402
from recorder.episode import EpisodeReader  # noqa: E402
from robots.base import ArmState  # noqa: E402


def test_hold_source_keeps_the_first_pose():
    src = HoldSource()
    s0 = ArmState(0.0, np.array([0.4, 0, 0.3, 0, 0, 0, 1.0]), np.zeros(7), 0.8)
    s1 = ArmState(0.1, np.array([0.5, 0.1, 0.2, 0, 0, 0, 1.0]), np.zeros(7), 0.1)
    p0, g0, _ = src.next_target(s0, None, 0.0)
    p1, g1, _ = src.next_target(s1, None, 0.05)
    np.testing.assert_allclose(p1, s0.ee_pose)
    assert g0 == g1 == 0.8


@pytest.fixture
def controller(qtbot):
    ctl = CollectController(operator="ci", max_episode_s=30.0)
    yield ctl
    ctl.shutdown()


def _connect(qtbot, ctl, robot="sim-franka", inp="scripted"):
    errors = []
    ctl.errorOccurred.connect(errors.append)
    with qtbot.waitSignal(ctl.connectedChanged, timeout=60_000):
        assert ctl.connect_devices(robot, "sim", inp, 20.0)
    assert not errors, errors
    return errors


def test_record_refused_with_one_line_reason_before_connecting(qtbot, controller, tmp_path):
    with qtbot.waitSignal(controller.errorOccurred) as sig:
        assert not controller.start_recording()
    assert sig.args[0] == "cannot start recording: no devices connected"


def test_bad_device_uri_reports_one_line_error(qtbot, controller):
    with qtbot.waitSignal(controller.errorOccurred, timeout=10_000) as sig:
        controller.connect_devices("sim-franka", "webcam", "scripted", 20.0)
    msg = sig.args[0]
    assert "\n" not in msg and "unknown camera 'webcam'" in msg
    assert not controller.connected and not controller.busy


def test_manual_take_on_keyboard_input_moves_arm_and_discard_leaves_no_file(qtbot, controller, tmp_path):
    controller.set_dataset(tmp_path)
    _connect(qtbot, controller, "sim-franka", "keyboard")
    qtbot.waitUntil(lambda: controller.loop is not None and controller.loop.ticks > 5, timeout=10_000)
    with qtbot.waitSignal(controller.recordingChanged, timeout=10_000):
        assert controller.start_recording()
    x0 = controller.loop.arm.state().ee_pose[:3].copy()
    assert controller.key_event("w", True)  # W: away from the operator = base +x
    qtbot.wait(800)
    controller.key_event("w", False)
    x1 = controller.loop.arm.state().ee_pose[:3]
    assert x1[0] - x0[0] > 0.02, (x0, x1)
    with qtbot.waitSignal(controller.outcomeRequested, timeout=10_000) as req:
        controller.stop_recording()
    assert req.args[0].default in ("success", "failure")  # the sim's verdict
    assert req.args[0].frames > 10
    with qtbot.waitSignal(controller.episodeSaved, timeout=10_000) as saved:
        controller.resolve_outcome("discard")
    assert saved.args[0].path is None
    assert not list(tmp_path.glob("*.h5"))
    qtbot.waitUntil(lambda: controller.loop is not None and controller.loop.running, timeout=5_000)


def test_camera_lost_mid_take_stops_it_with_the_reason(qtbot, controller, tmp_path):
    """The camera drops out during a manual take (what RealSenseCamera does when unplugged:
    ``connected`` False and ``latest()`` None, see test_realsense): the take stops by itself, the
    outcome dialog says why, the camera light is red and the saved notes say when."""
    controller.set_dataset(tmp_path)
    _connect(qtbot, controller, "sim-franka", "keyboard")
    qtbot.waitUntil(lambda: controller.loop is not None and controller.loop.ticks > 5, timeout=10_000)
    with qtbot.waitSignal(controller.recordingChanged, timeout=10_000):
        assert controller.start_recording()
    qtbot.waitUntil(lambda: controller.recorder.status().frames > 5, timeout=10_000)
    cam = controller.session.camera
    cam.connected = False
    cam.latest = lambda: None
    with qtbot.waitSignal(controller.outcomeRequested, timeout=10_000) as req:
        pass
    assert req.args[0].reason == "camera lost (unplugged?)"
    assert controller.lights()["camera"] == "red"
    with qtbot.waitSignal(controller.episodeSaved, timeout=10_000) as saved:
        controller.resolve_outcome("failure")
    from recorder.episode import EpisodeReader

    assert "camera lost at t=" in EpisodeReader(saved.args[0].path).meta["notes"]


CRASHING_WRITER = """
import sys, time
import numpy as np
from recorder.episode import EpisodeWriter
cam = dict(K=np.eye(3), width=8, height=6, depth_scale=0.001, T_base_camera=np.eye(4))
w = EpisodeWriter(sys.argv[1], dict(robot="sim-franka", task="pick_cube", fps=20), cam)
for i in range(100000):
    w.append(i / 20, np.zeros((6, 8, 3), np.uint8), np.zeros((6, 8), np.uint16), np.r_[0, 0, 0, 0, 0, 0, 1.0],
             np.zeros(7), 1.0, np.r_[0, 0, 0, 0, 0, 0, 1.0, 1.0])
    print(i, flush=True)
    time.sleep(0.01)
"""


def test_recovery_prompt_lists_crashed_partial_and_recover_fixes_it(qtbot, controller, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "crashed.h5"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(path)], stdout=subprocess.PIPE,
                             env=env, text=True)
    assert child.stdout.readline(), "writer child died before recording"
    qtbot.wait(1500)  # > the writer's 1 s flush bound, so frames are on disk
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert dead_partials(tmp_path) == [path]
    with qtbot.waitSignal(controller.recoveryNeeded, timeout=10_000) as need:
        controller.set_dataset(tmp_path)
    assert need.args[0] == [path]
    assert [e.ok for e in controller.episodes] == [False]  # listed as bad until recovered
    with qtbot.waitSignal(controller.recoveryDone, timeout=20_000) as done:
        controller.recover_partials(need.args[0])
    assert done.args[0][0].status == "recovered", done.args[0]
    r = EpisodeReader(path)
    assert r.n_frames > 0 and r.meta["outcome"] == "unknown"
    assert [e.name for e in controller.episodes if e.ok] == ["crashed.h5"]
    assert dead_partials(tmp_path) == []
