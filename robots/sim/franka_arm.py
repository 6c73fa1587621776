"""The simulated FR3: the real franky client (robots/franka.py) plus the simulator state of each reading.

franky reports what a physical FR3 reports (pose, joints, gripper); the offline re-renderer
(robots/sim/rerender.py) also needs the whole MuJoCo state — the cubes, the button, the fingers — to
rebuild each tick's camera image, because the live sim camera on a loaded box repeats images. The xArm6
sim returns it with its arm state; here it is one extra lab request right after franky's reading
(a few ms apart at most: the FR3 moves < 1 mm in that time at the lab's speed limits).
"""
from __future__ import annotations

from robots.base import ArmState, DeviceError
from robots.franka import FrankaArm


class SimFrankaArm(FrankaArm):
    def __init__(self, lab, host: str, **kwargs):
        super().__init__(host, **kwargs)
        self._lab = lab

    def state(self) -> ArmState:
        s = super().state()
        try:
            s.sim_state = self._lab.call("sim_state")
        except DeviceError:
            s.sim_state = None  # the lab is going away; franky's reading still stands
        return s
