"""SimLab: the app-side handle of the simulated lab running in its own process.

    with SimLab.start("xarm6", task="pick_cube", seed=3) as lab:
        arm, cam = lab.arm(), lab.camera()
        ...

The simulator process (``python -m robots.sim.process``) is a fresh interpreter started with
subprocess (no inherited threads, GL state or real-time scheduling class, and unlike multiprocessing
'spawn' it never re-imports the caller's ``__main__``). Requests travel over a socketpair wrapped in a
multiprocessing Connection, with a timeout on every call, so a dead or wedged simulator surfaces as ``DeviceDisconnected``
with a one-line message instead of a hang. Camera frames bypass the pipe: shared memory, created here
(the app owns and unlinks it, so a crashed simulator leaks nothing).
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from robots.base import Arm, Camera, DeviceDisconnected, DeviceError
from robots.sim.frames import FrameBuffer, FrameLayout
from robots.sim.tasks import TASKS, Waypoint, get_task
from robots.sim.variations import parse_variation
from robots.sim.world import HEIGHT, SCENE_CAMERA, WIDTH, WRIST_CAMERA

ROBOTS = ("franka", "xarm6")
FIRST_FRAME_TIMEOUT = 60.0  # s; see SimLab._wait_first_frames
START_TIMEOUT = 90.0  # s: first start compiles meshes and creates an EGL context on a busy 2-core box
CALL_TIMEOUT = 10.0
SIM_HOME_TIMEOUT = 45.0  # s of wall clock for the FR3's home move (see reset)


class SimRpc:
    """Request/response over a Pipe; thread-safe; every failure mode ends in DeviceDisconnected."""

    def __init__(self, conn, proc):
        self._conn = conn
        self._proc = proc
        self._lock = threading.Lock()
        self._broken = ""

    def call(self, op: str, *args, timeout: float = CALL_TIMEOUT):
        with self._lock:
            if self._broken:
                raise DeviceDisconnected(self._broken)
            try:
                self._conn.send((op, args))
                if not self._conn.poll(timeout):
                    # A late answer would be taken as the reply to the next request: retire the channel.
                    self._broken = f"simulated lab did not answer {op!r} within {timeout:g} s"
                    raise DeviceDisconnected(self._broken)
                status, value = self._conn.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as e:
                code = self._proc.exitcode if self._proc is not None else None
                self._broken = f"simulated lab process exited (exit code {code})" if code is not None else \
                    f"simulated lab connection lost ({type(e).__name__})"
                raise DeviceDisconnected(self._broken) from None
        if status != "ok":
            raise DeviceError(f"simulated lab: {value}")
        return value

    def close(self, reason: str = "simulated lab is closed") -> None:
        with self._lock:
            if not self._broken:
                try:
                    self._conn.send(("close", ()))
                    if self._conn.poll(5.0):
                        self._conn.recv()
                except (EOFError, OSError):
                    pass
            self._broken = reason
            try:
                self._conn.close()
            except OSError:
                pass


class SimLab:
    """Handle to one simulated lab (one robot, its cameras, the task objects)."""

    def __init__(self, robot: str, rpc: SimRpc, proc, buffers: dict[str, FrameBuffer], info: dict):
        self.robot = robot
        self._rpc = rpc
        self._proc = proc
        self._buffers = buffers
        self.info = info
        self.realtime: bool = bool(info["realtime"])
        self._arm: Arm | None = None
        self._cameras: dict[str, Camera] = {}
        self.task = ""
        self.seed = 0
        self.task_info: dict = {}
        self.variation = "none"  # scene variation of every reset (robots/sim/variations.py)
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, robot: str = "franka", *, wrist_camera: bool = False, render_hz: float = 15.0,
              task: str = "pick_cube", seed: int = 0, realtime: bool = True) -> "SimLab":
        """Spawn the simulator process and return once it serves requests and the task is reset.

        ``realtime=False`` runs the xArm6 in lock-step: the simulation advances only through
        ``advance(dt)`` (the expert's ``run_episode`` does this), so episodes run as fast as the CPU
        allows and are reproducible. The FR3 is always real time (franky speaks a real-time protocol).
        """
        if robot not in ROBOTS:
            raise ValueError(f"unknown sim robot {robot!r}; expected one of: {', '.join(ROBOTS)}")
        get_task(task)
        if not 0.5 <= float(render_hz) <= 60.0:
            raise ValueError(f"render_hz must be in 0.5..60, got {render_hz}")
        cams = [SCENE_CAMERA] + ([WRIST_CAMERA] if wrist_camera else [])
        layout = FrameLayout(WIDTH, HEIGHT)
        buffers = {c: FrameBuffer.create(layout) for c in cams}
        psock, csock = socket.socketpair()
        parent = Connection(psock.detach())
        fd = csock.fileno()
        env = dict(os.environ)
        env.setdefault("MUJOCO_GL", "egl")
        env["PYTHONPATH"] = os.pathsep.join([str(_REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        shm = ",".join(f"{c}={b.name}" for c, b in buffers.items())
        cmd = [sys.executable, "-m", "robots.sim.process", "--fd", str(fd), "--robot", robot,
               "--render-hz", str(float(render_hz)), "--shm", shm]
        cmd += ["--wrist"] if wrist_camera else []
        cmd += [] if realtime else ["--lockstep"]
        proc = None
        try:
            proc = _Proc(subprocess.Popen(cmd, pass_fds=(fd,), env=env, cwd=str(_REPO_ROOT)))
            csock.close()
            if not parent.poll(START_TIMEOUT):
                raise DeviceDisconnected(f"simulated lab ({robot}) did not start within {START_TIMEOUT:g} s")
            status, info = parent.recv()
            if status != "ok":
                raise DeviceError(str(info))
        except EOFError:
            _cleanup(proc, buffers)
            raise DeviceDisconnected(f"simulated lab ({robot}) process died during start (exit code {proc.exitcode})") from None
        except BaseException:
            csock.close()
            parent.close()
            _cleanup(proc, buffers)
            raise
        lab = cls(robot, SimRpc(parent, proc), proc, buffers, info)
        try:
            lab.reset(task, seed)
            lab._wait_first_frames(FIRST_FRAME_TIMEOUT)
        except BaseException:
            lab.close()
            raise
        return lab

    def _wait_first_frames(self, timeout: float) -> None:
        """Ready means every camera has published: the first render (GL context, shader compile,
        mesh upload at the render thread's low priority) can take seconds on a busy machine, and
        callers that then wait a frame-period for a frame must not time out on start-up cost."""
        deadline = time.monotonic() + timeout
        for name, buf in self._buffers.items():
            while buf.published == 0:
                if not self._proc.is_alive():
                    raise DeviceDisconnected(f"simulated lab ({self.robot}) died before its first frame")
                if time.monotonic() > deadline:
                    raise DeviceDisconnected(f"simulated lab ({self.robot}): camera {name} rendered no "
                                             f"frame within {timeout:g} s")
                time.sleep(0.01)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for cam in self._cameras.values():
            cam.stop()
        if self._arm is not None:
            try:
                self._arm.disconnect()
            except Exception:
                pass
        self._rpc.close()
        _cleanup(self._proc, self._buffers)

    def __enter__(self) -> "SimLab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return not self._closed and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    # ------------------------------------------------------------------ devices
    def arm(self) -> Arm:
        """The lab's arm (one instance per lab: franky allows one client per robot)."""
        if self._arm is None:
            if self.robot == "franka":
                from robots.sim.franka_arm import SimFrankaArm

                # 127.0.0.2 unless another sim-franka lab already serves it (see process.py).
                # tcp_offset None: the simulated hand keeps franky-sim's own TCP (the fingertips the
                # scripted tasks were written for); a lab setting cannot move modelled fingers.
                self._arm = SimFrankaArm(self, self.info["franka_host"], tcp_offset=None)
            else:
                from robots.sim.xarm_arm import SimXArm6

                self._arm = SimXArm6(self)
        return self._arm

    def camera(self, wrist: bool = False) -> Camera:
        from robots.sim.camera import SimCamera

        name = WRIST_CAMERA if wrist else SCENE_CAMERA
        if name not in self._buffers:
            raise DeviceError("the wrist camera was not enabled: start the lab with wrist_camera=True")
        if name not in self._cameras:
            self._cameras[name] = SimCamera(self, name, self._buffers[name], np.asarray(self.info["K"][name]))
        return self._cameras[name]

    # ------------------------------------------------------------------ tasks
    def reset(self, task: str, seed: int, variation: str | None = None) -> dict:
        """Randomise the task's objects from ``seed`` and bring the arm home; returns the task info.

        ``variation`` (robots/sim/variations.py) changes the seeded scene; None takes ``self.variation``,
        which a rollout sets once so every reset of its trials (from any caller) gets it."""
        get_task(task)
        variation = parse_variation(self.variation if variation is None else variation)
        if self.robot == "franka" and self._arm is not None and _connected(self._arm):
            # The FR3 is homed through its own client (franky-sim serves exactly one), before objects move.
            # The simulator may run at under half real time on a loaded box (franky-sim's 1 kHz loop in
            # Python), so a home move of a few simulated seconds gets a wall-clock allowance to match.
            try:
                self._arm.gripper.open()
                self._arm.home(timeout=SIM_HOME_TIMEOUT)
            except DeviceDisconnected:
                if not self.alive:
                    raise
                # franky drops its connection when franky-sim misses real time (overloaded box);
                # the server lives on and a fresh client works — one retry.
                from robots.sim.expert import ensure_connected

                ensure_connected(self._arm)
                self._arm.gripper.open()
                self._arm.home(timeout=SIM_HOME_TIMEOUT)
        self.task_info = self.call("reset", task, int(seed), variation)
        self.task, self.seed = task, int(seed)
        return self.task_info

    def object_poses(self) -> dict[str, np.ndarray]:
        return self.call("object_poses")

    def success(self) -> bool:
        return bool(self.call("success"))

    def oracle_waypoints(self) -> list[Waypoint]:
        return self.call("oracle_waypoints")

    @staticmethod
    def tasks() -> list[str]:
        return list(TASKS)

    def show_calibration_board(self, visible: bool = True, where: str = "gripper") -> None:
        """Draw a ChArUco calibration board in the camera images (robots/sim/world.py), or hide them:
        ``where`` "gripper" (the plate on the hand, eye-to-hand) or "table" (face up on a stand,
        eye-in-hand with the wrist camera). Frames rendered after this call show the change."""
        self.call("calibration_board", where if visible else "")

    def advance(self, dt: float) -> float:
        """Lock-step mode only: simulate ``dt`` seconds now; returns the sim time."""
        return float(self.call("advance", float(dt), timeout=CALL_TIMEOUT + 20 * float(dt)))

    def stats(self) -> dict:
        return self.call("stats")

    def call(self, op: str, *args, timeout: float = CALL_TIMEOUT):
        if self._closed:
            raise DeviceDisconnected("simulated lab is closed")
        return self._rpc.call(op, *args, timeout=timeout)


def _connected(arm) -> bool:
    try:
        arm.state()
        return True
    except Exception:
        return False


_REPO_ROOT = Path(__file__).resolve().parents[2]


class _Proc:
    """The few multiprocessing.Process-like calls SimLab needs, over subprocess.Popen."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def terminate(self) -> None:
        if self.is_alive():
            self.popen.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self.popen.kill()


def _cleanup(proc, buffers: dict[str, FrameBuffer]) -> None:
    if proc is not None:
        proc.join(timeout=5.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=3.0)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2.0)
    for b in buffers.values():
        b.close()
