"""DeviceSession: the arm, camera and input named by URIs, opened together and closed cleanly.

The CLI, the GUI and tests all build devices here (through robots/factory.py), so "sim-xarm6 + sim
camera + scripted input" means the same objects everywhere. A simulated lab process is started only
when some device lives in it, and everything opened is closed again in reverse order, also when a
later device fails to open (a half-open session would leave a sim process or a robot connection behind).
"""
from __future__ import annotations

import logging

from app.teleop import ControlLoop
from robots.base import Arm, Camera, DeviceError, TeleopDevice
from robots.factory import (UriError, make_arm, make_camera, make_input, parse_arm, parse_camera,
                            parse_input, sim_robot_of)
from robots.safety import validate_rate

log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class DeviceSession:
    def __init__(self, robot: str = "sim-franka", camera: str = "sim", input: str = "keyboard",
                 rate_hz: float = 20.0, *, task: str = "pick_cube", seed: int = 0, realtime: bool = True,
                 render_hz: float = 15.0):
        try:
            self.robot_uri = parse_arm(robot)
            self.camera_uri = parse_camera(camera)
            self.input_uri = parse_input(input)
            self.rate_hz = validate_rate(rate_hz)
        except (UriError, ValueError) as exc:
            raise DeviceError(str(exc)) from None
        self.sim_robot = sim_robot_of(robot)
        needs_lab = self.camera_uri.is_sim or self.input_uri.kind == "scripted"
        if needs_lab and self.sim_robot is None:
            what = f"camera {camera!r}" if self.camera_uri.is_sim else f"input {input!r}"
            raise DeviceError(f"{what} needs a simulated robot (sim-franka or sim-xarm6), not {robot!r}")
        self.task, self.seed = task, int(seed)
        self.realtime, self.render_hz = realtime, float(render_hz)
        self.lab = None
        self.arm: Arm | None = None
        self.camera: Camera | None = None
        self.input: TeleopDevice | None = None
        self._opened: list[tuple[str, object]] = []  # (what, close callable) in opening order

    def __repr__(self) -> str:
        return (f"DeviceSession(robot={str(self.robot_uri)!r}, camera={str(self.camera_uri)!r}, "
                f"input={str(self.input_uri)!r}, rate_hz={self.rate_hz:g})")

    def open(self) -> "DeviceSession":
        try:
            self._open()
        except BaseException as exc:
            self.close()
            if isinstance(exc, DeviceError):
                raise
            if isinstance(exc, Exception):
                raise DeviceError(f"opening {self!r} failed: {_one_line(exc)}") from exc
            raise
        return self

    def _open(self) -> None:
        if self.sim_robot is not None:
            from robots.sim.lab import SimLab

            self.lab = SimLab.start(self.sim_robot, wrist_camera=self.camera_uri.kind == "sim-wrist",
                                    render_hz=self.render_hz, task=self.task, seed=self.seed,
                                    realtime=self.realtime)
            self._opened.append(("simulated lab", self.lab.close))
        self.arm = make_arm(str(self.robot_uri), self.lab)
        self.arm.connect()
        self._opened.append((f"robot {self.robot_uri}", self.arm.disconnect))
        self.camera = make_camera(str(self.camera_uri), self.lab)
        if self.camera is not None:
            self.camera.start()
            self._opened.append((f"camera {self.camera_uri}", self.camera.stop))
        self.input = make_input(str(self.input_uri), self.arm, self.lab)
        if self.input is not None:
            self.input.open()
            self._opened.append((f"input {self.input_uri}", self.input.close))

    def close(self) -> None:
        """Close everything opened so far, newest first; never raises (failures are logged)."""
        while self._opened:
            what, close = self._opened.pop()
            try:
                close()
            except Exception as exc:
                log.warning("closing %s failed: %s", what, _one_line(exc))
        self.lab = self.arm = self.camera = self.input = None

    def control_loop(self, source=None, **kwargs) -> ControlLoop:
        """A ControlLoop on this session's arm and camera, driven by ``source`` or the input device."""
        if self.arm is None:
            raise DeviceError("session is not open")
        src = source if source is not None else self.input
        if src is None:
            raise DeviceError(f"no input device (input {str(self.input_uri)!r}) and no target source given")
        return ControlLoop(self.arm, src, self.camera, rate_hz=self.rate_hz, **kwargs)

    def __enter__(self) -> "DeviceSession":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
