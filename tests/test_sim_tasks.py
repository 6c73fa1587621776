"""Pure-geometry checks of the sim tasks and the expert's trajectory (no simulator process)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robots.base import ArmState
from robots.sim.expert import PEAK_SPEED, ScriptedExpert, plan_waypoints
from robots.sim.tasks import TASKS, TOOL_DOWN, get_task, grasp_rotation, pose7, sample_layout
from robots.sim.world import CUBE_HALF, CUBES


def _poses_from_layout(layout):
    poses = {}
    for name, p in layout.items():
        z = CUBE_HALF if name in CUBES else 0.0
        poses[name] = np.r_[p.x, p.y, z, Rotation.from_euler("z", p.yaw).as_quat()]
    poses["button"][2] = 0.046
    return poses


def test_layout_is_reproducible_separated_and_reachable():
    for seed in range(30):
        a, b = sample_layout(seed), sample_layout(seed)
        assert a == b
        names = list(a)
        for i, n in enumerate(names):
            assert 0.30 <= np.hypot(a[n].x, a[n].y) <= 0.54
            for m in names[i + 1:]:
                assert np.hypot(a[n].x - a[m].x, a[n].y - a[m].y) > 0.08
    assert sample_layout(1) != sample_layout(2)


def test_grasp_rotation_folds_cube_yaw_into_quarter_turn():
    for yaw in np.linspace(-3, 3, 13):
        cube = np.r_[0.4, 0, CUBE_HALF, Rotation.from_euler("z", yaw).as_quat()]
        rel = grasp_rotation(cube) * TOOL_DOWN.inv()
        g = rel.as_euler("ZYX")[0]
        assert abs(g) <= np.pi / 4 + 1e-9
        # Same face orientation modulo 90 degrees.
        assert abs(((g - yaw) + np.pi / 4) % (np.pi / 2) - np.pi / 4) < 1e-9


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown sim task 'fly'.*pick_cube"):
        get_task("fly")


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_plan_respects_speed_and_never_dips_below_keyframes(task):
    poses = _poses_from_layout(sample_layout(4))
    wps = TASKS[task].waypoints(poses)
    start = pose7([0.3, 0.0, 0.3], TOOL_DOWN)
    plan = plan_waypoints(start, wps)
    t = np.arange(0.0, plan.duration, 0.005)
    xyz = np.array([plan.pose(x)[:3] for x in t])
    speed = np.linalg.norm(np.diff(xyz, axis=0), axis=1) / 0.005
    assert speed.max() <= PEAK_SPEED * 1.02
    # Rest-to-rest legs: the lowest point of the whole path is a keyframe, never an overshoot.
    assert xyz[:, 2].min() >= min(w.pose[2] for w in wps) - 1e-6
    # Keyframes are hit exactly at their arrival times.
    for k, w in enumerate(wps, start=1):
        np.testing.assert_allclose(plan.pose(plan.arrive[k])[:3], w.pose[:3], atol=1e-9)
    assert plan.duration <= TASKS[task].max_duration
    # Gripper acts on arrival at a grasp keyframe, not before.
    for k, w in enumerate(wps, start=1):
        if w.phase == "grasp":
            assert plan.gripper(plan.arrive[k] - 0.01) == 1.0
            assert plan.gripper(plan.arrive[k] + 0.01) == 0.0


class _FakeOracleLab:
    """Only the oracle's keyframes; the expert's gating logic is what is under test."""

    def __init__(self, wps):
        self._wps = wps

    def oracle_waypoints(self):
        return self._wps


def test_expert_holds_at_a_keyframe_until_the_arm_gets_there():
    wps = TASKS["pick_cube"].waypoints(_poses_from_layout(sample_layout(0)))
    start = pose7([0.3, 0.0, 0.3], TOOL_DOWN)
    ex = ScriptedExpert(_FakeOracleLab(wps), arm=None)
    stuck = ArmState(stamp=0.0, ee_pose=start, joint_pos=np.zeros(6), gripper=1.0)
    ex.next_target(stuck, None, 0.0)
    first_arrival = ex.plan.depart[1]
    # The arm never moves: the target stops at the first keyframe and the phase stays "move".
    for t in np.arange(0.0, first_arrival + 2.0, 0.05):
        pose, grip, info = ex.next_target(stuck, None, t)
    np.testing.assert_allclose(pose[:3], wps[0].pose[:3], atol=1e-9)
    assert info["expert_phase"] == "move" and grip == 1.0
    assert ex.waited > 1.5 and not ex.done(first_arrival + 2.0)
    # Once the arm arrives, the plan resumes where it stopped (it does not jump ahead).
    there = ArmState(stamp=0.0, ee_pose=wps[0].pose, joint_pos=np.zeros(6), gripper=1.0)
    pose, _, info = ex.next_target(there, None, first_arrival + 2.05)
    assert info["expert_phase"] == "lower"
    assert np.linalg.norm(pose[:3] - wps[0].pose[:3]) < 0.005
