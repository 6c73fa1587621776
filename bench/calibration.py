"""Calibration error table on the simulated lab, plus the corner-noise study and the dialog screenshot.

    MUJOCO_GL=egl .venv/bin/python bench/calibration.py [--robot xarm6] [--poses 8] [--seeds 0 1 2] [--setup eye-in-hand]
    MUJOCO_GL=egl QT_QPA_PLATFORM=offscreen .venv/bin/python bench/calibration.py --screenshot docs/screenshots/calibration.png

Table 1: eye-to-hand calibration of the sim scene camera from the ChArUco plate on the gripper, one
row per pose set (seed): error of the recovered T_base_camera against the simulator's true camera
pose, and the residuals the app reports. Table 2: the same solver on exact projections of the sim
geometry with Gaussian corner noise (what a real detector adds), 3 seeds averaged.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sim_table(robot: str, n_poses: int, seeds: list[int], setup: str = "eye-to-hand") -> list[dict]:
    from app.calibration import fresh_frame, pose_set, run_calibration, sim_pose_centre, sim_truth, transform_error
    from robots.sim.lab import SimLab

    rows = []
    wrist = setup == "eye-in-hand"
    with SimLab.start(robot, realtime=(robot == "franka"), render_hz=10.0, wrist_camera=wrist) as lab:
        arm, cam = lab.arm(), lab.camera(wrist=wrist)
        arm.connect()
        cam.start()
        lab.show_calibration_board(True, "table" if wrist else "gripper")
        for seed in seeds:
            t0 = time.monotonic()
            poses = pose_set(sim_pose_centre(robot, setup), n_poses, seed, workspace=arm.limits.workspace)
            r = run_calibration(arm, cam, poses, setup=setup)
            truth = sim_truth(setup, fresh_frame(cam, time.monotonic()), arm.state().ee_pose)
            dt, dr = transform_error(r.T, truth)
            s = r.residuals.summary()
            rows.append({"seed": seed, "views": f"{r.n_views}/{n_poses}", "err_mm": dt, "err_deg": dr,
                         "res_mm": s["translation_mm_rms"], "res_deg": s["rotation_deg_rms"],
                         "res_px": s["reprojection_px_rms"], "s": time.monotonic() - t0})
    return rows


def noise_table(n_poses: int, sigmas=(0.0, 0.2, 0.5, 1.0, 2.0)) -> list[dict]:
    from app.calibration import pose_set, sim_pose_centre, solve, synthetic_views, transform_error
    from robots.charuco import BoardSpec, CharucoBoard
    from robots.sim.world import SCENE_CAM_POS, SCENE_CAM_TARGET

    board = CharucoBoard(BoardSpec())
    K = np.array([[615.0, 0, 319.5], [0, 615.0, 239.5], [0, 0, 1]])
    z = SCENE_CAM_TARGET - SCENE_CAM_POS
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, -1.0])
    x /= np.linalg.norm(x)
    X = np.eye(4)
    X[:3, :3], X[:3, 3] = np.stack([x, np.cross(z, x), z], 1), SCENE_CAM_POS
    Y = np.eye(4)
    Y[:3, 3] = [0.09, 0.0, -0.14]
    Y[:3, :3] = np.array([[0, -0.5, 0.866], [-1, 0, 0], [0, -0.866, -0.5]])
    rows = []
    for sigma in sigmas:
        e_mm, e_deg, px, res_mm = [], [], [], []
        for seed in range(3):
            views = synthetic_views("eye-to-hand", X, Y, pose_set(sim_pose_centre("xarm6"), n_poses, seed), K, board,
                                    noise_px=sigma, seed=seed)
            r = solve(views, K, board)
            dt, dr = transform_error(r.T, X)
            s = r.residuals.summary()
            e_mm.append(dt), e_deg.append(dr), px.append(s["reprojection_px_rms"]), res_mm.append(s["translation_mm_rms"])
        rows.append({"sigma": sigma, "err_mm": np.mean(e_mm), "err_deg": np.mean(e_deg), "res_mm": np.mean(res_mm),
                     "res_px": np.mean(px)})
    return rows


def screenshot(path: Path, robot: str) -> None:
    from PySide6 import QtWidgets

    from robots.sim.lab import SimLab
    from widgets.calibration_dialog import CalibrationDialog
    from widgets.main_window import apply_theme

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    apply_theme(app)

    def pump(s: float) -> None:
        t = time.monotonic()
        while time.monotonic() - t < s:
            app.processEvents()
            time.sleep(0.02)

    with SimLab.start(robot, realtime=(robot == "franka"), render_hz=10.0) as lab:
        arm, cam = lab.arm(), lab.camera()
        arm.connect()
        cam.start()
        dlg = CalibrationDialog(arm, cam, lab=lab, robot=f"sim-{robot}", store_dir=path.parent / ".unused")
        dlg.show()
        dlg.start()
        t = time.monotonic()
        while dlg.running and time.monotonic() - t < 180:
            pump(0.1)
        dlg.move_to_centre()
        while dlg.running and time.monotonic() - t < 240:
            pump(0.1)
        pump(1.5)  # a few preview frames at the centre pose
        path.parent.mkdir(parents=True, exist_ok=True)
        dlg.grab().save(str(path))
        print(f"saved {path}")
        dlg.done(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="xarm6", choices=["xarm6", "franka"])
    ap.add_argument("--poses", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--setup", default="eye-to-hand", choices=["eye-to-hand", "eye-in-hand"],
                    help="eye-in-hand: the wrist camera and the board on its stand")
    ap.add_argument("--screenshot", type=Path, default=None, help="save the calibration dialog here instead")
    a = ap.parse_args()
    if a.screenshot is not None:
        screenshot(a.screenshot, a.robot)
        return 0
    what = "T_base_camera" if a.setup == "eye-to-hand" else "T_gripper_camera"
    print(f"Sim lab ({a.robot}), {a.setup}, {a.poses} poses per set: error vs the true {what} and residuals")
    print("| pose set (seed) | views | error mm | error deg | residual mm rms | residual deg rms | reprojection px rms | time s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sim_table(a.robot, a.poses, a.seeds, a.setup):
        print(f"| {r['seed']} | {r['views']} | {r['err_mm']:.2f} | {r['err_deg']:.3f} | {r['res_mm']:.2f} | "
              f"{r['res_deg']:.3f} | {r['res_px']:.3f} | {r['s']:.1f} |")
    print()
    print(f"Corner noise (synthetic views of the same geometry, {a.poses} poses, mean of 3 pose sets)")
    print("| corner noise px | error mm | error deg | residual mm rms | reprojection px rms |")
    print("|---|---|---|---|---|")
    for r in noise_table(a.poses):
        print(f"| {r['sigma']:.1f} | {r['err_mm']:.2f} | {r['err_deg']:.3f} | {r['res_mm']:.2f} | {r['res_px']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
