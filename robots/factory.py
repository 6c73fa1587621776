"""Build devices from the URI-like strings in DESIGN.md — the one factory the CLI, GUI and tests use.

Arms:    sim-franka | sim-xarm6 | franka:<ip> | xarm6:<ip>
Cameras: sim | sim-wrist | realsense[:SERIAL] | bag:PATH(.bag|.db3) | none
Inputs:  spacemouse | keyboard | scripted | none

Simulated devices live in a separate simulator process (robots/sim/lab.py); the factory starts it on
demand and every sim device built from the same ``SimLab`` shares one world.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from robots.base import Arm, Camera, TeleopDevice

if TYPE_CHECKING:  # pragma: no cover
    from robots.sim.lab import SimLab

ARM_KINDS = ("sim-franka", "sim-xarm6", "franka", "xarm6")
CAMERA_KINDS = ("sim", "sim-wrist", "realsense", "bag", "none")
INPUT_KINDS = ("spacemouse", "keyboard", "scripted", "none")


class UriError(ValueError):
    """A device string that names no known device; the message says what is accepted."""


@dataclass(frozen=True)
class DeviceUri:
    kind: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

    @property
    def is_sim(self) -> bool:
        return self.kind.startswith("sim")


def parse_uri(text: str, allowed: tuple[str, ...], what: str) -> DeviceUri:
    text = (text or "").strip()
    kind, _, arg = text.partition(":")
    if kind not in allowed:
        raise UriError(f"unknown {what} {text!r}; expected one of: {', '.join(allowed)}")
    needs_arg = {"franka", "xarm6", "bag"}
    if kind in needs_arg and not arg:
        raise UriError(f"{what} {kind!r} needs an argument, e.g. {kind}:{_example(kind)}")
    if kind.startswith("sim") and arg:
        raise UriError(f"{what} {kind!r} takes no argument (got {arg!r})")
    return DeviceUri(kind, arg)


def _example(kind: str) -> str:
    return {"franka": "172.16.0.2", "xarm6": "192.168.1.208", "bag": "recording.bag"}[kind]


def parse_arm(text: str) -> DeviceUri:
    return parse_uri(text, ARM_KINDS, "robot")


def parse_camera(text: str) -> DeviceUri:
    return parse_uri(text, CAMERA_KINDS, "camera")


def parse_input(text: str) -> DeviceUri:
    return parse_uri(text, INPUT_KINDS, "input")


def sim_robot_of(arm_uri: str) -> str | None:
    """'franka' / 'xarm6' for simulated arms, None for hardware."""
    uri = parse_arm(arm_uri)
    return uri.kind.removeprefix("sim-") if uri.is_sim else None


def make_arm(text: str, lab: "SimLab | None" = None) -> Arm:
    uri = parse_arm(text)
    if uri.kind == "franka":
        from robots.franka import FrankaArm

        return FrankaArm(uri.arg)
    if uri.kind == "xarm6":
        from robots.xarm6 import XArm6

        return XArm6(uri.arg)
    if lab is None:
        raise UriError(f"robot {text!r} needs the simulated lab; start it with robots.sim.lab.SimLab")
    if lab.robot != uri.kind.removeprefix("sim-"):
        raise UriError(f"the running simulated lab hosts {lab.robot!r}, not {uri.kind!r}")
    return lab.arm()


def make_camera(text: str, lab: "SimLab | None" = None) -> Camera | None:
    uri = parse_camera(text)
    if uri.kind == "none":
        return None
    if uri.kind == "realsense":
        from robots.realsense import RealSenseCamera

        return RealSenseCamera(serial=uri.arg or None)
    if uri.kind == "bag":
        from robots.realsense import RealSenseCamera

        return RealSenseCamera(playback=uri.arg)
    if lab is None:
        raise UriError(f"camera {text!r} needs the simulated lab")
    return lab.camera(wrist=uri.kind == "sim-wrist")


def make_input(text: str, arm: Arm | None = None, lab: "SimLab | None" = None) -> TeleopDevice | None:
    uri = parse_input(text)
    if uri.kind == "none":
        return None
    if uri.kind == "spacemouse":
        from robots.spacemouse import SpaceMouse

        return SpaceMouse(robot=_robot_family(arm))
    if uri.kind == "keyboard":
        from robots.keyboard import KeyboardTeleop

        return KeyboardTeleop()
    # "scripted": the sim task's expert acting as an operator (twists + buttons), for demos and tests.
    if lab is None or arm is None:
        raise UriError("input 'scripted' needs the simulated lab and its arm")
    from robots.sim.expert import ScriptedOperator

    return ScriptedOperator(lab, arm)


def _robot_family(arm: Arm | None) -> str:
    name = getattr(arm, "name", "") or ""
    return "xarm6" if "xarm" in name else "franka"
