"""SimXArm6: the Arm protocol for the simulated xArm6, commanded over RPC into the sim process.

No package speaks the xArm network protocol, so the simulated arm is driven behind the Arm protocol
directly; its servo semantics (streamed Cartesian targets interpolated over the command period)
mirror xArm's servo mode.
"""
from __future__ import annotations

import time

import numpy as np

from robots.base import ArmBase, ArmLimits, ArmState, DeviceError, GripperBase
from robots.lab_config import DEFAULT_TCP_OFFSET
from robots.safety import check_target, default_limits

SETTLE_TOL = 0.002  # m: a blocking move is done when the TCP is this close and the servo idle


def check_pose(target, limits: ArmLimits, who: str = "xArm6") -> np.ndarray:
    return check_target(target, limits.workspace, who)


class SimXArm6Gripper(GripperBase):
    """xArm gripper in sim: a force-limited position actuator on the drive joint."""

    def __init__(self, lab):
        self._lab = lab

    def width(self) -> float:
        return float(self._lab.call("arm_state")["gripper"])


    def command(self, opening: float) -> None:
        opening = float(opening)
        if not np.isfinite(opening):
            raise ValueError(f"gripper opening must be a number in 0..1, got {opening}")
        # Sent every time (a loopback RPC is cheap): a lab reset opens the gripper behind our back,
        # so a client-side "already commanded" cache would go stale.
        self._lab.call("gripper", float(np.clip(opening, 0.0, 1.0)))


class SimXArm6(ArmBase):
    name = "xarm6"
    dof = 6

    def __init__(self, lab, limits: ArmLimits | None = None):
        self._lab = lab
        self.limits = limits or default_limits("xarm6")
        self.gripper = SimXArm6Gripper(lab)
        self._connected = False
        # The TCP site of the model (robots/sim/world.py XARM_TCP_OFFSET): modelled fingers do not
        # move with a lab setting, so this is fixed.
        self.tcp_offset = DEFAULT_TCP_OFFSET["xarm6"]
        # Mirrors the real controller after emergency_stop(): stopped (state 4) until recovered.
        self._estopped = ""

    # -- lifecycle ----------------------------------------------------------------------------
    def connect(self) -> None:
        self._lab.call("ping")
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False


    # -- Arm protocol ---------------------------------------------------------------------------
    def state(self) -> ArmState:
        s = self._lab.call("arm_state")
        return ArmState(stamp=time.monotonic(), ee_pose=np.asarray(s["ee_pose"]), joint_pos=np.asarray(s["joint_pos"]),
                        gripper=float(s["gripper"]), moving=bool(s["moving"]),
                        error=self._estopped or str(s["error"]), sim_state=s.get("sim_state"))

    def sim_time(self) -> float:
        return float(self._lab.call("arm_state")["sim_time"])

    def servo(self, target: np.ndarray) -> None:
        self._require()
        self._lab.call("servo", check_pose(target, self.limits))

    def move_to(self, target: np.ndarray, timeout: float = 10.0) -> None:
        self._require()
        pose = check_pose(target, self.limits)
        self._lab.call("move_to", pose)
        self._wait_idle(timeout, "move_to", pose)

    def home(self, timeout: float = 15.0) -> None:
        self._require()
        self._lab.call("home")
        self._wait_idle(timeout, "home", None)

    def stop(self) -> None:
        self._lab.call("stop")

    def estop(self) -> None:
        self._estopped = "e-stopped on the controller (state 4); Recover to re-enable"
        self._lab.call("stop")

    def recover(self) -> None:
        # The simulated controller raises no reflexes; recovery re-enables it after an e-stop and
        # holding the current pose clears any motion.
        self._lab.call("stop")
        self._estopped = ""

    # -- internals ------------------------------------------------------------------------------
    def _require(self) -> None:
        if not self._connected:
            raise DeviceError("sim-xarm6 is not connected (call connect())")
        if self._estopped:
            raise DeviceError(f"sim-xarm6: {self._estopped}")

    def _wait_idle(self, timeout: float, what: str, pose: np.ndarray | None) -> None:
        """Block until the servo finished the move; in lock-step mode advance the sim ourselves."""
        deadline = time.monotonic() + timeout
        sim_deadline = None
        while True:
            if not self._lab.realtime:
                self._lab.advance(0.05)
            else:
                time.sleep(0.02)
            if self._estopped:  # estop() from another thread (the E-STOP button) ends the wait at once
                raise DeviceError(f"sim-xarm6 {what} stopped: {self._estopped}")
            s = self._lab.call("arm_state")
            close = pose is None or np.linalg.norm(np.asarray(s["ee_pose"])[:3] - pose[:3]) < SETTLE_TOL
            if not s["busy"] and close and not s["moving"]:
                return
            if not self._lab.realtime:
                sim_deadline = sim_deadline or s["sim_time"] + timeout
                if s["sim_time"] > sim_deadline:
                    break
            elif time.monotonic() > deadline:
                break
        self._lab.call("stop")
        raise DeviceError(f"sim-xarm6 {what} did not finish within {timeout:g} s")
