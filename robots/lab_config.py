"""Per-lab robot settings: the TCP offset (flange → fingertip centre) and the workspace box.

Both depend on the bench, not on the robot model: which gripper and fingers are mounted, where the
table and the fixtures stand. The GUI stores them per robot family (app/settings.py keys
``lab/<family>/tcp_offset`` and ``lab/<family>/workspace``), the CLI takes them as
``--tcp-offset X,Y,Z --workspace X0,Y0,Z0,X1,Y1,Z1`` (metres, robot base frame).

A lab box must lie inside the robot's default box (robots/safety.py), which bounds the reachable
table area, and its floor must stay above the table (z ≥ 0): a typo can narrow the workspace but
never widen it past what the safety filter was designed for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from robots.base import ArmLimits, Workspace
from robots.safety import default_limits

# Flange → TCP along the tool axis (metres) for the grippers the lab ships with:
#   Franka Hand: 0.1034 m (franky/libfranka's default F_T_NE, the fingertip centre);
#   xArm Gripper: 0.172 m (UFactory's TCP for it; robots/sim/world.py XARM_TCP_OFFSET).
DEFAULT_TCP_OFFSET = {"franka": (0.0, 0.0, 0.1034), "xarm6": (0.0, 0.0, 0.172)}
MAX_TCP_OFFSET = 0.40  # m; longer tools are not something this app was checked with
# A measured TCP this far outside the box is a fault, not something to walk back automatically
# (servo overshoot at the box faces is millimetres; more means the arm was moved or the box changed).
OUTSIDE_TOLERANCE = 0.01  # m


def family(robot: str) -> str:
    """'franka' | 'xarm6' for an arm URI or name (sim-franka, franka:172.16.0.2, xarm6, …)."""
    key = robot.strip().removeprefix("sim-").partition(":")[0]
    if key not in DEFAULT_TCP_OFFSET:
        raise ValueError(f"unknown robot family {robot!r}; expected franka or xarm6")
    return key


def _floats(text, n: int, what: str, example: str) -> tuple[float, ...]:
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", ",").split(",") if p]
    else:
        parts = list(text)
    try:
        vals = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be {n} numbers in metres, e.g. {example} (got {text!r})") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{what} must be {n} finite numbers in metres, e.g. {example} (got {text!r})")
    return vals


def parse_tcp_offset(text) -> tuple[float, float, float]:
    """'0,0,0.1034' (or a sequence) → (x, y, z) in the flange frame; ValueError with one line."""
    xyz = _floats(text, 3, "TCP offset", "0,0,0.1034")
    if float(np.linalg.norm(xyz)) > MAX_TCP_OFFSET:
        raise ValueError(f"TCP offset {list(xyz)} is {np.linalg.norm(xyz):.3f} m from the flange; "
                         f"at most {MAX_TCP_OFFSET} m is accepted")
    return xyz  # type: ignore[return-value]


def parse_workspace(text, robot: str) -> Workspace:
    """'x0,y0,z0,x1,y1,z1' (or a sequence) → a Workspace checked against the robot's default box."""
    v = _floats(text, 6, "workspace", "0.2,-0.45,0.005,0.8,0.45,0.7")
    ws = Workspace(lo=v[:3], hi=v[3:])
    check_workspace(ws, robot)
    return ws


def check_workspace(ws: Workspace, robot: str) -> None:
    lo, hi = np.asarray(ws.lo, float), np.asarray(ws.hi, float)
    if not np.all(lo < hi):
        raise ValueError(f"workspace lower corner {list(ws.lo)} must be below its upper corner {list(ws.hi)} "
                         "on every axis")
    if lo[2] < 0.0:
        raise ValueError(f"workspace floor z = {lo[2]:g} m is below the table (z = 0)")
    reach = default_limits(robot).workspace
    if not (reach.contains(lo, tol=1e-9) and reach.contains(hi, tol=1e-9)):
        raise ValueError(f"workspace {list(ws.lo)}..{list(ws.hi)} leaves the {family(robot)} reach box "
                         f"{list(reach.lo)}..{list(reach.hi)}")


@dataclass(frozen=True)
class LabConfig:
    """The bench's TCP offset and workspace for one robot family."""

    robot: str  # family: franka | xarm6
    tcp_offset: tuple[float, float, float]
    workspace: Workspace

    @classmethod
    def default(cls, robot: str) -> "LabConfig":
        fam = family(robot)
        return cls(fam, DEFAULT_TCP_OFFSET[fam], default_limits(fam).workspace)

    @classmethod
    def from_values(cls, robot: str, tcp_offset=None, workspace=None) -> "LabConfig":
        """Defaults for what is None; raises ValueError (one line) on a bad value."""
        base = cls.default(robot)
        tcp = base.tcp_offset if tcp_offset is None else parse_tcp_offset(tcp_offset)
        ws = base.workspace if workspace is None else parse_workspace(workspace, base.robot)
        return cls(base.robot, tcp, ws)

    def limits(self, base: ArmLimits | None = None) -> ArmLimits:
        return replace(base or default_limits(self.robot), workspace=self.workspace)

    def describe(self) -> str:
        t = ",".join(f"{v:g}" for v in self.tcp_offset)
        w = ",".join(f"{v:g}" for v in (*self.workspace.lo, *self.workspace.hi))
        return f"{self.robot}: --tcp-offset {t} --workspace {w}"


def outside_message(xyz, ws: Workspace, who: str) -> str:
    """'' when the TCP ``xyz`` is inside ``ws``, else the one-line refusal shown at connect."""
    p = np.asarray(xyz, dtype=float)[:3]
    if ws.contains(p, tol=OUTSIDE_TOLERANCE):
        return ""
    return (f"{who}: TCP at {np.round(p, 3).tolist()} is outside the lab workspace "
            f"{list(ws.lo)}..{list(ws.hi)}; Home it, move it inside by hand or widen the workspace")
