"""Build devices from the URI-like strings — the one factory the CLI, GUI and tests use.

Arms:    sim-franka | sim-xarm6 | franka:<ip> | xarm6:<ip>
Cameras: sim | sim-wrist | realsense[:SERIAL] | bag:PATH(.bag|.db3) | none
Inputs:  spacemouse | keyboard | scripted | none

Each string parses into a typed, registered config (robots/device_config.py), which builds the device.
Simulated devices live in a separate simulator process (robots/sim/lab.py); the factory starts it on
demand and every sim device built from the same ``SimLab`` shares one world.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from robots.base import Arm, Camera, TeleopDevice
from robots.device_config import ArmConfig, CameraConfig, DeviceConfig, InputConfig, UriError

if TYPE_CHECKING:  # pragma: no cover
    from robots.sim.lab import SimLab

__all__ = ["ARM_KINDS", "CAMERA_KINDS", "INPUT_KINDS", "DeviceUri", "UriError", "parse_arm", "parse_camera",
           "parse_input", "sim_robot_of", "make_arm", "make_camera", "make_input"]

ARM_KINDS = ArmConfig.kinds()
CAMERA_KINDS = CameraConfig.kinds()
INPUT_KINDS = InputConfig.kinds()
DeviceUri = DeviceConfig  # what parse_* return: kind, arg, is_sim, str() → the URI


def parse_arm(text: str) -> ArmConfig:
    return ArmConfig.parse(text)


def parse_camera(text: str) -> CameraConfig:
    return CameraConfig.parse(text)


def parse_input(text: str) -> InputConfig:
    return InputConfig.parse(text)


def sim_robot_of(arm_uri: str) -> str | None:
    """'franka' / 'xarm6' for simulated arms, None for hardware."""
    cfg = parse_arm(arm_uri)
    return cfg.family if cfg.is_sim else None


def make_arm(text: str, lab: "SimLab | None" = None) -> Arm:
    return parse_arm(text).make(lab)


def make_camera(text: str, lab: "SimLab | None" = None) -> Camera | None:
    return parse_camera(text).make(lab)


def make_input(text: str, arm: Arm | None = None, lab: "SimLab | None" = None) -> TeleopDevice | None:
    return parse_input(text).make(arm, lab)
