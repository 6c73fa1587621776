"""SpaceMouse driver and the shared teleop mapping, fed with recorded/synthetic device states.

No SpaceMouse is attached here, so the vendor API is replaced at its edge only: a replay object
with pyspacemouse's ``read()``/``close()`` returning real ``pyspacemouse.SpaceMouseState``s, or —
one level lower — a fake HID handle under a real ``pyspacemouse.SpaceMouseDevice`` so the raw
report parsing and axis-convention remap are pyspacemouse's own.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import pyspacemouse
from easyhid import HIDException
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspacemouse import AxisConvention, ButtonState, SpaceMouseState

from robots.base import DeviceError, TeleopDevice
from robots.factory import make_input
from robots.spacemouse import SpaceMouse
from robots.teleop_mapping import TeleopMapping, apply_deadzone, operator_to_base


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Replay:
    """Recorded SpaceMouse states, one report per ``feed``; read() answers like pyspacemouse's
    (the same state object again when no new report arrived)."""

    def __init__(self, n_buttons: int = 2):
        self.state = SpaceMouseState(buttons=ButtonState([0] * n_buttons))
        self.pending: list[tuple] = []
        self.fail: Exception | None = None
        self.closed = False
        self._t = 0.0

    def feed(self, x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=(0, 0)):
        self.pending.append((x, y, z, roll, pitch, yaw, buttons))

    def read(self):
        if self.fail is not None:
            raise self.fail
        if self.pending:
            x, y, z, roll, pitch, yaw, buttons = self.pending.pop(0)
            self._t += 0.001
            s = self.state
            s.t, s.x, s.y, s.z, s.roll, s.pitch, s.yaw = self._t, x, y, z, roll, pitch, yaw
            s.buttons = ButtonState(list(buttons))
        return self.state

    def close(self):
        self.closed = True


def make(robot="franka", replay=None, **kw):
    replay = replay or Replay()
    clock = FakeClock()
    sm = SpaceMouse(robot=robot, opener=lambda: replay, clock=clock, **kw)
    sm.open(background=False)
    return sm, replay, clock


DZ = 0.1


def after_dz(v: float) -> float:
    return np.sign(v) * (abs(v) - DZ) / (1 - DZ)


def test_puck_directions_map_to_base_frame_for_operator_behind_robot():
    sm, dev, _ = make()
    assert isinstance(sm, TeleopDevice)
    cases = [  # operator-frame reading -> expected base twist
        (dict(y=0.8), [after_dz(0.8), 0, 0, 0, 0, 0]),  # push away -> EE away (+x)
        (dict(x=-0.5), [0, after_dz(0.5), 0, 0, 0, 0]),  # push left -> +y
        (dict(z=0.3), [0, 0, after_dz(0.3), 0, 0, 0]),  # lift -> up
        (dict(yaw=0.6), [0, 0, 0, 0, 0, after_dz(0.6)]),  # twist CCW -> yaw CCW
        (dict(roll=0.4), [0, 0, 0, 0, -after_dz(0.4), 0]),  # about operator's right = base -y
        (dict(pitch=0.4), [0, 0, 0, after_dz(0.4), 0, 0]),  # about "away" = base +x
        (dict(y=1.6, z=-0.05), [1, 0, 0, 0, 0, 0]),  # beyond full scale clips; inside deadzone is 0
    ]
    for reading, expected in cases:
        dev.feed(**reading)
        sm.poll()
        np.testing.assert_allclose(sm.read().twist, expected, atol=1e-12)


def test_operator_across_the_table_and_per_axis_scale():
    mapping = TeleopMapping.for_robot("xarm6", operator_yaw_deg=180, scale=(0.5, 1, 1, 1, 1, 0.25))
    sm, dev, _ = make("xarm6", config=mapping)
    dev.feed(y=1.0, yaw=1.0)  # away from this operator is towards the robot: base -x
    sm.poll()
    np.testing.assert_allclose(sm.read().twist, [-0.5, 0, 0, 0, 0, 0.25], atol=1e-12)


def test_left_button_toggles_gripper_and_right_button_gives_one_record_event():
    sm, dev, _ = make()
    assert sm.read().buttons == {"gripper": False, "record": False}
    dev.feed(buttons=(1, 0))
    dev.feed(buttons=(1, 0))  # still held: no second toggle
    sm.poll()
    assert sm.read().buttons["gripper"] is True
    dev.feed(buttons=(0, 0))
    sm.poll()
    assert sm.read().buttons["gripper"] is True  # release keeps the toggle
    dev.feed(buttons=(0, 1))
    sm.poll()
    assert sm.read().buttons["record"] is True
    assert sm.read().buttons["record"] is False  # exactly once per press
    # Two quick presses between two control ticks are two events (stop, then start again).
    for b in [(0, 0), (0, 1), (0, 0), (0, 1), (1, 1)]:
        dev.feed(buttons=b)
    sm.poll()
    states = [sm.read() for _ in range(3)]
    assert [s.buttons["record"] for s in states] == [True, True, False]
    assert states[0].buttons["gripper"] is False  # toggled back by the last report


def test_raw_hid_reports_through_pyspacemouse_parse_to_the_expected_twist():
    class FakeHid:  # below pyspacemouse: raw HID reports as a SpaceMouse Compact sends them
        product_string, manufacturer_string, release_number, serial_number = "Compact", "3Dx", 1, ""

        def __init__(self):
            self.reports: list[bytes] = []

        def open(self):
            pass

        def close(self):
            pass

        def read(self, size):
            return bytearray(self.reports.pop(0)) if self.reports else bytearray()

    def report(channel, a, b, c):
        return bytes([channel]) + b"".join(int(v).to_bytes(2, "little", signed=True) for v in (a, b, c))

    hid = FakeHid()
    spec = pyspacemouse.apply_axis_convention(pyspacemouse.get_device_specs()["SpaceMouseCompact"],
                                              AxisConvention.HID_Z_UP)

    def opener():
        dev = pyspacemouse.SpaceMouseDevice(info=spec, device=hid)
        dev.open()
        return dev

    sm = SpaceMouse(opener=opener, clock=FakeClock())
    sm.open(background=False)
    # HID axes: +y toward the user, +z down. Pushing the puck away and pressing it down:
    hid.reports += [report(1, 0, -350, 175), report(3, 0b01, 0, 0)]
    sm.poll()
    st_ = sm.read()
    np.testing.assert_allclose(st_.twist[:3], [1.0, 0.0, after_dz(-0.5)], atol=1e-9)
    assert st_.buttons["gripper"] is True  # LEFT is byte 1 bit 0 on the Compact


def test_failed_read_means_disconnected_then_reconnects():
    sm, dev, clock = make(reconnect_interval=1.0)
    dev.feed(y=0.9)
    sm.poll()
    assert sm.read().connected and sm.read().twist[0] > 0
    dev.fail = HIDException("Failed to read from HID device: -1")
    clock.t += 0.01
    sm.poll()
    s = sm.read()
    assert not s.connected and not sm.connected and np.all(s.twist == 0)
    assert dev.closed and "read failed" in sm.last_error
    dev.fail, dev.closed = None, False
    clock.t += 0.5
    sm.poll()
    assert not sm.connected  # waits for the retry interval
    clock.t += 0.6
    sm.poll()
    assert sm.connected and np.all(sm.read().twist == 0)


def test_silence_while_deflected_is_a_lost_device_but_silence_at_rest_is_not():
    sm, dev, clock = make(stale_timeout=0.5)
    dev.feed(y=0.0)
    sm.poll()
    clock.t += 5.0  # resting puck sends nothing
    sm.poll()
    assert sm.connected and sm.read().stamp == clock.t
    dev.feed(x=0.7)
    sm.poll()
    clock.t += 0.4
    sm.poll()
    assert sm.connected and sm.read().twist[1] < 0
    clock.t += 0.2
    sm.poll()
    assert not sm.connected and np.all(sm.read().twist == 0)
    assert "deflected" in sm.last_error


def test_reader_thread_delivers_states_and_stops_on_close():
    dev = Replay()
    sm = SpaceMouse(opener=lambda: dev, poll_hz=500)
    sm.open()
    dev.feed(z=1.0)
    deadline = time.monotonic() + 2.0
    while sm.read().twist[2] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    s = sm.read()
    assert s.twist[2] == pytest.approx(1.0) and s.connected
    assert time.monotonic() - s.stamp < 0.5  # stamp is the reader's last contact
    sm.close()
    assert dev.closed and not sm.connected and sm._thread is None


def test_no_device_gives_one_line_error():
    if pyspacemouse.get_connected_devices():
        pytest.skip("a real SpaceMouse is attached")
    with pytest.raises(DeviceError, match="connected SpaceMice: none") as err:
        SpaceMouse().open()
    assert "\n" not in str(err.value)


def test_factory_builds_spacemouse_and_bad_config_is_rejected():
    assert isinstance(make_input("spacemouse"), SpaceMouse)
    with pytest.raises(ValueError, match="no teleop axis map for robot 'ur5'"):
        SpaceMouse(robot="ur5")
    with pytest.raises(ValueError, match="deadzone needs 6 finite values"):
        TeleopMapping(deadzone=(0.1, 0.1, 1.0, 0.1, 0.1, 0.1))


# ---------------------------------------------------------------------------- mapping properties

finite = st.floats(-5, 5, allow_nan=False)
anything = st.one_of(finite, st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")))


@settings(max_examples=100, deadline=None)
@given(raw=st.lists(anything, min_size=6, max_size=6), dz=st.floats(0, 0.95),
       scale=st.lists(st.floats(0, 10), min_size=6, max_size=6), yaw=st.floats(-360, 360))
def test_twist_is_always_within_unit_box(raw, dz, scale, yaw):
    m = TeleopMapping(deadzone=(dz,) * 6, scale=tuple(scale), axis_map=operator_to_base(yaw))
    out = m.apply(np.array(raw))
    assert out.shape == (6,) and np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1.0)


@settings(max_examples=200, deadline=None)
@given(dz=st.floats(0, 0.9), v=st.floats(-2, 2), eps=st.floats(1e-9, 1e-3))
def test_deadzone_is_continuous_and_zero_inside(dz, v, eps):
    out = apply_deadzone(np.array([v]), np.array([dz]))[0]
    if abs(v) <= dz:
        assert out == 0.0
    # Lipschitz with constant 1/(1-dz): no jump anywhere, in particular at the edge.
    nudged = apply_deadzone(np.array([v + eps]), np.array([dz]))[0]
    assert abs(nudged - out) <= eps / (1 - dz) + 1e-12
    assert apply_deadzone(np.array([1.0]), np.array([dz]))[0] == pytest.approx(1.0)


@settings(max_examples=50, deadline=None)
@given(yaw=st.floats(-360, 360))
def test_axis_map_is_a_proper_rotation(yaw):
    M = operator_to_base(yaw)
    R = M[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0)  # a mirror would flip rotation senses
    np.testing.assert_array_equal(M[3:, 3:], R)


def test_permission_error_says_how_to_fix_udev_and_hidraw(monkeypatch):
    # Issue 12: hidapi's "Failed to open device" (a /dev/hidraw node the user may not open) escaped
    # as a bare HIDException; it must be one DeviceError line with the udev/hidraw help. The HID
    # calls are replaced at pyspacemouse's edge: no SpaceMouse is attached here.
    def refuse(*_a, **_kw):
        raise HIDException("Failed to open device")

    monkeypatch.setattr(pyspacemouse, "open", refuse)
    monkeypatch.setattr(pyspacemouse, "get_connected_devices_by_path", lambda: {"/dev/hidraw3": "SpaceNavigator"})
    with pytest.raises(DeviceError) as err:
        SpaceMouse().open()
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("SpaceMouse: Failed to open device (connected SpaceMice: SpaceNavigator at /dev/hidraw3)")
    for vendor in ("256f", "046d"):
        assert f'KERNEL=="hidraw*", ATTRS{{idVendor}}=="{vendor}", MODE="0660", GROUP="plugdev"' in msg
    assert "/etc/udev/rules.d/" in msg and "sudo udevadm control --reload" in msg
    assert "replug" in msg and "plugdev group" in msg and "input group" in msg


def test_pinned_pyspacemouse_has_the_2_1_api_the_driver_uses():
    # pyspacemouse 2.0 has no AxisConvention / get_connected_devices_by_path; pyproject pins >=2.1,<3.
    from importlib.metadata import version

    major, minor = (int(x) for x in version("pyspacemouse").split(".")[:2])
    assert (major, minor) >= (2, 1) and major < 3
    assert pyspacemouse.AxisConvention.HID_Z_UP and callable(pyspacemouse.open_by_path)
    assert callable(pyspacemouse.get_connected_devices_by_path)
