"""Robot faults end to end on franky-sim (the real franky client over libfranka's protocol): a reflex
latches a control-loop fault and stops commanding until Recover; E-STOP stops the controller and the
arm needs Recover after the reset; the TCP offset reaches the controller (set_ee); a start pose outside
the lab workspace is refused; hardware rollouts home the arm before each trial; `main.py robot`.

franky-sim never raises a reflex itself, so robots/sim/franky_server.py injects one the way the FR3
controller reports it (Move aborted with kReflexAborted, robot mode Reflex, cartesian_reflex in the
error flags, only automatic error recovery clears it).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from app.teleop import ControlLoop
from robots.franka import HOME_Q, FrankaArm
from robots.sim.franky_server import ServerProcess


@pytest.fixture(scope="module")
def server():
    with ServerProcess(report_hz=5.0) as srv:
        yield srv


@pytest.fixture
def arm(server):
    a = FrankaArm(server.host, rate_hz=20.0)
    a.connect()
    a.recover()  # a test that failed half-way must not leave the next one faulted
    yield a
    a.disconnect()


class Sweep:
    """TargetSource: from the first state, along +y at 4 cm/s (a slow teleop stroke)."""

    def __init__(self):
        self.start = None

    def next_target(self, state, frame, t):
        if self.start is None:
            self.start = np.asarray(state.ee_pose, dtype=float).copy()
        pose = self.start.copy()
        pose[1] += 0.04 * min(t, 2.0)
        return pose, 1.0, {}


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_reflex_latches_a_fault_that_stops_commanding_until_recover(server, arm):
    loop = ControlLoop(arm, Sweep(), rate_hz=20.0)
    ticks = []
    loop.add_listener(ticks.append)
    loop.start()
    try:
        assert _wait(lambda: len(ticks) > 10 and ticks[-1].commanding)
        server.inject_reflex()
        assert _wait(lambda: loop.fault.startswith("arm_fault"), 3.0), loop.fault
        assert "cartesian_reflex" in loop.fault
        n = len(ticks)
        time.sleep(0.5)
        assert all(not t.commanding and t.fault.startswith("arm_fault") for t in ticks[n:])  # latched
        loop.recover()
        assert loop.fault == "" and arm.state().error == ""
        assert _wait(lambda: ticks[-1].commanding, 2.0)  # resumes from the measured pose
        assert "recovered" in [e for t in ticks[n:] for e in t.events]
    finally:
        loop.stop()


def test_estop_stops_the_controller_and_needs_recover_after_reset(server, arm):
    loop = ControlLoop(arm, Sweep(), rate_hz=20.0)
    ticks = []
    loop.add_listener(ticks.append)
    loop.start()
    try:
        assert _wait(lambda: len(ticks) > 10 and ticks[-1].commanding)
        loop.estop()
        assert arm.state().error.startswith("e-stopped")  # franky Robot.stop(): motion aborted on the controller
        time.sleep(0.4)
        p1 = arm.state().ee_pose[:3]
        time.sleep(0.4)
        assert np.linalg.norm(arm.state().ee_pose[:3] - p1) < 0.002  # at rest
        loop.reset_estop()
        assert _wait(lambda: loop.fault.startswith("arm_fault: e-stopped"), 2.0), loop.fault
        n = len(ticks)
        time.sleep(0.3)
        assert not any(t.commanding for t in ticks[n:])  # reset alone does not move the arm
        loop.recover()
        assert _wait(lambda: ticks[-1].commanding, 2.0)
    finally:
        loop.stop()


def test_recover_is_refused_while_estopped(server, arm):
    from robots.base import DeviceError

    loop = ControlLoop(arm, Sweep(), rate_hz=20.0)
    loop.start()
    try:
        loop.estop()
        with pytest.raises(DeviceError, match="reset the E-stop first"):
            loop.recover()
    finally:
        loop.stop()
        arm.recover()


def test_tcp_offset_is_set_on_the_controller(server, arm):
    base = arm.state().ee_pose
    arm.disconnect()
    longer = FrankaArm(server.host, tcp_offset=(0.0, 0.0, 0.2034))  # 10 cm longer fingers
    longer.connect()
    try:
        f_t_ee = longer.flange_to_tcp()
        assert np.allclose(f_t_ee[:3, 3], [0, 0, 0.2034], atol=1e-6)
        got = longer.state().ee_pose
        # Same flange, hand pointing down: the reported TCP is 10 cm lower, orientation unchanged.
        assert np.allclose(got[:3], base[:3] + [0, 0, -0.1], atol=2e-3), (got, base)
        assert abs(abs(float(np.dot(got[3:], base[3:]))) - 1.0) < 1e-4
    finally:
        longer.disconnect()
        arm.connect()  # the fixture disconnects it


def test_session_outside_workspace_is_reported_and_latched_until_home(server, arm):
    from app.session import DeviceSession
    from robots.lab_config import LabConfig

    arm.disconnect()
    # franky-sim's home TCP is at z 0.52: a lab box with its ceiling at 0.40 has the arm outside.
    lab = LabConfig.from_values("franka", workspace="0.25,-0.4,0.005,0.75,0.4,0.40")
    try:
        with DeviceSession(f"franka:{server.host}", "none", "none", lab=lab) as session:
            assert any("outside the lab workspace" in w for w in session.warnings), session.warnings
            assert session.arm.limits.workspace == lab.workspace
            loop = session.control_loop(source=Sweep())
            loop.start()
            try:
                assert _wait(lambda: loop.fault.startswith("outside_workspace"), 2.0), loop.fault
                time.sleep(0.3)
                assert loop.fault.startswith("outside_workspace")
            finally:
                loop.stop()
            z0 = session.arm.state().ee_pose[2]
            assert z0 > 0.45  # nothing moved it: no automatic walk back into the box
    finally:
        arm.connect()


def test_hardware_rollout_homes_the_arm_before_each_trial(server, arm, tmp_path):
    from app.rollout import RolloutConfig, RolloutRunner
    from app.session import DeviceSession

    here = arm.state().ee_pose
    arm.move_to(np.r_[here[:3] + [-0.08, 0.1, -0.15], here[3:]], timeout=15)
    assert np.max(np.abs(arm.state().joint_pos - HOME_Q)) > 0.1
    arm.disconnect()
    phases = []
    try:
        with DeviceSession(f"franka:{server.host}", "none", "none") as session:
            assert session.lab is None  # the hardware path: no simulated lab to reset the scene
            cfg = RolloutConfig(policy="spline-ik", waypoints="keyframes", demo=str(tmp_path / "demo.h5"),
                                trials=2, out_dir=str(tmp_path / "eval"))
            runner = RolloutRunner(session, cfg, ask_reset=lambda i: False)  # operator stops after homing
            runner.on_update = lambda: phases.append(runner.snapshot().phase)
            assert runner.homes_between
            assert runner.run() == []
            q = session.arm.state().joint_pos
    finally:
        arm.connect()
    assert "homing" in phases and phases.index("homing") < len(phases) - 1
    assert np.max(np.abs(q - np.asarray(HOME_Q))) < 0.02, q


def test_rollout_home_option_defaults():
    from app.rollout import RolloutConfig

    assert RolloutConfig(policy="spline-ik").home_between is None
    assert RolloutConfig(policy="spline-ik", home_between=False).home_between is False


def test_robot_cli_status_recover_home(server, arm, capsys, tmp_path):
    from app.cli import main

    arm.disconnect()
    try:
        server.inject_reflex()  # latched on the controller: status reports it, recover clears it
        time.sleep(0.1)
        ini = str(tmp_path / "lab.ini")
        assert main(["robot", "status", "--robot", f"franka:{server.host}", "--lab-settings", ini]) == 1
        out = capsys.readouterr().out
        assert "fault: Reflex" in out and "cartesian_reflex" in out
        assert main(["robot", "recover", "--robot", f"franka:{server.host}", "--lab-settings", ini]) == 0
        out = capsys.readouterr().out
        assert "recovered" in out and "fault: none" in out
        assert main(["robot", "home", "--robot", f"franka:{server.host}", "--lab-settings", ini]) == 0
        assert "homed" in capsys.readouterr().out
        # Bad lab values are refused in one line before anything connects.
        assert main(["robot", "status", "--robot", f"franka:{server.host}", "--workspace", "0,0,0,1,1",
                     "--lab-settings", ini]) == 2
        assert "workspace must be 6" in capsys.readouterr().err
    finally:
        arm.connect()


def test_estop_aborts_a_running_home_move_on_the_controller(server, arm):
    import threading

    from robots.base import DeviceError

    here = arm.state().ee_pose
    arm.move_to(np.r_[here[:3] + [-0.1, 0.15, -0.15], here[3:]], timeout=15)
    start = arm.state().joint_pos.copy()
    result = {}

    def home():
        try:
            arm.home(timeout=20)
            result["ok"] = True
        except DeviceError as exc:
            result["error"] = str(exc)

    th = threading.Thread(target=home)
    th.start()
    assert _wait(lambda: np.max(np.abs(arm.state().joint_pos - start)) > 0.02, 5.0)  # under way
    t0 = time.monotonic()
    arm.estop()  # from another thread, while home() holds the driver's command lock
    th.join(5.0)
    assert not th.is_alive() and time.monotonic() - t0 < 3.0
    assert "error" in result, result  # home() reports the abort instead of claiming success
    time.sleep(0.4)  # franky-sim holds the last desired joints: it settles within a few hundred ms
    q_stop = arm.state().joint_pos
    time.sleep(0.5)
    assert np.max(np.abs(arm.state().joint_pos - q_stop)) < 0.01  # stays stopped
    assert np.max(np.abs(q_stop - np.asarray(HOME_Q))) > 0.02  # short of home
    assert arm.state().error.startswith("e-stopped")
    arm.recover()
    arm.home()
    assert np.max(np.abs(arm.state().joint_pos - np.asarray(HOME_Q))) < 0.02
