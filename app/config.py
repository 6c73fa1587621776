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


DEVICE_DEFAULTS = {"robot": DEFAULT_ROBOT, "camera": DEFAULT_CAMERA, "input": DEFAULT_INPUT, "rate": DEFAULT_RATE_HZ}
DEVICE_ARGS = ("robot", "camera", "input", "rate")


def _simulated(config_cls) -> bool:
    return config_cls.kind.startswith("sim") or config_cls.kind == "none"


def add_device_args(parser: argparse.ArgumentParser, *, devices: tuple[str, ...] = DEVICE_ARGS,
                    defaults: dict | None = None, default_input: str | None = None, remembered: bool = False,
                    required: tuple[str, ...] = (), sim_only: bool = False, notes: dict | None = None) -> None:
    """``--robot --camera --input --rate`` for a command, the help generated from the device registry
    (robots/device_config.py), so every command lists the same URIs.

    ``devices``: which of them the command takes. ``defaults`` / ``default_input`` override
    ``DEVICE_DEFAULTS``. ``remembered``: the defaults are None (the GUI falls back to the last used
    devices; help names the first-run value). ``required``: options without a default. ``sim_only``:
    help lists only the simulated kinds (and ``none``). ``notes``: extra help text per option."""
    from robots.device_config import ArmConfig, CameraConfig, InputConfig

    unknown = set(devices) - set(DEVICE_ARGS)
    if unknown:
        raise ValueError(f"unknown device options {sorted(unknown)}; expected some of {DEVICE_ARGS}")
    values = {**DEVICE_DEFAULTS, **(defaults or {})}
    if default_input is not None:
        values["input"] = default_input
    notes = notes or {}
    only = _simulated if sim_only else None
    usage = {"robot": ArmConfig.usage(only), "camera": CameraConfig.usage(only), "input": InputConfig.usage(only),
             "rate": f"control rate in Hz, up to {MAX_RATE_HZ:g}"}
    g = parser.add_argument_group("devices (URIs: docs/ARCHITECTURE.md)")
    for name in devices:
        if name in required:
            default, when = None, "required"
        elif remembered:
            default, when = None, f"default: last used, first run {values[name]}"
        else:
            default, when = values[name], "default %(default)s"
        text = f"{usage[name]} ({when})" + (f" {notes[name]}" if name in notes else "")
        kwargs = {"type": float} if name == "rate" else {}
        g.add_argument(f"--{name}", default=default, required=name in required, help=text, **kwargs)


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
