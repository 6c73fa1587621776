"""robots/xarm6.py at the SDK boundary.

No xArm controller exists here and no package speaks its network protocol, so the driver runs
against a recording double of ``xarm.wrapper.XArmAPI``. Every call the driver makes is checked
against the *real* XArmAPI method signature (inspect.signature.bind), recorded with a timestamp,
and answered like the controller would for the states these tests need (mode/state bookkeeping,
servo point → reported pose, error codes, a dropped connection). What this does NOT exercise:
the TCP protocol, the controller's own motion planning, real timing/latency, and the physical
gripper; those need a real arm.
"""
from __future__ import annotations

import inspect
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from xarm.wrapper import XArmAPI

from robots.base import Arm, DeviceDisconnected, DeviceError, Gripper
from robots.xarm6 import (DEFAULT_LIMITS, GRIPPER_MAX_PULSE, HOME_POSE, XArm6, pose_from_sdk, pose_to_sdk,
                          split_steps)

DOWN = np.array([1.0, 0.0, 0.0, 0.0])


class RecordingXArmAPI:
    """Stands in for XArmAPI at its Python boundary; see module docstring."""

    def __init__(self, port=None, is_radian=False, do_not_open=False, **kwargs):
        inspect.signature(XArmAPI.__init__).bind(self, port, is_radian=is_radian, do_not_open=do_not_open, **kwargs)
        self.port, self.default_is_radian = port, is_radian
        self.calls: list[tuple[float, str, tuple, dict]] = []
        self.connected = True
        self.error_code = 0
        self.warn_code = 0
        self.mode, self.state_ = 0, 4
        self.enabled = False
        self.pose = [300.0, 0.0, 300.0, np.pi, 0.0, 0.0]  # mm, rad
        self.angles = [0.0, -0.5, -0.6, 0.0, 1.1, 0.0, 0.0]  # the SDK pads to 7 joints
        self.gripper_pos = 850.0
        self.callbacks = []
        self.fail_servo_with = 0
        self.tcp_offset = [0.0] * 6
        self.sticky_error = False  # an error clean_error cannot clear (the cause is still there)

    def _rec(self, name, *args, **kwargs):
        inspect.signature(getattr(XArmAPI, name)).bind(self, *args, **kwargs)
        self.calls.append((time.monotonic(), name, args, kwargs))

    def names(self):
        return [c[1] for c in self.calls]

    def servo_points(self):
        return [np.asarray(c[2][0]) for c in self.calls if c[1] == "set_servo_cartesian"]

    # -- the subset of XArmAPI the driver uses ----------------------------------------------
    def register_error_warn_changed_callback(self, callback=None):
        self._rec("register_error_warn_changed_callback", callback=callback)
        self.callbacks.append(callback)
        return True

    def release_error_warn_changed_callback(self, callback=None):
        self._rec("release_error_warn_changed_callback", callback=callback)
        return True

    def disconnect(self):
        self._rec("disconnect")
        self.connected = False

    def motion_enable(self, enable=True, servo_id=None):
        self._rec("motion_enable", enable=enable, servo_id=servo_id)
        self.enabled = enable
        return 0

    def set_mode(self, mode=0, detection_param=0):
        self._rec("set_mode", mode=mode)
        self.mode = mode
        return 0

    def set_state(self, state=0):
        self._rec("set_state", state=state)
        self.state_ = state
        return 0

    def get_position(self, is_radian=None):
        self._rec("get_position", is_radian=is_radian)
        assert is_radian is True, "driver must ask for radians explicitly"
        return (0 if self.connected else -1), list(self.pose)

    def get_servo_angle(self, servo_id=None, is_radian=None, is_real=False):
        self._rec("get_servo_angle", servo_id=servo_id, is_radian=is_radian)
        return 0, list(self.angles)

    def set_servo_cartesian(self, mvpose, speed=None, mvacc=None, mvtime=0, is_radian=None, is_tool_coord=False,
                            **kwargs):
        self._rec("set_servo_cartesian", list(mvpose), speed=speed, mvacc=mvacc, is_radian=is_radian)
        if self.fail_servo_with:
            return self.fail_servo_with
        if self.mode != 1 or self.state_ != 0 or not self.enabled or self.error_code:
            return 9  # SDK: "not ready to move"
        assert is_radian is True
        self.pose = list(mvpose)
        return 0

    def set_position(self, x=None, y=None, z=None, roll=None, pitch=None, yaw=None, radius=None, speed=None,
                     mvacc=None, mvtime=None, relative=False, is_radian=None, wait=False, timeout=None, **kwargs):
        self._rec("set_position", x=x, y=y, z=z, roll=roll, pitch=pitch, yaw=yaw, speed=speed, mvacc=mvacc,
                  is_radian=is_radian, wait=wait, timeout=timeout)
        if self.mode != 0 or self.state_ != 0:
            return 9
        self.pose = [x, y, z, roll, pitch, yaw]
        return 0

    @property
    def state(self):  # XArmAPI.state: 1 moving, 2 sleeping, 3 suspended, 4 stopped
        return self.state_

    def set_tcp_offset(self, offset, is_radian=None, wait=True, **kwargs):
        self._rec("set_tcp_offset", list(offset), is_radian=is_radian, wait=wait)
        self.tcp_offset = list(offset)
        return 0

    def clean_error(self):
        self._rec("clean_error")
        if not self.sticky_error:
            self.error_code = 0
        return 0

    def clean_warn(self):
        self._rec("clean_warn")
        self.warn_code = 0
        return 0

    def emergency_stop(self):
        self._rec("emergency_stop")
        self.state_ = 4  # the SDK's emergency_stop is set_state(4) until the controller reports it

    def set_gripper_mode(self, mode, **kwargs):
        self._rec("set_gripper_mode", mode)
        return 0

    def set_gripper_enable(self, enable, **kwargs):
        self._rec("set_gripper_enable", enable)
        return 0

    def set_gripper_speed(self, speed, **kwargs):
        self._rec("set_gripper_speed", speed)
        return 0

    def set_gripper_position(self, pos, wait=False, speed=None, auto_enable=False, timeout=None, **kwargs):
        self._rec("set_gripper_position", pos, wait=wait)
        self.gripper_pos = pos
        return 0

    def get_gripper_position(self, **kwargs):
        self._rec("get_gripper_position")
        return 0, self.gripper_pos

    # -- what the controller would do on its own ------------------------------------------------
    def raise_error(self, code: int):
        self.error_code = code
        for cb in self.callbacks:
            cb({"error_code": code, "warn_code": self.warn_code})


@pytest.fixture
def rig():
    apis = []

    def factory(*a, **k):
        apis.append(RecordingXArmAPI(*a, **k))
        return apis[-1]

    arm = XArm6("192.168.1.208", api_factory=factory)
    arm.connect()
    yield arm, apis[0]
    arm.disconnect()


def _wait_until(pred, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False


def test_units_roundtrip_mm_and_fixed_axis_rpy():
    pose = np.r_[0.31, -0.12, 0.205, Rotation.from_euler("xyz", [175, -8, 40], degrees=True).as_quat()]
    sdk = pose_to_sdk(pose)
    assert np.allclose(sdk[:3], [310.0, -120.0, 205.0])
    assert np.allclose(np.degrees(sdk[3:]), [175, -8, 40])
    back = pose_from_sdk(sdk)
    assert np.allclose(back[:3], pose[:3]) and abs(abs(back[3:] @ pose[3:]) - 1) < 1e-12


def test_connect_enables_servo_mode_and_gripper(rig):
    arm, api = rig
    assert isinstance(arm, Arm) and isinstance(arm.gripper, Gripper) and (arm.name, arm.dof) == ("xarm6", 6)
    assert api.default_is_radian is True
    names = api.names()
    assert names.index("motion_enable") < names.index("set_mode") < names.index("set_state")
    assert (api.mode, api.state_, api.enabled) == (1, 0, True)
    assert {"set_gripper_mode", "set_gripper_enable"} <= set(names)
    st = arm.state()
    assert np.allclose(st.ee_pose, [0.3, 0.0, 0.3, 1, 0, 0, 0], atol=1e-9)
    assert st.joint_pos.shape == (6,) and st.gripper == 1.0 and st.error == ""


def test_far_target_is_walked_in_steps_under_10mm(rig):
    arm, api = rig
    goal = np.r_[0.36, 0.05, 0.25, Rotation.from_euler("xyz", [180, 0, 20], degrees=True).as_quat()]
    t0 = time.monotonic()
    arm.servo(goal)
    assert time.monotonic() - t0 < 0.01, "servo() must not block the control loop"
    assert _wait_until(lambda: np.allclose(arm.state().ee_pose[:3], goal[:3], atol=1e-6), 5.0)
    pts = np.array(api.servo_points())
    steps_mm = np.linalg.norm(np.diff(np.vstack([[300.0, 0.0, 300.0], pts[:, :3]]), axis=0), axis=1)
    assert len(pts) > 1, "one 20 Hz tick's worth of distance must need several SDK calls"
    assert steps_mm.max() < 10.0
    assert steps_mm.max() <= 1000 * arm.max_step_m + 1e-6  # also the speed-limit share per call
    rot = Rotation.from_euler("xyz", pts[:, 3:])
    assert np.degrees((rot[1:] * rot[:-1].inv()).magnitude()).max() <= np.degrees(arm.max_step_rad) + 1e-6
    # Every point went out in mode 1, in mm/radians, and the last one is the target itself.
    assert all(c[3]["is_radian"] is True for c in api.calls if c[1] == "set_servo_cartesian")
    assert np.allclose(pts[-1], pose_to_sdk(goal))
    assert arm.calls_per_tick_max > 1


def test_split_steps_bounds_and_endpoints():
    a = np.r_[0.3, 0.0, 0.3, DOWN]
    b = np.r_[0.3, 0.047, 0.3, DOWN]
    steps = split_steps(a, b, 0.009, 0.05)
    assert len(steps) == 6 and np.allclose(steps[-1], b)
    assert max(np.linalg.norm(np.diff(np.array([a] + steps)[:, :3], axis=0), axis=1)) <= 0.009


def test_targets_outside_workspace_never_reach_the_sdk(rig):
    arm, api = rig
    n = len(api.servo_points())
    for bad in (np.r_[0.9, 0, 0.3, DOWN], np.r_[0.3, 0, -0.01, DOWN], np.r_[np.nan, 0, 0.3, DOWN]):
        with pytest.raises(ValueError):
            arm.servo(bad)
    time.sleep(0.05)
    assert len(api.servo_points()) == n


def test_controller_error_stops_streaming_and_recover_clears_it(rig):
    arm, api = rig
    arm.servo(np.r_[0.30, 0.10, 0.30, DOWN])
    assert _wait_until(lambda: len(api.servo_points()) > 2)
    api.raise_error(31)  # e.g. a collision: the controller reports and stops
    n = len(api.servo_points())
    time.sleep(0.05)
    assert len(api.servo_points()) <= n + 1, "driver kept streaming into a controller error"
    assert arm.state().error == "controller error 31"
    with pytest.raises(DeviceError, match="error 31") as err:
        arm.servo(np.r_[0.30, 0.10, 0.30, DOWN])
    assert "\n" not in str(err.value)
    arm.recover()
    names = api.names()
    tail = names[len(names) - 8:]
    assert {"clean_error", "clean_warn", "motion_enable", "set_mode", "set_state"} <= set(tail)
    assert api.mode == 1 and api.error_code == 0 and arm.state().error == ""
    arm.servo(np.r_[0.30, 0.10, 0.30, DOWN])
    assert _wait_until(lambda: np.allclose(arm.state().ee_pose[:3], [0.30, 0.10, 0.30], atol=1e-6))


def test_rejected_servo_call_surfaces_the_sdk_code(rig):
    arm, api = rig
    api.fail_servo_with = 9
    arm.servo(np.r_[0.31, 0.0, 0.30, DOWN])
    assert _wait_until(lambda: "code 9" in arm.state().error)
    with pytest.raises(DeviceError, match="code 9"):
        arm.servo(np.r_[0.31, 0.0, 0.30, DOWN])


def test_move_to_uses_position_mode_then_returns_to_servo(rig):
    arm, api = rig
    arm.move_to(np.r_[0.4, -0.1, 0.2, DOWN])
    sp = [c for c in api.calls if c[1] == "set_position"][-1][3]
    assert (sp["x"], sp["y"], sp["z"]) == pytest.approx((400.0, -100.0, 200.0))
    assert sp["is_radian"] is True and sp["wait"] is True and abs(abs(sp["roll"]) - np.pi) < 1e-9
    modes = [c[3]["mode"] for c in api.calls if c[1] == "set_mode"]
    assert modes[-2:] == [0, 1] and api.mode == 1
    arm.home()
    assert np.allclose(arm.state().ee_pose[:3], HOME_POSE[:3])


def test_gripper_pulses_and_deduplication(rig):
    arm, api = rig
    arm.gripper.command(0.0)
    arm.gripper.command(0.001)  # repeated every tick by the control loop
    arm.gripper.command(0.5)
    arm.gripper.open()
    sent = [c[2][0] for c in api.calls if c[1] == "set_gripper_position"]
    assert sent == [0.0, 0.5 * GRIPPER_MAX_PULSE, GRIPPER_MAX_PULSE]
    assert all(c[3]["wait"] is False for c in api.calls if c[1] == "set_gripper_position")
    assert arm.gripper.width() == 1.0
    with pytest.raises(ValueError):
        arm.gripper.command(float("nan"))


def test_lost_connection_is_device_disconnected(rig):
    arm, api = rig
    api.connected = False
    with pytest.raises(DeviceDisconnected) as err:
        arm.state()
    assert "192.168.1.208" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DeviceDisconnected):
        arm.servo(np.r_[0.3, 0.0, 0.3, DOWN])


def test_unreachable_controller_fails_connect_in_one_line():
    def factory(*a, **k):
        api = RecordingXArmAPI(*a, **k)
        api.connected = False
        return api

    with pytest.raises(DeviceDisconnected, match="cannot connect"):
        XArm6("192.168.1.208", api_factory=factory).connect()


def test_step_bound_is_enforced_at_construction():
    with pytest.raises(ValueError, match="10 mm"):
        XArm6("x", max_step_m=0.012)
    assert DEFAULT_LIMITS.workspace.contains(HOME_POSE[:3])


# ------------------------------------------------------------------ faults, e-stop, TCP offset


def test_tcp_offset_is_written_in_mm_before_servo_mode(rig):
    arm, api = rig
    calls = [c for c in api.calls if c[1] == "set_tcp_offset"]
    assert len(calls) == 1 and calls[0][2][0] == pytest.approx([0, 0, 172.0, 0, 0, 0])
    assert calls[0][3]["is_radian"] is True and calls[0][3]["wait"] is True
    names = api.names()
    i = names.index("set_tcp_offset")
    assert [c[3]["mode"] for c in api.calls[:i] if c[1] == "set_mode"] == [0]  # set in position mode
    assert "set_servo_cartesian" not in names[:i] and api.mode == 1


def test_custom_tcp_offset_and_none_keeps_the_controllers():
    apis = []

    def factory(*a, **k):
        apis.append(RecordingXArmAPI(*a, **k))
        return apis[-1]

    arm = XArm6("192.168.1.208", api_factory=factory, tcp_offset=(0.0, 0.01, 0.2))
    arm.connect()
    arm.disconnect()
    assert apis[0].tcp_offset == pytest.approx([0, 10.0, 200.0, 0, 0, 0])
    arm = XArm6("192.168.1.208", api_factory=factory, tcp_offset=None)
    arm.connect()
    arm.disconnect()
    assert "set_tcp_offset" not in apis[1].names()


def test_estop_calls_emergency_stop_and_needs_the_recovery_sequence(rig):
    arm, api = rig
    arm.servo(np.r_[0.30, 0.10, 0.30, DOWN])
    assert _wait_until(lambda: len(api.servo_points()) > 2)
    arm.estop()
    assert api.names().count("emergency_stop") == 1 and api.state_ == 4
    n = len(api.servo_points())
    time.sleep(0.05)
    assert len(api.servo_points()) <= n + 1  # the stream stopped with the controller
    assert arm.state().error.startswith("e-stopped on the controller")
    with pytest.raises(DeviceError, match="recover"):
        arm.servo(np.r_[0.30, 0.10, 0.30, DOWN])
    k = len(api.calls)
    arm.recover()
    seq = [(c[1], c[3].get("mode", c[3].get("state"))) for c in api.calls[k:]
           if c[1] in ("clean_error", "clean_warn", "motion_enable", "set_mode", "set_state")]
    assert seq[:3] == [("clean_error", None), ("clean_warn", None), ("motion_enable", None)]
    assert seq[-2:] == [("set_mode", 1), ("set_state", 0)]
    assert api.state_ == 0 and arm.state().error == ""
    arm.servo(np.r_[0.30, 0.12, 0.30, DOWN])
    assert _wait_until(lambda: np.allclose(arm.state().ee_pose[:3], [0.30, 0.12, 0.30], atol=1e-6))


def test_controller_stopped_elsewhere_is_a_fault_and_warnings_are_not(rig):
    arm, api = rig
    api.warn_code = 11
    for cb in api.callbacks:
        cb({"error_code": 0, "warn_code": 11})
    st = arm.state()
    assert st.error == "" and st.warning == "warning 11"
    api.state_ = 4  # e.g. the pendant's stop button
    assert "state 4" in arm.state().error
    arm.recover()
    assert arm.state().error == "" and api.warn_code == 0


def test_recover_reports_an_error_that_survives_clean_error(rig):
    arm, api = rig
    api.sticky_error = True
    api.raise_error(22)
    with pytest.raises(DeviceError, match="error 22 persists") as err:
        arm.recover()
    assert "\n" not in str(err.value)
    assert arm.state().error == "controller error 22"
