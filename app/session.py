"""DeviceSession: the arm, camera and input named by URIs, opened together and closed cleanly.

The CLI, the GUI and tests all build devices here (through robots/factory.py), so "sim-xarm6 + sim
camera + scripted input" means the same objects everywhere. A simulated lab process is started only
when some device lives in it, and everything opened is closed again in reverse order, also when a
later device fails to open (a half-open session would leave a sim process or a robot connection behind).
"""
from __future__ import annotations

import logging

from app.teleop import ControlLoop
from recorder.messages import one_line
from robots.base import Arm, Camera, DeviceError, TeleopDevice
from robots.factory import (UriError, make_arm, make_camera, make_input, parse_arm, parse_camera,
                            parse_input, sim_robot_of)
from robots.lab_config import LabConfig, outside_message
from robots.safety import validate_rate

log = logging.getLogger(__name__)


class DeviceSession:
    def __init__(self, robot: str = "sim-franka", camera: str = "sim", input: str = "keyboard",
                 rate_hz: float = 20.0, *, task: str = "pick_cube", seed: int = 0, realtime: bool = True,
                 render_hz: float = 15.0, lab: LabConfig | None = None):
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
        # Per-lab TCP offset + workspace (robots/lab_config.py); the robot family's defaults if None.
        try:
            self.lab_config = lab or LabConfig.default(self.robot_uri.kind)
            if self.lab_config.robot != LabConfig.default(self.robot_uri.kind).robot:
                raise ValueError(f"lab settings are for {self.lab_config.robot}, not {robot!r}")
        except ValueError as exc:
            raise DeviceError(str(exc)) from None
        self.warnings: list[str] = []  # one-line notes for the operator found while opening
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
                raise DeviceError(f"opening {self!r} failed: {one_line(exc, first_line=True)}") from exc
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
        self._configure_arm(self.arm)
        self.arm.connect()
        self._opened.append((f"robot {self.robot_uri}", self.arm.disconnect))
        self._check_start_pose()
        self.camera = make_camera(str(self.camera_uri), self.lab)
        if self.camera is not None:
            self.camera.start()
            self._opened.append((f"camera {self.camera_uri}", self.camera.stop))
        self.input = make_input(str(self.input_uri), self.arm, self.lab)
        if self.input is not None:
            self.input.open()
            self._opened.append((f"input {self.input_uri}", self.input.close))

    def _configure_arm(self, arm: Arm) -> None:
        """Lab workspace on every arm; the TCP offset on hardware (the driver writes it to the
        controller at connect). Simulated fingers are modelled, so there the setting is only checked."""
        cfg = self.lab_config
        arm.limits = cfg.limits(arm.limits)
        if self.sim_robot is None:
            arm.tcp_offset = cfg.tcp_offset
            return
        own = getattr(arm, "tcp_offset", None) or LabConfig.default(cfg.robot).tcp_offset
        if any(abs(a - b) > 1e-6 for a, b in zip(own, cfg.tcp_offset)):
            self.warnings.append(f"{self.robot_uri}: the simulated gripper's TCP is fixed at "
                                 f"{list(own)} m; the lab TCP offset {list(cfg.tcp_offset)} applies to hardware only")

    def _check_start_pose(self) -> None:
        """Connect-time check: a TCP outside the lab workspace is reported here (the control loop then
        latches ``outside_workspace`` and commands nothing until Home or Recover)."""
        try:
            pose = self.arm.state().ee_pose
        except DeviceError as exc:
            self.warnings.append(f"robot {self.robot_uri}: cannot read the pose at connect ({one_line(exc, first_line=True)})")
            return
        msg = outside_message(pose, self.lab_config.workspace, f"robot {self.robot_uri}")
        if msg:
            self.warnings.append(msg)
        for w in self.warnings:
            log.info("%s", w)  # the CLI prints them, the GUI shows them in the status bar

    def close(self) -> None:
        """Close everything opened so far, newest first; never raises (failures are logged)."""
        while self._opened:
            what, close = self._opened.pop()
            try:
                close()
            except Exception as exc:
                log.warning("closing %s failed: %s", what, one_line(exc, first_line=True))
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
