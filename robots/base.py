"""Device protocols shared by the simulated lab and the hardware drivers.

Everything above ``robots/`` (teleop loop, recorder, rollouts, GUI) talks to devices only through
these protocols, so the same code path runs on the simulator, in tests and on real arms.

Conventions (DESIGN.md): SI units, poses in the robot base frame, position xyz in metres,
quaternions xyzw (scipy order), gripper opening normalised 0 = closed … 1 = open, timestamps in
seconds on ``time.monotonic()``.

End-effector pose = the TCP, i.e. the fingertip centre: ``ArmState.ee_pose`` and every target given
to ``servo``/``move_to`` are the flange pose composed with the arm's ``tcp_offset`` (flange → TCP,
the per-lab setting of robots/lab_config.py). The drivers make the controller use that frame
(xArm ``set_tcp_offset``, franky ``set_ee``; the simulated xArm's TCP site sits at the model's
fingertips), so the workspace box and the table floor of the safety filter bound the fingertips,
not the flange.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class DeviceError(RuntimeError):
    """A device failed in a way the operator must hear about (one-line message)."""


class DeviceDisconnected(DeviceError):
    """The device stopped answering (cable pulled, controller rebooted, sim process died)."""


# --------------------------------------------------------------------------------------------
# Data carried between devices and the rest of the app
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box in the base frame that the end effector must never leave (metres)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def contains(self, xyz: np.ndarray, tol: float = 1e-9) -> bool:
        p = np.asarray(xyz, dtype=float)
        return bool(np.all(p >= np.asarray(self.lo) - tol) and np.all(p <= np.asarray(self.hi) + tol))

    def clip(self, xyz: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(xyz, dtype=float), self.lo, self.hi)


@dataclass(frozen=True)
class ArmLimits:
    """Limits the safety filter enforces on every commanded target."""

    workspace: Workspace
    max_linear_speed: float = 0.25  # m/s
    max_angular_speed: float = 1.0  # rad/s
    # A target further than this from the current pose is treated as a jump (bad input), not clamped.
    max_jump: float = 0.10  # m
    max_jump_angle: float = 0.8  # rad


@dataclass
class ArmState:
    """Snapshot of the arm (and its gripper) at ``stamp``."""

    stamp: float  # time.monotonic() seconds
    ee_pose: np.ndarray  # (7,) xyz + quat xyzw in the base frame
    joint_pos: np.ndarray  # (DoF,) rad
    gripper: float  # normalised opening 0 closed … 1 open
    moving: bool = False
    # Controller fault that stops motion until ``Arm.recover()`` ("" if none): a reflex, an xArm error
    # code, the controller's own e-stop. The control loop latches it (app/teleop.py); warnings that do
    # not stop the arm go to ``warning``.
    error: str = ""
    warning: str = ""
    # Simulated arms only: the whole simulator state at this snapshot (qpos of arm and objects,
    # mocap poses), recorded so each tick's camera image can be re-rendered offline.
    sim_state: dict | None = None


@dataclass
class RGBDFrame:
    """One aligned RGB-D frame from a camera."""

    stamp: float  # time.monotonic() seconds at capture (hardware stamp mapped to host clock)
    index: int  # frame counter from the device; gaps mean dropped frames
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) uint16, metres = depth * depth_scale, aligned to rgb
    depth_scale: float  # metres per depth unit
    K: np.ndarray  # (3, 3) colour intrinsics
    T_base_camera: np.ndarray  # (4, 4) camera frame (OpenCV: x right, y down, z forward) in base
    hw_stamp: float | None = None  # device clock, seconds, when the device provides one


@dataclass
class TeleopState:
    """One reading of a teleoperation device, already mapped to the robot base frame."""

    stamp: float
    twist: np.ndarray  # (6,) normalised [-1, 1]: vx vy vz wx wy wz in the base frame
    buttons: dict[str, bool] = field(default_factory=dict)  # e.g. {"gripper": True, "record": False}
    connected: bool = True


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------


class GripperBase:
    """What every gripper driver shares: open/close are commands to the normalised opening."""

    def command(self, opening: float) -> None:
        raise NotImplementedError

    def open(self) -> None:
        self.command(1.0)

    def close(self) -> None:
        self.command(0.0)


class ArmBase:
    """What every arm driver shares: ``with arm:`` connects and always disconnects."""

    def connect(self) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()


@runtime_checkable
class Gripper(Protocol):
    def width(self) -> float:
        """Normalised opening 0 … 1."""

    def open(self) -> None: ...

    def close(self) -> None:
        """Close to grasp (force-limited); non-blocking."""

    def command(self, opening: float) -> None:
        """Normalised target opening; drivers decide grasp vs move. Non-blocking."""


@runtime_checkable
class Arm(Protocol):
    name: str
    dof: int
    limits: ArmLimits
    gripper: Gripper

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def state(self) -> ArmState:
        """Latest state; raises DeviceDisconnected if the arm stopped answering."""

    def servo(self, target: np.ndarray) -> None:
        """Stream one Cartesian target (7,) for the current control tick. Non-blocking.

        Callers pass targets already checked by the safety filter; drivers still refuse targets
        outside ``limits.workspace`` as a last line of defence.
        """

    def move_to(self, target: np.ndarray, timeout: float = 10.0) -> None:
        """Blocking point-to-point move to a pose (7,) at a safe speed."""

    def stop(self) -> None:
        """Stop motion now (hold position)."""

    def estop(self) -> None:
        """Emergency stop on the controller (xArm ``emergency_stop``, franky ``Robot.stop``), not only
        the stream: the arm reports ``ArmState.error`` until ``recover()``."""

    def recover(self) -> None:
        """Clear a controller error / reflex / e-stop so motion can resume (blocking, seconds)."""

    def home(self) -> None:
        """Blocking move to the home configuration."""


@runtime_checkable
class Camera(Protocol):
    name: str
    width: int
    height: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def latest(self) -> RGBDFrame | None:
        """Newest frame (non-blocking), or None before the first one."""

    def wait_frame(self, timeout: float = 1.0) -> RGBDFrame:
        """Block until a frame newer than the last returned one arrives."""

    @property
    def dropped_frames(self) -> int:
        """Frames the device produced that this process never saw."""


@runtime_checkable
class TeleopDevice(Protocol):
    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self) -> TeleopState:
        """Latest state (non-blocking). ``connected`` False once the device is lost."""

    @property
    def connected(self) -> bool: ...
