"""Keyframe detection on synthetic expert-like pick/place trajectories with noise."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recorder.keyframes import (KeyframeParams, arm_state_from_pose, detect_keyframes, format_events,
                                gripper_keyframes, static_intervals)
from synthetic_pick_place import pick_place


@pytest.mark.parametrize("seed", range(20))
def test_gripper_keyframes_exact_to_one_frame(seed):
    syn = pick_place(seed)
    found = gripper_keyframes(syn.gripper)
    assert [k.kind for k in found] == [kind for _, kind in syn.gripper_truth]
    for k, (frame, _) in zip(found, syn.gripper_truth):
        assert abs(k.frame - frame) <= 1


def test_gripper_chatter_is_filtered_by_min_separation():
    g = np.ones(120)
    g[40:] = 0.0
    g[44:46] = 1.0  # a two-frame glitch right after closing
    events = gripper_keyframes(g, KeyframeParams(gripper_window=1, min_separation=10))
    assert [(e.frame, e.kind) for e in events] == [(40, "gripper_close")]
    noisy = gripper_keyframes(g, KeyframeParams(gripper_window=1, min_separation=1))
    assert len(noisy) == 3  # the filter, not the window, removed the glitch


def test_still_gripper_has_no_transitions():
    rng = np.random.default_rng(0)
    assert gripper_keyframes(0.8 + rng.normal(0, 0.005, 200)) == []


def test_static_intervals_find_dwells_and_nothing_in_motion():
    syn = pick_place(3)
    phases = np.array(syn.phases)
    intervals = static_intervals(arm_state_from_pose(syn.ee_pose))
    static = np.zeros(len(phases), bool)
    for a, b in intervals:
        static[a:b] = True
    grasp = np.flatnonzero(phases == "grasp")
    place = np.flatnonzero(phases == "place")
    # most of each gripper dwell is static, the fast transport is not
    assert static[grasp].mean() > 0.7 and static[place].mean() > 0.7
    transport = np.flatnonzero(phases == "transport")
    mid = transport[len(transport) // 4: 3 * len(transport) // 4]
    assert not static[mid].any()


def test_static_threshold_ratio_is_a_real_knob():
    state = arm_state_from_pose(pick_place(5).ee_pose)
    few = sum(b - a for a, b in static_intervals(state, KeyframeParams(threshold_ratio=0.05)))
    many = sum(b - a for a, b in static_intervals(state, KeyframeParams(threshold_ratio=0.6)))
    assert many > few > 0


def test_arm_state_is_continuous_across_quaternion_sign_flips():
    yaw = np.linspace(0, 2.5, 60)
    q = (Rotation.from_euler("x", np.pi) * Rotation.from_euler("z", yaw[:, None])).as_quat()
    q[::2] *= -1  # same rotations, alternating sign
    pose = np.hstack([np.zeros((60, 3)), q])
    state = arm_state_from_pose(pose)
    steps = np.linalg.norm(np.diff(state[:, 3:], axis=0), axis=1)
    assert np.allclose(steps, 2.5 / 59, atol=1e-9)


def test_detect_keyframes_sorted_and_formatted_as_prompt_hints():
    syn = pick_place(1)
    kfs = detect_keyframes(syn.ee_pose, syn.gripper)
    assert [k.frame for k in kfs] == sorted(k.frame for k in kfs)
    kinds = {k.kind for k in kfs}
    assert {"static", "gripper_close", "gripper_open"} <= kinds
    text = format_events(kfs, np.arange(len(syn.gripper)) / syn.fps)
    assert "s: gripper_close" in text and text.count("\n") == len(kfs) - 1


def test_bad_pose_shape_is_one_line_error():
    with pytest.raises(ValueError) as err:
        arm_state_from_pose(np.zeros((10, 6)))
    assert "\n" not in str(err.value) and "(T, 7)" in str(err.value)
