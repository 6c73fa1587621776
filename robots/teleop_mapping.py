"""Teleop input maths shared by the SpaceMouse and the keyboard: deadzone, axis map, scale, buttons.

Both devices first express the operator's intent in the **operator frame** (pyspacemouse's
``AxisConvention.HID_Z_UP``, right-handed): x to the operator's right, y away from the operator,
z up; roll about x, pitch about y, yaw about z (counter-clockwise seen from above positive).
``TeleopMapping.apply`` turns such a 6-vector into the normalised base-frame twist of
``TeleopState``: per-axis deadzone (device axes) → rotation into the robot base frame → per-axis
scale (base axes) → clip to [-1, 1].

Assumed operator position: standing behind the robot, facing the same way as the base +x axis
(both Franka and xArm bases: x forward, z up). Then pushing the puck away moves the end effector
away (+x), left moves it left (+y), up moves it up (+z), and twisting the puck counter-clockwise
yaws the tool counter-clockwise. An operator standing elsewhere sets ``operator_yaw_deg``: the
direction they face, measured counter-clockwise from base +x (180 = across the table, facing the
robot).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

AXES = ("x", "y", "z", "roll", "pitch", "yaw")

# Direction the operator faces (deg from base +x) for each robot's usual cell layout. Both vendors
# put base +x forward; a lab with a different stance overrides it per session.
ROBOT_OPERATOR_YAW_DEG = {"franka": 0.0, "xarm6": 0.0}

# Operator frame (x right, y away, z up) → base frame of an operator facing base +x:
# away = +x, right = -y, up = +z.
_OPERATOR_TO_FACING_X = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def apply_deadzone(values: np.ndarray, deadzone: np.ndarray) -> np.ndarray:
    """Zero inside ±deadzone, then rescale so the output rises continuously from 0 at the edge.

    ``sign(v) * max(|v| - dz, 0) / (1 - dz)``: no jump when the puck leaves the deadzone, and a
    full deflection (|v| = 1) still gives 1. Non-finite readings count as zero.
    """
    v = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    dz = np.asarray(deadzone, dtype=float)
    return np.sign(v) * np.maximum(np.abs(v) - dz, 0.0) / (1.0 - dz)


def operator_to_base(operator_yaw_deg: float = 0.0) -> np.ndarray:
    """6×6 map of an operator-frame twist into the base frame (same rotation for v and ω)."""
    R = Rotation.from_euler("z", operator_yaw_deg, degrees=True).as_matrix() @ _OPERATOR_TO_FACING_X
    # cos(90°) ≈ 6e-17 would leak a tiny twist into axes the operator is not touching, and the
    # control loop treats any non-zero twist as "moving".
    R[np.abs(R) < 1e-12] = 0.0
    M = np.zeros((6, 6))
    M[:3, :3] = M[3:, 3:] = R
    return M


def _six(name: str, value, lo: float, hi: float) -> tuple[float, ...]:
    arr = np.broadcast_to(np.asarray(value, dtype=float), (6,)) if np.ndim(value) == 0 else \
        np.asarray(value, dtype=float)
    if arr.shape != (6,) or not np.all(np.isfinite(arr)) or np.any(arr < lo) or np.any(arr >= hi):
        raise ValueError(f"teleop {name} needs 6 finite values in [{lo:g}, {hi:g}), got {value!r}")
    return tuple(float(a) for a in arr)


@dataclass
class TeleopMapping:
    """Per-axis deadzone (operator axes), axis map into the base frame, per-axis scale (base axes)."""

    deadzone: tuple[float, ...] = (0.1,) * 6
    scale: tuple[float, ...] = (1.0,) * 6
    axis_map: np.ndarray = field(default_factory=operator_to_base)

    def __post_init__(self):
        self.deadzone = _six("deadzone", self.deadzone, 0.0, 1.0)
        self.scale = _six("scale", self.scale, 0.0, math.inf)
        M = np.asarray(self.axis_map, dtype=float)
        if M.shape != (6, 6) or not np.all(np.isfinite(M)):
            raise ValueError(f"teleop axis_map must be a finite 6x6 matrix, got shape {M.shape}")
        self.axis_map = M

    @classmethod
    def for_robot(cls, robot: str, operator_yaw_deg: float | None = None, **kw) -> "TeleopMapping":
        if robot not in ROBOT_OPERATOR_YAW_DEG:
            raise ValueError(f"no teleop axis map for robot {robot!r}; known: "
                             f"{', '.join(ROBOT_OPERATOR_YAW_DEG)}")
        yaw = ROBOT_OPERATOR_YAW_DEG[robot] if operator_yaw_deg is None else float(operator_yaw_deg)
        return cls(axis_map=operator_to_base(yaw), **kw)

    def apply(self, operator_values: np.ndarray) -> np.ndarray:
        """Operator-frame reading (6,) → base-frame twist (6,) in [-1, 1]."""
        v = np.asarray(operator_values, dtype=float).reshape(6)
        twist = np.asarray(self.scale) * (self.axis_map @ apply_deadzone(v, self.deadzone))
        return np.clip(twist, -1.0, 1.0)


class Toggle:
    """Flips ``state`` on each press (rising edge); holding the button does nothing more."""

    def __init__(self, state: bool = False):
        self.state = state
        self._pressed = False

    def update(self, pressed: bool) -> bool:
        if pressed and not self._pressed:
            self.state = not self.state
        self._pressed = bool(pressed)
        return self.state


class PressEvents:
    """Counts presses (rising edges) so a reader sees each exactly once via ``take()``.

    The device side may see several reports between two reads of the control loop; counting
    instead of a flag means two quick presses still give two events (record stop, then start).
    """

    def __init__(self):
        self._pressed = False
        self._pending = 0

    def update(self, pressed: bool) -> None:
        if pressed and not self._pressed:
            self._pending += 1
        self._pressed = bool(pressed)

    def take(self) -> bool:
        if self._pending:
            self._pending -= 1
            return True
        return False
