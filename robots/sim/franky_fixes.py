"""Fixes to franky-sim behaviour where it differs from the real libfranka protocol.

Installed by every process that hosts a franky-sim server (robots/sim/process.py, franky_server.py).

* **A stopped gripper command gets its answer.** libfranka answers a Move/Grasp that a Stop
  preempts (status kAborted), so the client's blocking ``Gripper.move``/``grasp`` returns. franky-sim
  1.0.4 (pinned in pyproject.toml; recheck on an upgrade) drops the pending command without a word:
  the client blocks for good, and our FrankaGripper's worker with it — every later command queued behind it was never executed (a close sent while the
  reset's open was still moving left the fingers half open: sim-franka press_button 0/5 demos).
"""
from __future__ import annotations

_INSTALLED = False


def install() -> None:
    """Patch franky-sim's gripper server (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from franky_sim.franka_gripper_protocol import BaseCommand, GripperCommandStatus
    from franky_sim.franka_gripper_server import FrankaGripperServer

    original_stop = FrankaGripperServer.stop

    def stop(self, command_id, tcp_socket):
        pending = (self._pending_command_type, self._pending_command_id, self._pending_tcp_socket)
        if pending[1] is not None and pending[2] is not None:
            try:
                BaseCommand.send_response(pending[2], pending[0], pending[1], GripperCommandStatus.kAborted,
                                          command_type_struct="H", status_type_struct="H")
            except OSError:  # the client went away; the stop itself still applies
                pass
        original_stop(self, command_id, tcp_socket)

    FrankaGripperServer.stop = stop
    _INSTALLED = True
