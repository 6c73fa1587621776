"""Keyboard teleop: key events in, the same TeleopState (and mapping code) as the SpaceMouse out."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.base import TeleopDevice
from robots.factory import make_input
from robots.keyboard import MOTION_KEYS, KeyboardTeleop
from robots.teleop_mapping import TeleopMapping

DOWN = np.array([0.0, 0.0, -1.0])  # a gripper pointing at the table


def opened(**kw) -> KeyboardTeleop:
    kb = KeyboardTeleop(**kw)
    kb.open()
    return kb


@pytest.mark.parametrize("key, axis, sign", [
    ("w", 0, +1), ("s", 0, -1),  # away from / toward the operator behind the robot
    ("a", 1, +1), ("d", 1, -1),  # left / right
    ("r", 2, +1), ("f", 2, -1),  # up / down
    ("q", 5, +1), ("e", 5, -1),  # yaw counter-clockwise / clockwise from above
])
def test_translation_and_yaw_keys(key, axis, sign):
    kb = opened(speed=0.5)
    kb.press(key.upper())  # case does not matter
    expected = np.zeros(6)
    expected[axis] = 0.5 * sign
    np.testing.assert_allclose(kb.read().twist, expected, atol=1e-12)
    kb.release(key)
    assert np.all(kb.read().twist == 0)


@pytest.mark.parametrize("key, tip_direction", [
    ("Up", [1, 0, 0]), ("Down", [-1, 0, 0]),  # tool tip tilts away / toward the operator
    ("Left", [0, 1, 0]), ("Right", [0, -1, 0]),  # tool tip tilts left / right
])
def test_arrow_keys_tilt_the_tool_tip_as_documented(key, tip_direction):
    kb = opened()
    kb.press(f"Key_{key}")
    w = kb.read().twist[3:]
    tip_velocity = np.cross(w, DOWN)
    np.testing.assert_allclose(tip_velocity / np.linalg.norm(tip_velocity), tip_direction, atol=1e-12)


def test_opposite_keys_cancel_and_unknown_keys_are_not_taken():
    kb = opened()
    assert kb.press("w") and kb.press("s")
    assert np.all(kb.read().twist == 0)
    kb.release("s")
    assert kb.read().twist[0] > 0
    assert kb.press("x") is False and kb.press("Escape") is False  # e-stop belongs to the GUI


def test_space_toggles_gripper_once_per_press_and_enter_records_once():
    kb = opened()
    kb.press(" ")
    kb.press("Key_Space")  # auto-repeat while held: no second toggle
    assert kb.read().buttons["gripper"] is True
    kb.release("space")
    kb.press("space")
    assert kb.read().buttons["gripper"] is False
    kb.press("Return")
    kb.press("Key_Enter")  # auto-repeat
    assert [kb.read().buttons["record"] for _ in range(2)] == [True, False]


def test_focus_loss_releases_everything_and_close_disconnects():
    kb = opened()
    assert isinstance(kb, TeleopDevice)
    kb.press("w")
    kb.press("q")
    kb.release_all()
    assert np.all(kb.read().twist == 0)
    kb.press("w")
    kb.close()
    s = kb.read()
    assert not s.connected and np.all(s.twist == 0)
    kb.press("w")  # events after close are ignored
    kb.open()
    assert np.all(kb.read().twist == 0)


def test_heartbeat_makes_a_frozen_owner_show_up_as_stale_input():
    now = [10.0]
    kb = opened(clock=lambda: now[0])
    kb.press("w")
    now[0] = 11.0
    assert kb.read().stamp == 11.0  # no heartbeat yet: the state is current when read
    kb.heartbeat()
    now[0] = 12.5  # the GUI froze: no heartbeat, no key events
    s = kb.read()
    assert s.stamp == 11.0 and s.twist[0] > 0  # the control loop's stall watchdog sees 1.5 s
    kb.release("w")
    assert kb.read().stamp == 12.5


def test_same_mapping_code_as_the_spacemouse():
    # An operator across the table: W (away from them) moves the arm toward its base.
    kb = opened(config=TeleopMapping.for_robot("franka", operator_yaw_deg=180, deadzone=0.0, scale=1.0))
    kb.press("w")
    kb.press("a")
    np.testing.assert_allclose(kb.read().twist, [-1, -1, 0, 0, 0, 0], atol=1e-12)
    assert isinstance(make_input("keyboard"), KeyboardTeleop)


@settings(max_examples=100, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(sorted(MOTION_KEYS) + ["space", "enter", "z"]), st.booleans()),
                       max_size=40))
def test_any_key_sequence_gives_a_bounded_twist_that_matches_held_keys(events):
    kb = opened(speed=1.0)
    held = set()
    for key, down in events:
        (kb.press if down else kb.release)(key)
        (held.add if down else held.discard)(key)
    twist = kb.read().twist
    assert np.all(np.abs(twist) <= 1.0)
    if not held & set(MOTION_KEYS):
        assert np.all(twist == 0)
