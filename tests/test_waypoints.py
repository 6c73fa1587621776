"""Waypoints → B-spline pose trajectory → guidance (policies/waypoints.py)."""
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from policies.geometry import pose_error, pose_to_matrix, transform_pose
from policies.waypoints import (DemoKeyframeSource, ManualSource, OracleSource, Waypoint, WaypointSource,
                                WaypointTrajectory, gripper_transition_frames)


def _pose(x, y, z, yaw=0.0):
    return np.r_[x, y, z, (Rotation.from_euler("z", yaw) * Rotation.from_euler("x", np.pi)).as_quat()]


WPS = [Waypoint(_pose(0.4, 0.0, 0.3), 1.0), Waypoint(_pose(0.5, 0.1, 0.12, 0.5), 1.0),
       Waypoint(_pose(0.5, 0.1, 0.05, 0.5), 0.0, dwell=0.5), Waypoint(_pose(0.45, -0.1, 0.25, -0.3), 0.0),
       Waypoint(_pose(0.6, -0.2, 0.1), 1.0)]


def test_spline_passes_through_every_waypoint_at_its_time():
    tr = WaypointTrajectory(WPS, speed=0.1)
    for w, t in zip(WPS, tr.times[[0, 1, 2, 4, 5]]):
        dpos, dang = pose_error(tr.sample(t), w.pose)
        assert dpos < 1e-9 and dang < 1e-6
    # The dwell holds the pose for its duration.
    dwell_t = tr.times[2]
    np.testing.assert_allclose(tr.sample(dwell_t + 0.5)[:3], WPS[2].pose[:3], atol=1e-9)
    assert tr.duration > 0.5


def test_timing_follows_speed_and_is_smooth():
    slow, fast = WaypointTrajectory(WPS, speed=0.05), WaypointTrajectory(WPS, speed=0.2)
    assert slow.duration > 2 * fast.duration - 1.0  # dwell and min-segment times do not scale
    t = np.linspace(fast.t_start, fast.t_end, 2000)
    p = fast.sample(t)[:, :3]
    v = np.linalg.norm(np.diff(p, axis=0), axis=1) / np.diff(t)
    assert v.max() < 0.2 * 3  # a cubic through the points overshoots the segment speed only mildly
    np.testing.assert_allclose(v[:3], 0, atol=1e-2)  # clamped ends: starts at rest
    # Orientation changes continuously (no flips between samples).
    q = fast.sample(t)[:, 3:]
    assert np.max(pose_error(np.c_[p[:-1], q[:-1]], np.c_[p[1:], q[1:]])[1]) < 0.05


def test_given_times_are_kept_and_must_increase():
    wps = [Waypoint(_pose(0.4, 0, 0.3), t=1.0), Waypoint(_pose(0.5, 0, 0.3), t=3.0), Waypoint(_pose(0.5, 0.1, 0.2), t=4.0)]
    tr = WaypointTrajectory(wps)
    np.testing.assert_allclose(tr.times, [1.0, 3.0, 4.0])
    np.testing.assert_allclose(tr.sample(3.0)[:3], [0.5, 0, 0.3], atol=1e-12)
    with pytest.raises(ValueError, match="increase"):
        WaypointTrajectory([Waypoint(_pose(0.4, 0, 0.3), t=1.0), Waypoint(_pose(0.5, 0, 0.3), t=1.0)])
    with pytest.raises(ValueError, match="all waypoints or for none"):
        WaypointTrajectory([Waypoint(_pose(0.4, 0, 0.3), t=1.0), Waypoint(_pose(0.5, 0, 0.3))])


def test_one_or_two_waypoints():
    one = WaypointTrajectory([WPS[0]])
    np.testing.assert_allclose(one.sample([0.0, 5.0]), [WPS[0].pose, WPS[0].pose])
    two = WaypointTrajectory(WPS[:2], speed=0.1)
    t = np.linspace(two.t_start, two.t_end, 201)
    p = two.sample(t)[:, :3]
    # Rest to rest along the straight line: symmetric, so the middle is the midpoint.
    np.testing.assert_allclose(p[100], (WPS[0].pose[:3] + WPS[1].pose[:3]) / 2, atol=1e-9)
    d = WPS[1].pose[:3] - WPS[0].pose[:3]
    off_line = np.linalg.norm(np.cross(p - WPS[0].pose[:3], d), axis=1) / np.linalg.norm(d)
    assert off_line.max() < 1e-9


def test_guidance_samples_ahead_and_gripper_steps():
    tr = WaypointTrajectory(WPS, speed=0.1)
    g = tr.guidance(0.5, horizon_s=1.0, n=4)
    assert g.shape == (4, 7)
    np.testing.assert_allclose(g, tr.sample([0.75, 1.0, 1.25, 1.5]))
    g8 = tr.guidance(tr.times[2] - 0.3, horizon_s=0.4, n=2, with_gripper=True)
    assert g8.shape == (2, 8)
    assert list(g8[:, 7]) == [1.0, 0.0]  # the close is commanded from the grasp waypoint on
    end = tr.guidance(tr.t_end + 3, 1.0, 3)
    np.testing.assert_allclose(end, np.repeat(WPS[-1].pose[None], 3, 0), atol=1e-9)  # clamped past the end


def test_progress_takes_the_way_up_after_a_long_grasp_dwell():
    """Down to a grasp, a 1.2 s dwell, back up the same vertical line: an arm that lifts while the
    estimate is still at the dwell is on the way up (ahead), not back on the way down — even though
    the way down is nearer in *time* (the dwell lies between). Measured in path length it is."""
    down = np.array([1.0, 0.0, 0.0, 0.0])
    wps = [Waypoint(np.r_[0.4, 0.0, 0.20, down], 1.0), Waypoint(np.r_[0.4, 0.0, 0.02, down], 1.0),
           Waypoint(np.r_[0.4, 0.0, 0.02, down], 0.0, dwell=1.2), Waypoint(np.r_[0.4, 0.0, 0.20, down], 0.0),
           Waypoint(np.r_[0.6, 0.2, 0.20, down], 0.0)]
    tr = WaypointTrajectory(wps, speed=0.15)
    t_grasp = tr.times[2]
    tr.reset_progress(t_grasp)
    assert tr.progress_from_state(np.r_[0.4, 0.0, 0.021]) == pytest.approx(t_grasp, abs=0.05)
    for z in np.arange(0.025, 0.151, 0.005):  # the arm lifts, one estimate per 5 mm
        t = tr.progress_from_state(np.r_[0.401, 0.001, z])
    assert t > t_grasp + 1.2 and tr.sample(t)[2] == pytest.approx(0.15, abs=0.01)


def test_progress_follows_the_robot_not_the_clock():
    tr = WaypointTrajectory(WPS, speed=0.1)
    t_true = tr.times[1] + 0.3
    assert tr.progress_from_state(tr.sample(t_true)) == pytest.approx(t_true, abs=0.02)
    # Later estimates search near the last one: a robot stuck there keeps its progress, however
    # much time passes, and a pose far ahead only advances it by the search window.
    assert tr.progress_from_state(tr.sample(t_true)) == pytest.approx(t_true, abs=0.02)
    assert tr.progress_from_state(WPS[-1].pose) <= t_true + 2.0 + 1e-9
    tr.reset_progress()
    assert tr.progress_from_state(WPS[0].pose) == pytest.approx(tr.t_start, abs=0.02)


def test_progress_does_not_jump_back_on_a_path_that_crosses_itself():
    down_up = [Waypoint(_pose(0.5, 0, 0.3)), Waypoint(_pose(0.5, 0, 0.05), 0.0), Waypoint(_pose(0.5, 0, 0.3), 0.0)]
    tr = WaypointTrajectory(down_up, speed=0.1)
    t = tr.t_start
    for tt in np.linspace(tr.t_start, tr.t_end - 0.05, 120):  # follow the robot along the path
        t = tr.progress_from_state(tr.sample(tt))
    # On the way back up the positions repeat those of the way down; progress must stay late.
    assert t > tr.times[1]


def test_camera_frame_waypoints_are_transformed():
    T = pose_to_matrix(np.r_[0.3, -0.2, 0.8, Rotation.from_euler("x", 2.5).as_quat()])
    cam = Waypoint(np.r_[0.05, 0.02, 0.6, 0, 0, 0, 1], frame="camera")
    tr = WaypointTrajectory([cam], T_base_camera=T)
    np.testing.assert_allclose(tr.sample(0.0), transform_pose(T, cam.pose), atol=1e-12)
    with pytest.raises(ValueError, match="T_base_camera"):
        WaypointTrajectory([cam])


def test_bad_waypoints_are_refused():
    with pytest.raises(ValueError, match="7 finite"):
        Waypoint(np.r_[0, 0, np.nan, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="frame"):
        Waypoint(_pose(0, 0, 0), frame="tool")
    with pytest.raises(ValueError, match="at least one"):
        WaypointTrajectory([])


def test_sources_share_one_interface():
    T = 50
    t = np.arange(T) / 20.0
    ee = np.array([_pose(0.4 + 0.002 * i, 0, 0.3 - 0.003 * i) for i in range(T)])
    grip = np.r_[np.ones(20), np.zeros(30)]
    action = np.c_[ee, grip]
    ep = SimpleNamespace(time=t, ee_pose=ee, gripper=grip, action=action, keyframes=np.array([10, 30]))
    demo = DemoKeyframeSource(ep)
    wps = demo.waypoints()
    assert [w.t for w in wps] == [t[0], t[10], t[30], t[49]]
    np.testing.assert_allclose(wps[1].pose, ee[10])
    # Without recorded keyframes the gripper transition is used.
    ep.keyframes = np.zeros(0, dtype=int)
    assert demo.keyframe_frames() == [0, 20, 49]
    assert gripper_transition_frames(grip) == [20]

    lab = SimpleNamespace(oracle_waypoints=lambda: [SimpleNamespace(pose=_pose(0.5, 0, 0.2), gripper=0.0,
                                                                     phase="grasp", dwell=0.3)])
    oracle = OracleSource(lab).waypoints()
    assert oracle[0].label == "grasp" and oracle[0].dwell == 0.3 and oracle[0].gripper == 0.0
    manual = ManualSource([_pose(0.5, 0, 0.2), Waypoint(_pose(0.6, 0, 0.2), 0.0)]).waypoints()
    assert [w.gripper for w in manual] == [1.0, 0.0]
    for src in (demo, OracleSource(lab), ManualSource([])):
        assert isinstance(src, WaypointSource)


def test_grasp_sequence_never_overshoots_or_dips_below_the_grasp():
    """Pre-grasp → grasp (dwell) → lift: the guidance must stop at the grasp height and hold there
    (the C2 spline tried first dipped 5 mm below the grasp during the dwell and swung 5 mm sideways)."""
    down = Rotation.from_euler("x", np.pi).as_quat()
    pre, grasp, up = [0.458, 0.129, 0.14], [0.458, 0.129, 0.022], [0.458, 0.129, 0.17]
    wps = [Waypoint(np.r_[[0.30, 0.0, 0.30], down], 1.0, t=0.0), Waypoint(np.r_[pre, down], 1.0, t=2.0),
           Waypoint(np.r_[grasp, down], 1.0, t=3.0, dwell=0.8), Waypoint(np.r_[up, down], 0.0, t=5.0)]
    tr = WaypointTrajectory(wps)
    t = np.linspace(tr.t_start, tr.t_end, 3000)
    p = tr.sample(t)[:, :3]
    assert p[:, 2].min() >= grasp[2] - 1e-9
    after_pre = t >= 2.0
    np.testing.assert_allclose(p[after_pre, :2], np.tile(pre[:2], (after_pre.sum(), 1)), atol=1e-9)
    dwell = (t >= 3.0) & (t <= 3.8)
    np.testing.assert_allclose(p[dwell], np.tile(grasp, (dwell.sum(), 1)), atol=1e-9)


def test_plan_knot_frames_are_phase_changes_and_dwell_ends():
    from policies.waypoints import plan_knot_frames

    # move (0-4) → lower (5-8) → dwell at the grasp (9-12, commanded position still) → lift (13-15)
    z = np.r_[np.linspace(0.30, 0.14, 5), np.linspace(0.12, 0.02, 4), [0.02] * 4, np.linspace(0.05, 0.17, 3)]
    action = np.c_[np.full(16, 0.45), np.zeros(16), z]
    phase = [b"move"] * 5 + [b"lower"] * 4 + ["grasp"] * 4 + ["lift"] * 3
    frames = plan_knot_frames(phase, action)
    assert {5, 9, 13} <= set(frames)          # every phase change
    assert {8, 12} <= set(frames)             # the dwell's first still frame and its last
    assert all(0 <= f < 16 for f in frames) and frames == sorted(frames)


def test_gripper_change_waypoints_keeps_contacts_and_the_end():
    from policies.waypoints import Waypoint, gripper_change_waypoints

    def wp(x, g, label):
        return Waypoint(np.r_[x, 0, 0.1, 0, 0, 0, 1], g, label=label)

    plan = [wp(0.5, 1.0, "move"), wp(0.5, 1.0, "lower"), wp(0.5, 0.0, "grasp"), wp(0.5, 0.0, "lift"),
            wp(0.3, 0.0, "transport"), wp(0.3, 1.0, "place"), wp(0.3, 1.0, "retreat")]
    assert [w.label for w in gripper_change_waypoints(plan)] == ["grasp", "place", "retreat"]
    assert [w.label for w in gripper_change_waypoints(plan[:4])] == ["grasp", "lift"]
    # A start with the gripper closed: the first change is the release.
    assert [w.label for w in gripper_change_waypoints(plan[4:], start_gripper=0.0)] == ["place", "retreat"]
    assert gripper_change_waypoints([]) == []
