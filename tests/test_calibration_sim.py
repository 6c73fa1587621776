"""Hand-eye calibration on the simulated lab: the ChArUco plate on the xArm6's gripper, rendered by
MuJoCo, seen by the fixed scene camera whose true pose the simulator knows."""
from __future__ import annotations

import time

import numpy as np
import pytest

from app.calibration import (CalibrationError, fresh_frame, pose_set, run_calibration, sim_pose_centre, sim_truth,
                             transform_error)
from app.cli import main
from robots import calibration_store
from robots.charuco import BoardSpec, CharucoBoard
from robots.sim.lab import SimLab

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lab():
    # Lock-step: each move runs as fast as the CPU allows, and the arm is still while a frame renders.
    lab = SimLab.start("xarm6", realtime=False, render_hz=10.0, wrist_camera=True)
    arm, cam = lab.arm(), lab.camera()
    arm.connect()
    cam.start()
    yield lab, arm, cam
    lab.close()


def test_board_is_drawn_only_while_calibrating(lab):
    lab, arm, cam = lab
    board = CharucoBoard(BoardSpec())
    arm.move_to(sim_pose_centre("xarm6"))
    lab.show_calibration_board(False)
    assert not board.detect(fresh_frame(cam, time.monotonic()).rgb).found  # task images never show it
    lab.show_calibration_board(True)
    try:
        frame = fresh_frame(cam, time.monotonic())
        det = board.detect(frame.rgb)
        assert det.found and len(det.ids) == board.spec.n_corners
        assert board.pose(det, frame.K).reprojection_px < 0.5
    finally:
        lab.show_calibration_board(False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_the_true_camera_pose_within_5mm_and_half_a_degree(lab, seed):
    lab, arm, cam = lab
    truth = cam.wait_frame(5.0).T_base_camera
    poses = pose_set(sim_pose_centre("xarm6"), 8, seed, workspace=arm.limits.workspace)
    lab.show_calibration_board(True)
    try:
        result = run_calibration(arm, cam, poses)
    finally:
        lab.show_calibration_board(False)
    dt, dr = transform_error(result.T_base_camera, truth)
    assert dt < 5.0 and dr < 0.5, (dt, dr)
    s = result.residuals.summary()
    assert result.n_views >= 6 and s["reprojection_px_rms"] < 0.5 and s["translation_mm_max"] < 5.0
    assert not result.warnings
    # The arm is back where it started.
    assert np.linalg.norm(arm.state().ee_pose[:3] - sim_pose_centre("xarm6")[:3]) < 0.01


def test_eye_in_hand_recovers_the_wrist_camera_within_5mm_and_half_a_degree(lab):
    lab, arm, _ = lab
    wrist = lab.camera(wrist=True)
    wrist.start()
    centre = sim_pose_centre("xarm6", "eye-in-hand")
    lab.show_calibration_board(True, "table")
    try:
        result = run_calibration(arm, wrist, pose_set(centre, 8, 5, workspace=arm.limits.workspace), setup="eye-in-hand")
        truth = sim_truth("eye-in-hand", fresh_frame(wrist, time.monotonic()), arm.state().ee_pose)
    finally:
        lab.show_calibration_board(False)
        wrist.stop()
    assert result.T_base_camera is None  # a wrist camera has no fixed pose in the base frame
    dt, dr = transform_error(result.T, truth)
    assert dt < 5.0 and dr < 0.5, (dt, dr)
    assert result.residuals.summary()["reprojection_px_rms"] < 0.5


def test_a_cancelled_run_stops_where_it_is(lab):
    lab, arm, cam = lab
    seen = []
    poses = pose_set(sim_pose_centre("xarm6"), 6, 3, workspace=arm.limits.workspace)
    lab.show_calibration_board(True)
    try:
        with pytest.raises(CalibrationError, match="cancelled"):
            run_calibration(arm, cam, poses, on_progress=seen.append, should_stop=lambda: len(seen) >= 2)
    finally:
        lab.show_calibration_board(False)
    assert len(seen) == 2
    # No move back to the start after a stop request (E-STOP): the arm is still at the second pose.
    assert np.linalg.norm(arm.state().ee_pose[:3] - poses[1][:3]) < 0.005


def test_pure_translations_on_the_sim_give_the_clear_message_before_moving(lab):
    lab, arm, cam = lab
    before = arm.state().ee_pose.copy()
    c = sim_pose_centre("xarm6")
    poses = [np.concatenate([c[:3] + d, c[3:]]) for d in
             ([0, 0, 0], [0.04, 0, 0], [0, 0.04, 0], [0, 0, 0.04], [-0.04, 0, 0], [0, -0.04, 0])]
    lab.show_calibration_board(True)
    try:
        with pytest.raises(CalibrationError, match="pure translations"):
            run_calibration(arm, cam, poses)
    finally:
        lab.show_calibration_board(False)
    assert np.linalg.norm(arm.state().ee_pose[:3] - before[:3]) < 0.002


def test_board_out_of_view_gives_the_clear_message(lab):
    lab, arm, cam = lab
    # The board hidden: every view fails detection, like a board that is not mounted.
    with pytest.raises(CalibrationError, match="detected in only 0 of 5 views"):
        run_calibration(arm, cam, pose_set(sim_pose_centre("xarm6"), 5, 0))


def test_poses_outside_the_workspace_are_refused_before_any_motion(lab):
    lab, arm, cam = lab
    before = arm.state().ee_pose.copy()
    poses = pose_set(sim_pose_centre("xarm6"), 5, 0)
    poses[3] = poses[3].copy()
    poses[3][2] = 0.9  # above the workspace ceiling
    with pytest.raises(CalibrationError, match="pose 4 .* outside the arm's workspace"):
        run_calibration(arm, cam, poses)
    assert np.linalg.norm(arm.state().ee_pose[:3] - before[:3]) < 0.002


def test_calibrate_command_stores_the_result_for_the_camera(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(calibration_store.ENV_DIR, str(tmp_path))
    assert main(["calibrate", "--robot", "sim-xarm6", "--poses", "6", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "residuals: translation" in out and "error against the simulator's true T_base_camera" in out
    stored = calibration_store.load("sim-xarm6-scene_cam")
    assert stored is not None and stored.setup == "eye-to-hand" and stored.residuals["reprojection_px_rms"] < 0.5
    err_mm = float(out.split("true T_base_camera: ")[1].split(" mm")[0])
    assert err_mm < 5.0
    # Bad input: a one-line message and exit code, nothing stored.
    assert main(["calibrate", "--robot", "sim-xarm6", "--centre", "0.45,0,0.9", "--serial", "x"]) == 2
    assert "outside the workspace" in capsys.readouterr().err
    assert main(["calibrate", "--squares", "5by4"]) == 2
    assert "--squares must look like 5x4" in capsys.readouterr().err
    assert main(["calibrate", "--camera", "sim-wrist"]) == 2
    assert "use --setup eye-in-hand" in capsys.readouterr().err
    assert calibration_store.load("x") is None
