"""Hand-eye calibration core (no simulator): solver, noise behaviour, degenerate input, board, store."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from app.calibration import (METHODS, SETUPS, CalibrationError, check_motion, pose_set, pose_to_matrix,
                             save_result, sim_pose_centre, solve, synthetic_views, transform_error)
from robots import calibration_store
from robots.charuco import BoardError, BoardSpec, CharucoBoard, board_texture_png
from robots.safety import default_limits
from robots.sim.tasks import TOOL_DOWN

K = np.array([[615.0, 0.0, 319.5], [0.0, 615.0, 239.5], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def board():
    return CharucoBoard(BoardSpec())


def _look_at(pos, target) -> np.ndarray:
    z = np.asarray(target, float) - pos
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, -1.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    T[:3, 3] = pos
    return T


def _truth(setup: str):
    """(X, Y, pose centre) of a plausible lab: the sim camera's pose, a board 10 cm off the flange,
    or a wrist camera looking down at a board on the table."""
    if setup == "eye-to-hand":
        X = _look_at(np.array([1.15, 0.45, 0.62]), np.array([0.42, 0.0, 0.02]))
        Y = np.eye(4)
        Y[:3, :3] = Rotation.from_euler("xyz", [100, 10, -80], degrees=True).as_matrix()
        Y[:3, 3] = [0.05, 0.10, 0.03]
        return X, Y, sim_pose_centre("xarm6")
    X = np.eye(4)
    X[:3, :3] = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    X[:3, 3] = [0.07, 0.0, -0.10]
    Y = np.eye(4)
    Y[:3, 3] = [0.35, -0.10, 0.0]
    return X, Y, np.concatenate([[0.40, 0.0, 0.45], TOOL_DOWN.as_quat()])


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_recovers_a_noise_free_setup_exactly(board, setup, method):
    X, Y, centre = _truth(setup)
    views = synthetic_views(setup, X, Y, pose_set(centre, 8, seed=1), K, board)
    result = solve(views, K, board, setup, method)
    dt, dr = transform_error(result.T, X)
    assert dt < 0.05 and dr < 0.01, (dt, dr)
    s = result.residuals.summary()
    assert s["reprojection_px_rms"] < 0.01 and s["translation_mm_max"] < 0.1
    assert not result.warnings


@pytest.mark.parametrize("setup", SETUPS)
def test_corner_noise_degrades_the_result_gracefully_and_shows_in_the_residuals(board, setup):
    X, Y, centre = _truth(setup)
    errors, residuals = [], []
    for sigma in (0.0, 0.2, 0.5, 1.5):
        t_err, px = [], []
        for seed in range(3):
            views = synthetic_views(setup, X, Y, pose_set(centre, 10, seed=seed), K, board, noise_px=sigma, seed=seed)
            r = solve(views, K, board, setup)
            t_err.append(transform_error(r.T, X)[0])
            px.append(r.residuals.summary()["reprojection_px_rms"])
        errors.append(np.mean(t_err))
        residuals.append(np.mean(px))
    # The error grows with the noise, never jumps (no solver breakdown), and the residuals say so.
    assert errors[0] < 0.05
    assert errors[1] < errors[2] < errors[3]
    assert errors[1] < 3.0 and errors[3] < 20.0, errors
    assert residuals[0] < 0.01 < residuals[1] < residuals[2] < residuals[3]
    # The reprojection residual estimates the corner noise itself.
    assert 0.9 * 1.5 < residuals[3] < 1.6 * 1.5  # ~sqrt(2) sigma: the 2-D norm of x and y noise


def test_pure_translations_are_refused_with_a_clear_message(board):
    X, Y, centre = _truth("eye-to-hand")
    poses = [np.concatenate([centre[:3] + d, centre[3:]]) for d in np.random.default_rng(0).uniform(-0.05, 0.05, (8, 3))]
    views = synthetic_views("eye-to-hand", X, Y, poses, K, board)
    with pytest.raises(CalibrationError, match="pure translations cannot fix the camera pose"):
        solve(views, K, board)


def test_rotations_about_a_single_axis_are_refused(board):
    X, Y, centre = _truth("eye-to-hand")
    r0 = Rotation.from_quat(centre[3:])
    poses = [np.concatenate([centre[:3] + [0.0, 0.01 * i, 0.0], (Rotation.from_euler("z", 8 * i, degrees=True) * r0).as_quat()])
             for i in range(7)]
    views = synthetic_views("eye-to-hand", X, Y, poses, K, board)
    with pytest.raises(CalibrationError, match="about one axis"):
        solve(views, K, board)


def test_too_few_views_are_refused(board):
    X, Y, centre = _truth("eye-to-hand")
    views = synthetic_views("eye-to-hand", X, Y, pose_set(centre, 8)[:3], K, board)
    with pytest.raises(CalibrationError, match="only 3 usable views"):
        solve(views, K, board)


def test_unknown_setup_and_method_are_refused(board):
    X, Y, centre = _truth("eye-to-hand")
    views = synthetic_views("eye-to-hand", X, Y, pose_set(centre, 6), K, board)
    with pytest.raises(CalibrationError, match="unknown set-up"):
        solve(views, K, board, setup="eye-on-table")
    with pytest.raises(CalibrationError, match="unknown method"):
        solve(views, K, board, method="magic")


def test_a_moved_board_is_flagged_in_the_warnings(board):
    X, Y, centre = _truth("eye-to-hand")
    poses = pose_set(centre, 8, seed=2)
    views = synthetic_views("eye-to-hand", X, Y, poses, K, board)
    # The board slipped on the gripper by 2 cm before the last view.
    Y2 = Y.copy()
    Y2[:3, 3] += [0.02, 0.0, 0.0]
    views[-1] = synthetic_views("eye-to-hand", X, Y2, poses[-1:], K, board)[0]
    result = solve(views, K, board)
    assert result.warnings and "disagrees" in result.warnings[0]


@pytest.mark.parametrize("seed", range(5))
def test_pose_sets_stay_in_the_workspace_and_rotate_about_several_axes(seed):
    ws = default_limits("xarm6").workspace
    poses = pose_set(sim_pose_centre("xarm6"), 8, seed, workspace=ws)
    assert all(ws.contains(p[:3]) for p in poses)
    check_motion([pose_to_matrix(p) for p in poses])  # raises when degenerate
    # Near a workspace face the positions are pulled inside, never outside.
    corner = np.concatenate([ws.hi, TOOL_DOWN.as_quat()])
    assert all(ws.contains(p[:3]) for p in pose_set(corner, 6, seed, workspace=ws))
    with pytest.raises(CalibrationError, match="at least 5 poses"):
        pose_set(sim_pose_centre("xarm6"), 3)


# ------------------------------------------------------------------------------------------ board


def test_board_spec_rejects_impossible_boards_with_a_message():
    with pytest.raises(BoardError, match="marker size"):
        BoardSpec(marker=0.05, square=0.04)
    with pytest.raises(BoardError, match="at least 3x3"):
        BoardSpec(squares_x=2)
    with pytest.raises(BoardError, match="has only 50"):
        BoardSpec(squares_x=12, squares_y=10)
    with pytest.raises(BoardError, match="metres"):
        BoardSpec(square=40.0, marker=30.0)


def test_board_is_detected_in_its_own_image_and_not_in_a_blank_one(board):
    import cv2

    img = board.image(px_per_m=3000)
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    det = board.detect(rgb)
    assert det.found and len(det.ids) == board.spec.n_corners
    blank = board.detect(np.full((480, 640, 3), 200, np.uint8))
    assert not blank.found and board.pose(blank, K) is None
    path, (w, h) = board_texture_png(board.spec)
    assert path.is_file() and w > board.spec.size[0] and h > board.spec.size[1]


# ------------------------------------------------------------------------------------------ store


def _result(board):
    X, Y, centre = _truth("eye-to-hand")
    return solve(synthetic_views("eye-to-hand", X, Y, pose_set(centre, 6), K, board), K, board)


def test_store_round_trip_per_serial_with_date_method_and_residuals(board, tmp_path, monkeypatch):
    monkeypatch.setenv(calibration_store.ENV_DIR, str(tmp_path))
    result = _result(board)
    path = save_result(result, "215322071234", robot="xarm6:192.168.1.208")
    assert path == tmp_path / "215322071234.json"
    stored = calibration_store.load("215322071234")
    np.testing.assert_allclose(stored.T_base_camera, result.T)
    assert stored.date == result.date and "park" in stored.method
    assert stored.residuals["translation_mm_rms"] == pytest.approx(result.residuals.summary()["translation_mm_rms"])
    assert len(stored.residuals["per_view"]["reprojection_px"]) == result.n_views
    assert stored.extra["board"]["squares_x"] == 5 and stored.extra["robot"] == "xarm6:192.168.1.208"
    assert calibration_store.load("other-serial") is None
    # The file is also what realsense.load_extrinsics reads for --calibration.
    from robots.realsense import load_extrinsics

    np.testing.assert_allclose(load_extrinsics(path), result.T)


def test_a_broken_store_file_is_reported_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(calibration_store.ENV_DIR, str(tmp_path))
    bad = tmp_path / "123.json"
    bad.write_text("{not json")
    with pytest.raises(calibration_store.CalibrationStoreError, match="cannot read"):
        calibration_store.load("123")
    assert calibration_store.load_quietly("123") is None
    assert bad.read_text() == "{not json"  # nothing lost
    bad.write_text(json.dumps({"setup": "eye-to-hand", "T_base_camera": (2 * np.eye(4)).tolist()}))
    with pytest.raises(calibration_store.CalibrationStoreError, match="not rigid"):
        calibration_store.load("123")
    with pytest.raises(calibration_store.CalibrationStoreError, match="not rigid"):
        calibration_store.save("123", "eye-to-hand", 2 * np.eye(4), method="x", date="d", residuals={})


def test_realsense_camera_takes_its_stored_calibration_by_serial(board, tmp_path, monkeypatch):
    from robots.realsense import RealSenseCamera

    monkeypatch.setenv(calibration_store.ENV_DIR, str(tmp_path))
    cam = RealSenseCamera(serial="215322071234")
    assert not cam.calibrated and np.array_equal(cam.T_base_camera, np.eye(4))
    result = _result(board)
    save_result(result, "215322071234")
    cam = RealSenseCamera(serial="215322071234")
    assert cam.calibrated and cam.calibration is not None
    np.testing.assert_allclose(cam.T_base_camera, result.T)
    # An explicit matrix wins over the store.
    assert np.array_equal(RealSenseCamera(serial="215322071234", T_base_camera=np.eye(4)).T_base_camera, np.eye(4))


def test_a_stored_calibration_reaches_the_frames_and_the_episode_camera_meta(board, tmp_path, monkeypatch):
    """Store file -> RealSense frames -> the /camera meta every episode writes (app/recording.py)."""
    from app.recording import camera_meta
    from robots.realsense import RealSenseCamera, write_rgbd_recording

    monkeypatch.setenv(calibration_store.ENV_DIR, str(tmp_path))
    result = _result(board)
    path = save_result(result, "215322071234")
    Kc = np.array([[50.0, 0.0, 31.5], [0.0, 51.0, 23.5], [0.0, 0.0, 1.0]])
    rgb = np.zeros((48, 64, 3), np.uint8)
    depth = np.full((48, 64), 800, np.uint16)
    rec = write_rgbd_recording(tmp_path / "rec.db3", [(rgb, depth, i, 1000.0 + 33.3 * i) for i in range(2)], K=Kc)
    # A recording has no live serial, so the stored file is given explicitly (a live camera looks it up).
    with RealSenseCamera(playback=rec, realtime=False, calibration=path) as cam:
        frame = cam.wait_frame(5.0)
    np.testing.assert_allclose(frame.T_base_camera, result.T)
    np.testing.assert_allclose(camera_meta(frame, cam)["T_base_camera"], result.T)
