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
