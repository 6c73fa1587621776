"""Defaults and shared command-line options for device selection."""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_ROBOT = "sim-franka"
DEFAULT_CAMERA = "sim"
DEFAULT_INPUT = "keyboard"
DEFAULT_RATE_HZ = 20.0
MAX_RATE_HZ = 100.0
APP_VERSION = "0.1.0"
REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"


def add_device_args(parser: argparse.ArgumentParser, *, default_input: str = DEFAULT_INPUT) -> None:
    g = parser.add_argument_group("devices (URIs as in DESIGN.md)")
    g.add_argument("--robot", default=DEFAULT_ROBOT,
                   help="sim-franka | sim-xarm6 | franka:<ip> | xarm6:<ip> (default %(default)s)")
    g.add_argument("--camera", default=DEFAULT_CAMERA,
                   help="sim | sim-wrist | realsense[:SERIAL] | bag:PATH | none (default %(default)s)")
    g.add_argument("--input", default=default_input,
                   help="spacemouse | keyboard | scripted | none (default %(default)s)")
    g.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ,
                   help=f"control rate in Hz, up to {MAX_RATE_HZ:g} (default %(default)s)")


def add_lab_args(parser: argparse.ArgumentParser) -> None:
    """Per-lab TCP offset and workspace (robots/lab_config.py): overrides of the stored lab settings."""
    g = parser.add_argument_group("lab settings (default: the stored ones, see `main.py robot settings`)")
    g.add_argument("--tcp-offset", default=None, metavar="X,Y,Z",
                   help="flange → fingertip centre in metres, e.g. 0,0,0.1034 (Franka Hand), 0,0,0.172 (xArm Gripper)")
    g.add_argument("--workspace", default=None, metavar="X0,Y0,Z0,X1,Y1,Z1",
                   help="box the fingertips must stay in, robot base frame, metres")
    g.add_argument("--lab-settings", default=None, metavar="INI",
                   help="settings file holding the lab settings (default: the user's app settings)")


def lab_config_from_args(args, robot: str | None = None):
    """The LabConfig for ``robot`` (default ``args.robot``): stored settings + command-line overrides.
    Raises ValueError with one line on a bad value."""
    from app.lab_settings import default_settings, load_lab_config

    settings = None
    if getattr(args, "lab_settings", None):
        from app.settings import Settings

        settings = Settings(args.lab_settings)
    elif not getattr(args, "no_stored_settings", False):
        settings = default_settings()
    return load_lab_config(robot or args.robot, settings, tcp_offset=getattr(args, "tcp_offset", None),
                           workspace=getattr(args, "workspace", None))
