"""`python main.py calibrate`: hand-eye calibration of the camera with a ChArUco board.

The arm visits N poses around a centre (tilted and turned so the board is seen from different
angles), the board is detected in each frame, OpenCV solves the hand-eye problem and a
reprojection refinement finishes it. Residuals are printed; the result is stored for the camera's
serial (~/.config/actstudio/calibration/<serial>.json) and loaded whenever that camera connects.

    eye-to-hand (default)  camera fixed in the lab, board on the gripper  -> T_base_camera
    eye-in-hand            camera on the wrist, board fixed on the table -> T_gripper_camera

On the simulated lab a board plate appears on the gripper and the error against the simulator's
true camera pose is printed as well. On hardware, first jog the arm so that the board is seen
squarely by the camera: that pose is the centre (or give --centre x,y,z).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="hand-eye camera calibration with a ChArUco board",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robot", default="sim-xarm6", help="sim-franka | sim-xarm6 | franka:<ip> | xarm6:<ip> (default %(default)s)")
    p.add_argument("--camera", default="sim", help="sim | realsense[:SERIAL] (default %(default)s)")
    p.add_argument("--setup", default="eye-to-hand", choices=["eye-to-hand", "eye-in-hand"])
    p.add_argument("--poses", type=int, default=10, help="number of arm poses (default %(default)s, at least 5)")
    p.add_argument("--seed", type=int, default=0, help="pose set seed (default %(default)s)")
    p.add_argument("--centre", default="", help="x,y,z of the pose set centre in metres (default: the current "
                                                "tool pose; on the sim lab a pose facing its camera)")
    p.add_argument("--radius", type=float, default=0.06, help="position spread per axis, m (default %(default)s)")
    p.add_argument("--tilt", type=float, default=20.0, help="tool tilt about x/y up to, deg (default %(default)s)")
    p.add_argument("--yaw", type=float, default=30.0, help="tool turn about base z up to +-, deg (default %(default)s)")
    p.add_argument("--squares", default="5x4", help="board squares XxY (default %(default)s)")
    p.add_argument("--square-mm", type=float, default=40.0, help="square side, mm (default %(default)s)")
    p.add_argument("--marker-mm", type=float, default=30.0, help="marker side, mm (default %(default)s)")
    p.add_argument("--dictionary", default="DICT_4X4_50", help="ArUco dictionary (default %(default)s)")
    p.add_argument("--method", default="park", help="tsai | park | horaud | andreff | daniilidis | shah | li "
                                                   "(closed-form start; default %(default)s)")
    p.add_argument("--serial", default="", help="store under this key (default: the camera's serial)")
    p.add_argument("--no-save", action="store_true", help="print the result, do not store it")
    p.add_argument("--dry-run", action="store_true", help="print the pose set and exit without moving")
    p.set_defaults(func=run)


def _board(args):
    from robots.charuco import BoardError, BoardSpec

    try:
        sx, sy = (int(v) for v in args.squares.lower().split("x"))
    except ValueError:
        raise BoardError(f"--squares must look like 5x4, got {args.squares!r}") from None
    return BoardSpec(sx, sy, args.square_mm / 1000.0, args.marker_mm / 1000.0, args.dictionary)


def run(args: argparse.Namespace) -> int:
    from app.calibration import (CalibrationError, apply_to_camera, camera_key, fresh_frame, pose_set, run_calibration,
                                 save_result, sim_pose_centre, sim_truth, transform_error)
    from app.session import DeviceSession
    from robots.base import DeviceError
    from robots.charuco import BoardError
    from robots.factory import UriError, parse_arm, parse_camera
    from robots.safety import default_limits

    try:
        board = _board(args)
        arm_uri, cam_uri = parse_arm(args.robot), parse_camera(args.camera)
        if cam_uri.kind == "none":
            raise UriError("calibration needs a camera")
        if cam_uri.kind == "sim" and args.setup == "eye-in-hand":
            raise UriError("the sim lab's camera 'sim' is fixed: eye-in-hand needs --camera sim-wrist")
        if cam_uri.kind == "sim-wrist" and args.setup == "eye-to-hand":
            raise UriError("the sim lab's wrist camera moves with the arm: use --setup eye-in-hand")
        if cam_uri.is_sim and board != type(board)():
            raise UriError("the simulated lab's boards are the default board (5x4, 40/30 mm, DICT_4X4_50)")
        centre_xyz = None
        if args.centre:
            try:
                centre_xyz = np.array([float(v) for v in args.centre.split(",")])
            except ValueError:
                centre_xyz = np.zeros(0)
            if centre_xyz.shape != (3,):
                raise UriError(f"--centre must be x,y,z in metres, got {args.centre!r}")
            ws = default_limits(arm_uri.kind).workspace
            if not ws.contains(centre_xyz):  # checked before any device opens
                raise UriError(f"centre {centre_xyz.round(3).tolist()} is outside the workspace {ws.lo} .. {ws.hi}")
    except (BoardError, UriError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    try:
        with DeviceSession(args.robot, args.camera, "none", realtime=not arm_uri.is_sim) as session:
            # (lock-step for the simulated xArm6: moves run as fast as the CPU allows, frames show the arm at rest)
            arm, cam = session.arm, session.camera
            start = np.asarray(arm.state().ee_pose, float)
            if centre_xyz is not None:
                centre = np.concatenate([centre_xyz, (sim_pose_centre(arm.name, args.setup) if arm_uri.is_sim
                                                      else start)[3:]])
            else:
                centre = sim_pose_centre(arm.name, args.setup) if arm_uri.is_sim else start
            if not arm.limits.workspace.contains(centre[:3]):
                raise CalibrationError(f"centre {np.round(centre[:3], 3).tolist()} is outside the workspace "
                                       f"{arm.limits.workspace.lo} .. {arm.limits.workspace.hi}")
            poses = pose_set(centre, args.poses, args.seed, workspace=arm.limits.workspace, radius=args.radius,
                             tilt_deg=args.tilt, yaw_deg=args.yaw)
            if args.dry_run:
                for i, p in enumerate(poses):
                    print(f"pose {i + 1}: xyz {np.round(p[:3], 3).tolist()} quat {np.round(p[3:], 3).tolist()}")
                return 0
            if session.lab is not None:
                session.lab.show_calibration_board(True, "gripper" if args.setup == "eye-to-hand" else "table")
            print(f"{args.setup}: {len(poses)} poses around {np.round(centre[:3], 3).tolist()}, board {board.describe()}")
            result = run_calibration(arm, cam, poses, board, setup=args.setup, method=args.method,
                                     on_progress=lambda p: print(p.message, flush=True))
            if session.lab is not None:
                session.lab.show_calibration_board(False)
            print(result.report())
            if session.lab is not None:  # the simulator knows the answer
                truth = sim_truth(args.setup, fresh_frame(cam, time.monotonic()), arm.state().ee_pose)
                dt, dr = transform_error(result.T, truth)
                name = "T_base_camera" if args.setup == "eye-to-hand" else "T_gripper_camera"
                print(f"error against the simulator's true {name}: {dt:.2f} mm, {dr:.3f} deg")
            if not args.no_save:
                key = args.serial or camera_key(cam, str(arm_uri))
                path = save_result(result, key, robot=str(arm_uri))
                apply_to_camera(cam, result)
                print(f"stored for camera {key}: {path}")
    except (CalibrationError, DeviceError, TimeoutError, ValueError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 1
    return 0
