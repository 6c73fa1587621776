"""The simulated lab with the FR3: franky-sim in the sim process, the real franky client in ours."""
from __future__ import annotations

import time

import numpy as np
import pytest

from robots.base import Arm
from robots.sim.expert import ScriptedExpert, ScriptedOperator, ensure_connected, run_episode

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def franka_lab(sim_lab):
    return sim_lab("franka", wrist_camera=True, render_hz=10.0)


def _episodes(lab, arm, task, seeds):
    t = time.monotonic()
    ok = [run_episode(lab, arm, task, s) for s in seeds]
    print(f"\nsim-franka {task}: {sum(ok)}/{len(ok)} in {time.monotonic() - t:.0f} s wall (real time)")
    return ok


def test_franka_is_the_franky_client_on_loopback(franka_lab):
    lab, arm = franka_lab
    from robots.franka import FrankaArm

    assert isinstance(arm, FrankaArm) and isinstance(arm, Arm) and lab.arm() is arm
    assert lab.info["franka_host"].startswith("127.0.0.")
    s = arm.state()
    assert s.joint_pos.shape == (7,)
    # Hand points straight down at home (the orientation the task keyframes use).
    assert abs(abs(s.ee_pose[3]) - 1.0) < 0.02


def test_wrist_camera_moves_with_the_hand(franka_lab):
    lab, arm = franka_lab
    cam = lab.camera(wrist=True)
    cam.start()
    f = cam.wait_frame(timeout=10)
    ee = arm.state().ee_pose
    assert np.linalg.norm(f.T_base_camera[:3, 3] - ee[:3]) < 0.2
    assert f.T_base_camera[2, 2] < -0.9  # optical axis looks down along the tool
    # Something (the table, ~0.5 m below) is in range in most of the image.
    valid = (f.depth > 0) & (f.depth < 2000)
    assert valid.mean() > 0.5


@pytest.mark.parametrize("task", ["pick_cube", "place_in_bin"])
def test_scripted_expert_two_seeds(franka_lab, task):
    lab, arm = franka_lab
    assert all(_episodes(lab, arm, task, (0, 1)))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["pick_cube", "place_in_bin"])
def test_scripted_expert_succeeds_on_9_of_10_seeds(franka_lab, task):
    lab, arm = franka_lab
    assert sum(_episodes(lab, arm, task, range(10))) >= 9


def test_scripted_operator_through_the_control_loop(franka_lab):
    """--input scripted: the expert as a TeleopDevice (twists + gripper button) through the teleop loop
    and its safety filter, as a person with a SpaceMouse would drive it."""
    from app.teleop import ControlLoop

    lab, arm = franka_lab
    ensure_connected(arm)
    lab.reset("pick_cube", 2)
    op = ScriptedOperator(lab, arm)
    op.open()
    ticks = []
    loop = ControlLoop(arm, op, rate_hz=20.0)
    loop.add_listener(ticks.append)
    loop.start()
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not op.expert.done(time.monotonic() - op._t0 - 1.0):
            time.sleep(0.1)
    finally:
        loop.stop()
        op.close()
    phases = [t.info.get("expert_phase") for t in ticks]
    assert {"move", "lower", "grasp", "lift"} <= set(phases)
    assert any(t.buttons.get("gripper") for t in ticks)
    assert lab.success(), f"cube at {lab.object_poses()['cube_red'][:3]}"


def test_scripted_expert_as_target_source_in_the_control_loop(franka_lab):
    from app.teleop import ControlLoop

    lab, arm = franka_lab
    ensure_connected(arm)
    lab.reset("place_in_bin", 4)
    expert = ScriptedExpert(lab, arm)
    loop = ControlLoop(arm, expert, rate_hz=20.0)
    events = []
    loop.add_listener(lambda t: events.extend(t.events))
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not expert.done(time.monotonic() - loop.t0 - 1.0):
            time.sleep(0.1)
    finally:
        loop.stop()
    assert lab.success(), (lab.object_poses()["cube_red"][:3], events[:5])
