"""A bare franky-sim FR3 server in its own process, for driver tests and benches.

    python -m robots.sim.franky_server --host 127.0.0.2 [--cube] [--report-hz 20]

The full simulated lab (robots/sim/lab.py) hosts its own server with the lab world; this helper only
gives tests a real libfranka endpoint (arm on TCP 1337, gripper on 1338) without the rest of the lab.
It must run in a separate process: franky-sim's 1 kHz loop is pure Python and a busy thread beside it
drops the loop rate to tens of Hz (DESIGN.md, facts measured).

Stdout protocol, one JSON object per line, so a parent can watch the sim without a second client
(a second libfranka client would hang):
    {"event": "ready", "host": ...}                           once the ports are bound
    {"event": "stats", "t": s, "loop_hz": f, "steps": n, "ee_speed_max": m/s, "ee_speed_min": m/s,
     "cube": [x, y, z] | null}                               every 1 / report_hz seconds
``ee_speed_min``/``max`` are over the 1 kHz sim steps since the previous report, measured at the
hand body, so a parent can tell whether motion stalled between control ticks.

Fault injection (tests): franky-sim itself never raises a reflex ("Error state is not simulated"), so
a line ``reflex`` on the server's stdin (``ServerProcess.inject_reflex()``) makes it behave as the
FR3 controller does after a Cartesian reflex: the running motion is aborted with libfranka's
``kReflexAborted`` Move status, the state reports robot mode Reflex with ``cartesian_reflex`` in
``current_errors`` / ``last_motion_errors``, new Move commands are rejected, and only libfranka's
automatic error recovery (franky ``recover_from_errors``) clears it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np

CUBE_SIZE = 0.04  # m, edge length of the test cube (fits the 0.08 m Franka hand)
CUBE_POS = (0.45, 0.0, CUBE_SIZE / 2)
HAND_BODY = "robot0_hand"  # franky-sim prefixes robot i's bodies with "robot{i}_"


def add_cube(worldbody: ET.Element, pos=CUBE_POS, size: float = CUBE_SIZE) -> None:
    half = size / 2
    body = ET.SubElement(worldbody, "body", name="cube", pos=" ".join(map(str, pos)))
    ET.SubElement(body, "freejoint", name="cube_joint")
    # Friction high enough that a force-limited grasp holds it against gravity.
    ET.SubElement(body, "geom", name="cube_geom", type="box", size=f"{half} {half} {half}",
                  mass="0.05", friction="1.5 0.01 0.001", rgba="0.85 0.2 0.2 1")


class _Monitor:
    """Post-step callback: sim-step counts and hand speed between reports, on the sim thread."""

    def __init__(self, sim, want_cube: bool):
        import mujoco

        self._sim = sim
        self._lock = threading.Lock()
        self.steps = 0
        self._hand = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, HAND_BODY)
        self._cube = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, "cube") if want_cube else -1
        if self._hand < 0 or (want_cube and self._cube < 0):
            raise RuntimeError(f"franky-sim model has no body {HAND_BODY!r} (or no cube); names changed?")
        self._prev = None
        self._vmin = np.inf
        self._vmax = 0.0

    def __call__(self, sim) -> None:
        p = sim.data.xpos[self._hand].copy()
        with self._lock:
            self.steps += 1
            if self._prev is not None:
                v = float(np.linalg.norm(p - self._prev)) / sim.model.opt.timestep
                self._vmin = min(self._vmin, v)
                self._vmax = max(self._vmax, v)
            self._prev = p

    def snapshot(self) -> dict:
        with self._lock:
            out = {"steps": self.steps,
                   "ee_speed_min": None if not np.isfinite(self._vmin) else round(self._vmin, 5),
                   "ee_speed_max": round(self._vmax, 5)}
            self._vmin, self._vmax = np.inf, 0.0
        out["cube"] = (None if self._cube < 0
                       else [round(float(x), 5) for x in self._sim.data.xpos[self._cube]])
        return out


CARTESIAN_REFLEX = 7  # index of cartesian_reflex in libfranka's 41-entry Errors array


class _ReflexInjector:
    """Makes franky-sim's robot server report a reflex until automatic error recovery (see docstring).

    ``request()`` may come from any thread; the abort itself runs on the sim thread (post-step), where
    the server sends its own Move responses."""

    def __init__(self, robot_server):
        from franky_sim.franka_robot_protocol import AutomaticErrorRecoveryCommand, MoveCommand, MoveStatus

        self._rs = robot_server
        self.pending = False
        self.active = False
        self._errors = tuple(i == CARTESIAN_REFLEX for i in range(41))
        injector = self
        plain_state = robot_server._get_state_bytes

        def state_bytes():
            if not injector.active:
                return plain_state()
            from franky_sim.franka_robot_protocol import RobotMode

            # On the wire libfranka reads current_errors from ``errors`` and last_motion_errors from
            # ``reflex_reason``; the other two fields are set as well for readers of the dataclass.
            e = injector._errors
            st = injector._rs.robot_state.replace(robot_mode=RobotMode.kReflex, errors=e, reflex_reason=e,
                                                  current_errors=e, last_motion_errors=e)
            return st.pack_state()

        robot_server._get_state_bytes = state_bytes  # instance attribute wins over the class method
        move_handle, recovery_handle = MoveCommand.handle, AutomaticErrorRecoveryCommand.handle

        def move(cmd, server):
            if injector.active:  # the real controller refuses motions until the reflex is recovered
                cmd.reply(MoveStatus.kCommandNotPossibleRejected)
                return
            move_handle(cmd, server)

        def recover(cmd, server):
            injector.active = False
            recovery_handle(cmd, server)

        MoveCommand.handle, AutomaticErrorRecoveryCommand.handle = move, recover
        self._move_status = MoveStatus

    def request(self) -> None:
        self.pending = True

    def __call__(self, sim) -> None:
        if not self.pending:
            return
        from franky_sim.franka_robot_protocol import BaseCommand, RobotCommand

        self.pending = False
        self.active = True
        rs = self._rs
        motion = rs.current_motion_id
        rs.stop_motion(send_preemption_signal=False)
        if motion:
            BaseCommand.send_response(rs._tcp_socket, RobotCommand.kMove, motion, self._move_status.kReflexAborted)
            rs.reset_current_motion_id()


def free_loopback_host(prefix: str = "127.0.1.", first: int = 10, count: int = 200) -> str:
    """A loopback address whose ports 1337/1338 are free (franky's ports are fixed, so parallel
    servers — other tests, the sim lab — need distinct addresses, not distinct ports)."""
    import socket

    for i in range(first, first + count):
        host = f"{prefix}{i}"
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, 1337))
                b.bind((host, 1338))
            return host
        except OSError:
            continue
    raise RuntimeError(f"no free loopback address in {prefix}{first}..{prefix}{first + count - 1}")


class ServerProcess:
    """Runs this module in a child process and collects its stats lines (parent side).

    ``stats`` holds every stats record with ``rx`` = the parent's ``time.monotonic()`` at receipt,
    so a test can pick the records that fall inside a time window of its own.
    """

    def __init__(self, host: str | None = None, cube: bool = False, report_hz: float = 20.0):
        self.host = host or free_loopback_host()
        self.cube, self.report_hz = cube, report_hz
        self.stats: list[dict] = []
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        cmd = [sys.executable, "-m", "robots.sim.franky_server", "--host", self.host,
               "--report-hz", str(self.report_hz)] + (["--cube"] if self.cube else [])
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, bufsize=1)
        ready = threading.Event()

        def read(stream=self._proc.stdout) -> None:
            try:
                for line in stream:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("event") == "ready":
                        ready.set()
                    elif rec.get("event") == "stats":
                        rec["rx"] = time.monotonic()
                        self.stats.append(rec)
            except (ValueError, OSError):  # stream closed by close()
                pass

        self._reader = threading.Thread(target=read, name="franky-server-stats", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = (self._proc.stderr.read() if self._proc.poll() is not None else "") or "timed out"
                self.close()
                raise RuntimeError(f"franky-sim server on {self.host} did not start: {err.strip()[-300:]}")
        return self

    def window(self, t0: float, t1: float) -> list[dict]:
        return [r for r in self.stats if t0 <= r["rx"] <= t1]

    def latest(self) -> dict | None:
        return self.stats[-1] if self.stats else None

    def wait_next(self, timeout: float = 1.0) -> dict | None:
        """The first stats record that arrives after this call."""
        n, deadline = len(self.stats), time.monotonic() + timeout
        while len(self.stats) <= n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.stats[n] if len(self.stats) > n else None

    def inject_reflex(self) -> None:
        """The controller aborts the running motion with a Cartesian reflex (see module docstring)."""
        self._proc.stdin.write("reflex\n")
        self._proc.stdin.flush()

    def kill(self) -> None:
        """Hard stop, as if the controller vanished."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)

    def close(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        self._proc = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.2", help="loopback address to bind (ports 1337/1338)")
    ap.add_argument("--cube", action="store_true", help=f"add a {CUBE_SIZE * 100:.0f} cm cube at {CUBE_POS}")
    ap.add_argument("--report-hz", type=float, default=10.0, help="stats lines per second")
    args = ap.parse_args(argv)
    if not args.host.startswith("127."):
        print(f"refusing to bind {args.host!r}: the test server only serves loopback", file=sys.stderr)
        return 2

    from franky_sim import SimulationServer
    from franky_sim.mujoco_simulator import MujocoSimulator
    from robots.sim import franky_fixes

    franky_fixes.install()

    sim = MujocoSimulator()
    sim.init()
    sim.add_robot()
    if args.cube:
        add_cube(sim.worldbody)
    srv = SimulationServer(sim, hostname_candidates=[args.host])
    try:
        srv.init()
    except Exception as exc:  # port taken, address not configured …
        print(f"franky-sim could not bind {args.host}: {exc}", file=sys.stderr)
        return 1
    monitor = _Monitor(sim, args.cube)
    sim.register_post_step_callback(monitor)
    injector = _ReflexInjector(srv.robot_servers[0])
    sim.register_post_step_callback(injector)

    def read_commands() -> None:
        for line in sys.stdin:
            if line.strip() == "reflex":
                injector.request()

    threading.Thread(target=read_commands, name="fault-commands", daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    srv.run_async()
    print(json.dumps({"event": "ready", "host": args.host}), flush=True)

    period = 1.0 / args.report_hz
    t0 = last_t = time.monotonic()
    last_steps = 0
    try:
        while not stop.wait(period):
            now = time.monotonic()
            snap = monitor.snapshot()
            snap["loop_hz"] = round((snap["steps"] - last_steps) / (now - last_t), 1)
            last_steps, last_t = snap["steps"], now
            print(json.dumps({"event": "stats", "t": round(now - t0, 3), **snap}), flush=True)
    except BrokenPipeError:  # parent went away: nothing left to report to
        pass
    finally:
        srv.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
