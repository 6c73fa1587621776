"""`python main.py robot status|recover|home|settings`: the arm's fault state and recovery from a shell.

    python main.py robot status  --robot xarm6:192.168.1.208      pose, joints, fault, workspace check
    python main.py robot recover --robot franka:172.16.0.2        clear a reflex / error / controller e-stop
    python main.py robot home    --robot xarm6:192.168.1.208      blocking move to the home configuration
    python main.py robot settings --robot franka --tcp-offset 0,0,0.1034 \\
        --workspace 0.25,-0.4,0.005,0.75,0.4,0.6 --save          show / store this bench's lab settings

status, recover and home connect only the arm (no camera, no input) with the lab settings applied
(TCP offset written to the controller, workspace checked). Exit code 0 on success, 1 when the arm is
still faulted (status/recover) or outside the workspace (status), 2 on bad arguments or a device error.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from app.config import add_device_args, add_lab_args, lab_config_from_args

ACTIONS = ("status", "recover", "home", "settings")


def register(subparsers) -> None:
    p = subparsers.add_parser("robot", help="arm status, Recover, Home and the per-lab TCP/workspace settings",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=ACTIONS)
    add_device_args(p, devices=("robot",), required=("robot",), notes={"robot": "(settings: also just franka | xarm6)"})
    add_lab_args(p)
    p.add_argument("--save", action="store_true", help="settings: store the given values for this robot family")
    p.set_defaults(func=run_robot)


def _print_state(session) -> int:
    from robots.lab_config import outside_message

    st = session.arm.state()
    ws = session.lab_config.workspace
    print(f"robot {session.robot_uri}: TCP xyz {np.round(st.ee_pose[:3], 4).tolist()} "
          f"quat {np.round(st.ee_pose[3:], 4).tolist()}")
    print(f"  joints {np.round(st.joint_pos, 3).tolist()}  gripper {st.gripper:.2f}")
    print(f"  fault: {st.error or 'none'}" + (f"  (warning: {st.warning})" if st.warning else ""))
    outside = outside_message(st.ee_pose, ws, "  workspace")
    print(outside or f"  workspace {list(ws.lo)}..{list(ws.hi)}: TCP inside")
    return 1 if (st.error or outside) else 0


def run_robot(args) -> int:
    from app.session import DeviceSession
    from robots.base import DeviceError

    try:
        lab = lab_config_from_args(args)
    except ValueError as exc:
        print(f"robot: {exc}", file=sys.stderr)
        return 2
    if args.action == "settings":
        print(lab.describe())
        if args.save:
            from app.lab_settings import save_lab_config
            from app.settings import Settings

            settings = Settings(args.lab_settings) if args.lab_settings else Settings()
            save_lab_config(lab, settings)
            print(f"saved to {settings.path}")
        return 0
    try:
        with DeviceSession(args.robot, "none", "none", task="pick_cube", lab=lab) as session:
            for w in session.warnings:
                print(f"warning: {w}", file=sys.stderr)
            if args.action == "recover":
                session.arm.recover()
                print("recovered")
            elif args.action == "home":
                session.arm.home()
                print("homed")
            return _print_state(session)
    except (DeviceError, ValueError) as exc:  # ValueError: a driver refused a target (home outside the box)
        print(f"robot {args.action}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1 if args.action == "recover" else 2
