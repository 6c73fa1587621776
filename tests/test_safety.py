"""Safety filter: targets never leave the workspace or exceed the speed limits, whatever the input."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from robots.base import ArmLimits, Workspace
from robots.safety import SafetyFilter, default_limits, normalize_pose, rotation_angle, validate_rate

TOL = 1e-9
ROBOTS = ["franka", "xarm6"]
RATES = [20.0, 50.0, 100.0]

finite = st.floats(-1.0, 1.0, allow_nan=False)
twist = st.lists(finite, min_size=6, max_size=6)
# Requests in arbitrary places: mostly near, sometimes wild, sometimes not numbers at all.
wild = st.one_of(st.floats(-3, 3, allow_nan=False), st.just(float("nan")), st.just(float("inf")),
                 st.just(-float("inf")))


def start_pose(limits: ArmLimits, u: list[float], quat: list[float]) -> np.ndarray:
    lo, hi = np.array(limits.workspace.lo), np.array(limits.workspace.hi)
    q = np.array(quat) if np.linalg.norm(quat) > 1e-3 else np.array([1.0, 0, 0, 0])
    return np.concatenate([lo + np.array(u) * (hi - lo), q / np.linalg.norm(q)])


def assert_safe(filt: SafetyFilter, prev: np.ndarray, out: np.ndarray) -> None:
    assert out.shape == (7,) and np.all(np.isfinite(out))
    assert abs(np.linalg.norm(out[3:]) - 1.0) < 1e-9
    assert filt.limits.workspace.contains(out[:3], tol=TOL), out[:3]
    assert np.linalg.norm(out[:3] - prev[:3]) <= filt.max_step + TOL
    assert rotation_angle(prev[3:], out[3:]) <= filt.max_rot_step + 1e-7
    assert float(np.dot(prev[3:], out[3:])) >= 0.0  # no sign flips between ticks


unit3 = st.lists(st.floats(0, 1), min_size=3, max_size=3)
quat4 = st.lists(st.floats(-1, 1), min_size=4, max_size=4)


@settings(max_examples=150, deadline=None)
@given(robot=st.sampled_from(ROBOTS), rate=st.sampled_from(RATES), u=unit3, q=quat4,
       gain=st.floats(0.1, 4.0), twists=st.lists(twist, min_size=1, max_size=60))
def test_twist_sequences_stay_in_workspace_and_under_speed(robot, rate, u, q, gain, twists):
    """A teleop stream integrates twists (up to 4x the speed limit) onto the last target."""
    limits = default_limits(robot)
    filt = SafetyFilter(limits, rate)
    target = start_pose(limits, u, q)
    dt = 1.0 / rate
    for tw in twists:
        tw = np.array(tw) * gain
        req = target.copy()
        req[:3] += tw[:3] * limits.max_linear_speed * dt
        req[3:] = (Rotation.from_rotvec(tw[3:] * limits.max_angular_speed * dt)
                   * Rotation.from_quat(target[3:])).as_quat()
        out, events = filt.filter(target, req)
        assert_safe(filt, target, out)
        assert "rejected_nan" not in events
        target = out


@settings(max_examples=150, deadline=None)
@given(robot=st.sampled_from(ROBOTS), rate=st.sampled_from(RATES), u=unit3, q=quat4,
       requests=st.lists(st.lists(wild, min_size=7, max_size=7), min_size=1, max_size=30))
def test_arbitrary_requests_never_escape(robot, rate, u, q, requests):
    """Random absolute targets (a policy, a glitching device): far, outside, NaN, inf, zero quats."""
    limits = default_limits(robot)
    filt = SafetyFilter(limits, rate)
    target = start_pose(limits, u, q)
    for r in requests:
        req = np.array(r)
        # Half the requests are small offsets from the current target, so clamping paths run too.
        if np.all(np.isfinite(req)) and abs(req[0]) < 1.5:
            req = target + req * np.array([0.05] * 3 + [0.3] * 4)
        out, events = filt.filter(target, req)
        assert_safe(filt, target, out)
        if not np.all(np.isfinite(req)):
            assert events == ["rejected_nan"] and np.allclose(out, target)
        if "rejected_jump" in events:
            assert np.allclose(out, target)
            far = np.linalg.norm(req[:3] - target[:3]) > limits.max_jump
            assert far or rotation_angle(target[3:], req[3:] / np.linalg.norm(req[3:])) > limits.max_jump_angle
        target = out


@settings(max_examples=60, deadline=None)
@given(robot=st.sampled_from(ROBOTS), u=unit3, q=quat4, d=st.lists(st.floats(-1, 1), min_size=6, max_size=6))
def test_constant_reachable_request_is_reached(robot, u, q, d):
    """The filter limits motion but must not stall it: a request within jump range is reached."""
    limits = default_limits(robot)
    filt = SafetyFilter(limits, 20.0)
    target = start_pose(limits, u, q)
    goal = target.copy()
    goal[:3] = limits.workspace.clip(goal[:3] + np.array(d[:3]) * limits.max_jump / 2)
    goal[3:] = (Rotation.from_rotvec(np.array(d[3:]) * limits.max_jump_angle / 2)
                * Rotation.from_quat(target[3:])).as_quat()
    for _ in range(40):
        target, _ = filt.filter(target, goal)
    assert np.linalg.norm(target[:3] - goal[:3]) < 1e-9
    assert rotation_angle(target[3:], goal[3:]) < 1e-6


def test_small_step_passes_unchanged():
    filt = SafetyFilter(default_limits("franka"), 20.0)
    cur = np.array([0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
    req = cur + np.array([0.005, -0.003, 0.002, 0, 0, 0, 0])
    out, events = filt.filter(cur, req)
    assert events == [] and np.allclose(out, req)


def test_speed_clamp_is_exact_and_direction_preserving():
    limits = default_limits("franka")
    filt = SafetyFilter(limits, 20.0)
    cur = np.array([0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
    req = cur + np.array([0.06, 0.08, 0.0, 0, 0, 0, 0])  # 0.1 m: inside the jump limit, over one step
    out, events = filt.filter(cur, req)
    assert events == ["clamped_speed"]
    step = out[:3] - cur[:3]
    assert np.linalg.norm(step) == pytest.approx(limits.max_linear_speed / 20.0)
    assert np.allclose(step / np.linalg.norm(step), [0.6, 0.8, 0.0])


def test_rotation_clamp_slerps_toward_request():
    filt = SafetyFilter(default_limits("franka"), 20.0)  # 1 rad/s -> 0.05 rad per tick
    cur = np.array([0.4, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0])
    req = cur.copy()
    req[3:] = Rotation.from_rotvec([0, 0, 0.5]).as_quat()
    out, events = filt.filter(cur, req)
    assert events == ["clamped_rotation"]
    assert np.allclose(Rotation.from_quat(out[3:]).as_rotvec(), [0, 0, 0.05])


def test_nan_and_jump_hold_the_last_target():
    filt = SafetyFilter(default_limits("xarm6"), 20.0)
    cur = np.array([0.4, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0])
    for bad in ([np.nan] + [0] * 6, [0.4, 0, 0.3, 0, 0, 0, 0], [0.4, 0, np.inf, 0, 0, 0, 1]):
        out, events = filt.filter(cur, np.array(bad, dtype=float))
        assert events == ["rejected_nan"] and np.array_equal(out, cur)
    out, events = filt.filter(cur, cur + [0.2, 0, 0, 0, 0, 0, 0])
    assert events == ["rejected_jump"] and np.array_equal(out, cur)
    turned = cur.copy()
    turned[3:] = Rotation.from_rotvec([1.0, 0, 0]).as_quat()
    out, events = filt.filter(cur, turned)
    assert events == ["rejected_jump"] and np.array_equal(out, cur)


def test_workspace_wall_is_a_hard_stop_and_motion_slides_along_it():
    limits = default_limits("franka")
    filt = SafetyFilter(limits, 20.0)
    cur = np.array([0.4, 0.0, limits.workspace.lo[2] + 0.004, 1.0, 0.0, 0.0, 0.0])
    out, events = filt.filter(cur, cur + [0.01, 0, -0.02, 0, 0, 0, 0])
    assert "clamped_workspace" in events
    assert out[2] == limits.workspace.lo[2] and out[0] == pytest.approx(0.41)


def test_arm_outside_box_is_walked_back_at_speed_limit():
    limits = default_limits("franka")
    filt = SafetyFilter(limits, 20.0)
    cur = np.array([0.9, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])  # 10 cm beyond the x limit
    dists = []
    for _ in range(20):
        out, _ = filt.filter(cur, cur)
        assert np.linalg.norm(out[:3] - cur[:3]) <= filt.max_step + TOL
        cur = out
        dists.append(np.linalg.norm(cur[:3] - limits.workspace.clip(cur[:3])))
    assert all(b <= a for a, b in zip(dists, dists[1:]))
    assert limits.workspace.contains(cur[:3])


def test_quaternion_sign_stays_continuous():
    filt = SafetyFilter(default_limits("franka"), 20.0)
    cur = np.array([0.4, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0])
    out, events = filt.filter(cur, np.array([0.4, 0.0, 0.3, 0.0, 0.0, 0.0, -2.0]))
    assert events == [] and np.allclose(out, cur)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="control rate"):
        validate_rate(250)
    with pytest.raises(ValueError, match="control rate"):
        SafetyFilter(default_limits("franka"), 0)
    with pytest.raises(ValueError, match="expected one of: franka, xarm6"):
        default_limits("ur5")
    assert default_limits("sim-xarm6") is default_limits("xarm6")
    with pytest.raises(ValueError, match="exceeds"):
        SafetyFilter(ArmLimits(Workspace((1, 0, 0), (0, 1, 1))), 20)
    with pytest.raises(ValueError, match="7 values"):
        normalize_pose(np.zeros(6))
    assert math.isclose(np.linalg.norm(normalize_pose([0, 0, 0, 0, 0, 3, 4])[3:]), 1.0)


# ------------------------------------------------------------------ the fingertip, not the flange
FRANKA_HAND_TCP = (0.0, 0.0, 0.1034)  # flange → fingertip centre


def test_fingertip_below_table_is_refused_while_the_flange_is_above():
    """A stream of FLANGE poses (tool pointing down): with the TCP offset the filter bounds the
    fingertips, so a flange 8 cm above the table — fingertips 2.3 cm below it — is clamped."""
    limits = default_limits("franka")
    plain = SafetyFilter(limits, 20.0)
    tip_aware = SafetyFilter(limits, 20.0, tcp_offset=FRANKA_HAND_TCP)
    down = Rotation.from_euler("x", np.pi).as_quat()
    cur = np.r_[0.5, 0.0, 0.12, down]  # flange; fingertips at z 0.0166
    req = np.r_[0.5, 0.0, 0.08, down]  # flange above the table, fingertips at z -0.023
    out_plain, ev_plain = plain.filter(cur, req)
    assert ev_plain == ["clamped_speed"] or out_plain[2] < cur[2]  # the flange box lets it go down
    out, events = tip_aware.filter(cur, req)
    tip = tip_aware.tip_position(out)
    assert tip[2] >= limits.workspace.lo[2] - 1e-9, tip
    assert out[2] >= limits.workspace.lo[2] + 0.1034 - 1e-9  # flange kept a TCP length above the floor
    # Walking down for many ticks never takes the fingertips through the floor.
    for _ in range(40):
        out, events = tip_aware.filter(out, req)
        assert tip_aware.tip_position(out)[2] >= limits.workspace.lo[2] - 1e-9
    assert "clamped_workspace" in events
    assert abs(tip_aware.tip_position(out)[2] - limits.workspace.lo[2]) < 1e-9  # resting on the floor


@settings(max_examples=80, deadline=None)
@given(u=unit3, q=quat4, twists=st.lists(twist, min_size=1, max_size=30),
       off=st.lists(st.floats(-0.05, 0.05), min_size=2, max_size=2), length=st.floats(0.05, 0.2))
def test_fingertips_stay_in_the_box_for_any_orientation(u, q, twists, off, length):
    limits = default_limits("xarm6")
    filt = SafetyFilter(limits, 20.0, tcp_offset=(off[0], off[1], length))
    tip_start = start_pose(limits, u, q)
    target = filt._from_tip(tip_start)  # a flange pose whose fingertips start inside
    for tw in twists:
        req = target.copy()
        req[:3] += np.array(tw[:3]) * 3 * limits.max_linear_speed / 20.0
        req[3:] = (Rotation.from_rotvec(np.array(tw[3:]) * 0.05) * Rotation.from_quat(target[3:])).as_quat()
        target, _ = filt.filter(target, req)
        assert limits.workspace.contains(filt.tip_position(target), tol=1e-7)


def test_jump_is_held_exactly_with_a_tcp_offset():
    filt = SafetyFilter(default_limits("franka"), 20.0, tcp_offset=FRANKA_HAND_TCP)
    cur = np.r_[0.5, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0]
    out, events = filt.filter(cur, cur + np.r_[0.5, 0, 0, 0, 0, 0, 0])
    assert events == ["rejected_jump"] and np.array_equal(out, cur)
