"""robots/franka.py against franky-sim: the real franky client over loopback, the sim in a subprocess.

franky-sim's 1 kHz loop is pure Python, so it runs in its own process (robots/sim/franky_server.py);
the server also reports hand speed per 50 ms window from the sim's own steps, which is how these
tests see whether a 20 Hz stream stalls between ticks without a second libfranka client.
Figures measured here are printed (run with -s) and summarised in the part's report.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robots.base import Arm, DeviceDisconnected, Gripper
from robots.franka import DEFAULT_LIMITS, HOME_Q, FrankaArm, affine_from_pose, pose_from_affine
from robots.sim.franky_server import CUBE_POS, CUBE_SIZE, ServerProcess

DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # xyzw: hand pointing at the table (franky-sim home)
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module")
def server():
    with ServerProcess(cube=True, report_hz=20.0) as srv:
        yield srv
        hz = [r["loop_hz"] for r in srv.stats[2:]]
        if hz:
            FIGURES["sim_loop_hz_median"] = statistics.median(hz)
            FIGURES["sim_loop_hz_min"] = min(hz)
    print("\nfranka figures:", {k: round(v, 4) for k, v in FIGURES.items()})


@pytest.fixture(scope="module")
def arm(server):
    a = FrankaArm(server.host, rate_hz=20.0)
    a.connect()
    yield a
    a.disconnect()


def _rot_err_deg(q1, q2) -> float:
    return float(np.degrees((Rotation.from_quat(q1) * Rotation.from_quat(q2).inv()).magnitude()))


def test_connect_gives_protocol_state_and_normal_scheduling(arm):
    assert isinstance(arm, Arm) and isinstance(arm.gripper, Gripper)
    assert (arm.name, arm.dof) == ("franka", 7)
    # franky.Robot() may switch this thread to SCHED_FIFO; the driver must hand it back.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    st = arm.state()
    assert st.ee_pose.shape == (7,) and st.joint_pos.shape == (7,)
    assert abs(np.linalg.norm(st.ee_pose[3:]) - 1) < 1e-9
    assert arm.limits.workspace.contains(st.ee_pose[:3]), "home pose must lie inside the default workspace"
    assert 0.0 <= st.gripper <= 1.0 and st.error == ""


def test_pose_conversion_roundtrip():
    pose = np.r_[0.4, -0.1, 0.3, Rotation.from_euler("xyz", [170, 10, 30], degrees=True).as_quat()]
    back = pose_from_affine(affine_from_pose(pose))
    assert np.allclose(back[:3], pose[:3])
    assert _rot_err_deg(back[3:], pose[3:]) < 1e-6


def test_move_to_reaches_pose_within_5mm_and_2deg(arm):
    start = arm.state().ee_pose
    goal_q = (Rotation.from_euler("z", 25, degrees=True) * Rotation.from_quat(start[3:])).as_quat()
    goal = np.r_[start[:3] + [0.06, -0.08, -0.12], goal_q]
    arm.move_to(goal, timeout=10)
    got = arm.state().ee_pose
    pos_err, rot_err = np.linalg.norm(got[:3] - goal[:3]), _rot_err_deg(got[3:], goal[3:])
    FIGURES.update(move_pos_err_mm=1000 * pos_err, move_rot_err_deg=rot_err)
    assert pos_err < 0.005 and rot_err < 2.0


def test_servo_refuses_targets_outside_workspace_and_garbage(arm):
    here = arm.state().ee_pose
    for bad in (np.r_[0.9, 0.0, 0.3, DOWN], np.r_[0.5, 0.0, -0.05, DOWN]):
        with pytest.raises(ValueError, match="outside the workspace"):
            arm.servo(bad)
    with pytest.raises(ValueError, match="NaN"):
        arm.servo(np.r_[np.nan, 0, 0.3, DOWN])
    with pytest.raises(ValueError, match=r"\(7,\)"):
        arm.servo(np.zeros(3))
    time.sleep(0.1)
    assert np.linalg.norm(arm.state().ee_pose[:3] - here[:3]) < 1e-3, "a refused target must not move the arm"


def _circle(t: float, center: np.ndarray, q0: np.ndarray, r=0.04, w=2.5, ramp=0.6):
    """Circle at r·w = 0.1 m/s after a speed ramp, plus a ±10° yaw sway; zero velocity at t=0."""
    phi = w * t * t / (2 * ramp) if t < ramp else w * ramp / 2 + w * (t - ramp)
    yaw = np.radians(10) * np.sin(np.pi * t / 3.0) ** 2
    q = (Rotation.from_euler("z", yaw) * Rotation.from_quat(q0)).as_quat()
    return np.r_[center + r * np.array([np.cos(phi) - 1, np.sin(phi), 0.0]), q]


def _stream_circle(arm, server, rate=20.0, duration=3.0) -> dict:
    arm.move_to(np.r_[0.5, 0.0, 0.35, DOWN])
    start = arm.state().ee_pose
    errs, rot_errs, lag_errs = [], [], []
    prev = None
    late = 0.0
    t0 = time.monotonic()
    for k in range(int(duration * rate) + 1):
        t_k = t0 + k / rate
        while time.monotonic() < t_k:
            time.sleep(0.0005)
        late = max(late, time.monotonic() - t_k)
        ref = _circle(k / rate, start[:3], start[3:])
        cur = arm.state().ee_pose
        if k > 0:
            errs.append(np.linalg.norm(cur[:3] - ref[:3]))  # where the target is *now*
            lag_errs.append(np.linalg.norm(cur[:3] - prev[:3]))  # the target sent one tick ago
            rot_errs.append(_rot_err_deg(cur[3:], ref[3:]))
        arm.servo(ref)
        prev = ref
    t_end = time.monotonic()
    # Dead-man: no more updates → franky ends the velocity motion after its hold time. Counted in
    # sim steps (1 ms each), so a starved sim loop does not make a correct stop look late.
    end_steps = server.wait_next()["steps"]
    rest_s = None
    while time.monotonic() < t_end + 5.0:
        rec = server.wait_next()
        if rec is not None and rec["ee_speed_max"] < 0.005:
            rest_s = (rec["steps"] - end_steps) / 1000.0
            break
    steady = server.window(t0 + 0.8, t_end - 0.05)  # constant 0.1 m/s part of the circle
    return dict(max_err=max(errs), mean_err=float(np.mean(errs)), max_err_prev=max(lag_errs),
                max_rot=max(rot_errs), steady=steady, rest_s=rest_s,
                loop_hz=min(r["loop_hz"] for r in server.window(t0 + 0.1, t_end)), late=late)


def test_20hz_stream_tracks_smoothly_and_stops_by_itself(arm, server):
    # The sim's step is 1 ms of sim time per loop iteration: when other processes starve its pure
    # Python loop, sim time runs slower than the wall clock and any wall-clock tracking figure is
    # meaningless. Retry, and only judge a run in which the sim held its rate and our ticks were on time.
    for _ in range(3):
        run = _stream_circle(arm, server)
        FIGURES.update(stream_sim_loop_hz_min=run["loop_hz"], stream_tick_late_max_s=run["late"])
        if run["loop_hz"] >= 700 and run["late"] < 0.02:
            break
    else:
        pytest.skip(f"machine too loaded to judge tracking: franky-sim dipped to {run['loop_hz']:.0f} Hz, "
                    f"ticks up to {1000 * run['late']:.0f} ms late; max error then {1000 * run['max_err']:.1f} mm")
    min_speed = min(r["ee_speed_min"] for r in run["steady"])
    FIGURES.update(stream_max_err_mm=1000 * run["max_err"], stream_mean_err_mm=1000 * run["mean_err"],
                   stream_max_err_vs_prev_target_mm=1000 * run["max_err_prev"],
                   stream_max_rot_err_deg=run["max_rot"], stream_min_speed_in_ticks=min_speed)
    assert len(run["steady"]) >= 20, "the sim server stopped reporting"
    assert run["max_err"] < 0.010, f"tracking error {1000 * run['max_err']:.1f} mm"
    assert run["max_rot"] < 2.0
    # Stop-and-go would show as a 50 ms window whose slowest 1 ms step is near zero.
    assert min_speed > 0.03, f"motion stalled between ticks (min speed {min_speed:.4f} m/s)"
    FIGURES["stream_rest_after_last_update_sim_s"] = run["rest_s"]
    assert run["rest_s"] is not None and run["rest_s"] < 0.5, "arm kept moving after the stream stopped"


def test_stop_ends_stream_and_home_returns_to_ready_pose(arm, server):
    here = arm.state().ee_pose
    for k in range(6):  # start moving at ~0.1 m/s
        arm.servo(np.r_[here[:3] + [0.0, 0.005 * (k + 1), 0.0], here[3:]])
        time.sleep(0.05)
    arm.stop()
    assert not arm.state().moving
    rec = server.wait_next()
    assert rec["ee_speed_max"] < 0.005
    arm.home()
    st = arm.state()
    assert np.max(np.abs(st.joint_pos - np.asarray(HOME_Q))) < 0.01
    arm.recover()  # no reflex is simulated: recovery must still be a harmless no-op
    arm.move_to(np.r_[st.ee_pose[:3] + [0, 0, -0.02], st.ee_pose[3:]])


def test_gripper_grasps_and_lifts_the_cube(arm, server):
    g = arm.gripper
    g.open()
    above = np.r_[CUBE_POS[0], CUBE_POS[1], 0.15, DOWN]
    arm.move_to(above)
    assert g.wait_idle(5.0) and g.width() > 0.9
    arm.move_to(np.r_[CUBE_POS[0], CUBE_POS[1], 0.025, DOWN])
    t = time.monotonic()
    g.close()
    assert time.monotonic() - t < 0.05, "gripper commands must not block the control loop"
    g.command(0.1)  # the same 'closed' request every tick must not restart the grasp
    assert g.wait_idle(5.0)
    assert g.last_result is True and abs(g.width_m() - CUBE_SIZE) < 0.006, g.last_error
    arm.move_to(above)
    cube_z = server.wait_next()["cube"][2]
    FIGURES.update(grasp_width_mm=1000 * g.width_m(), cube_lift_z=cube_z)
    assert cube_z > 0.10, f"cube stayed at z={cube_z:.3f}"
    g.open()
    assert g.wait_idle(5.0)


def test_close_while_the_hand_is_still_opening_closes_it(arm):
    """A close sent while an open is still moving preempts it (Stop) and then runs: franky-sim used to
    drop the stopped Move without an answer, franky's blocking move never returned, and the close
    queued behind it never ran (sim-franka press_button demos 0/5; robots/sim/franky_fixes.py)."""
    g = arm.gripper
    g.close()
    assert g.wait_idle(5.0) and g.width() < 0.1
    g.open()
    time.sleep(0.15)  # the open is under way, nowhere near done at 0.05 m/s
    assert 0.05 < g.width() < 0.9
    g.close()
    assert g.wait_idle(5.0), "the preempted open never answered: the worker is stuck"
    assert g.width() < 0.1
    g.open()
    assert g.wait_idle(5.0) and g.width() > 0.9


def test_lost_server_raises_device_disconnected_in_one_line():
    with ServerProcess() as srv:
        a = FrankaArm(srv.host)
        a.connect()
        a.state()
        srv.kill()
        with pytest.raises(DeviceDisconnected) as err:
            a.state()
        assert "\n" not in str(err.value) and srv.host in str(err.value)
        with pytest.raises(DeviceDisconnected):  # later calls say the same, not "not connected"
            a.servo(np.r_[0.5, 0.0, 0.3, DOWN])
        a.disconnect()
        host = srv.host
    with pytest.raises(DeviceDisconnected, match="cannot connect"):
        FrankaArm(host).connect()


def test_default_workspace_is_the_safety_filters_and_holds_home():
    from robots.safety import default_limits

    # One table of limits for the driver and the safety filter: they must never disagree.
    assert DEFAULT_LIMITS == default_limits("franka")
    assert DEFAULT_LIMITS.workspace.contains(np.array([0.554, 0.0, 0.521]))  # FR3 home EE position
