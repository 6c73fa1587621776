"""The simulator process: MuJoCo world, robot server, render thread and the RPC loop.

Runs apart from the app (DESIGN.md: franky-sim's pure-Python 1 kHz loop must not share a GIL with the
GUI). Threads in here:
  * physics — franky-sim's SimulationServer loop (FR3) or our own stepping loop (xArm6);
  * render — low priority (nice 19, SCHED_OTHER), writes RGB-D frames into shared memory;
  * main — answers RPC requests from the app over a Pipe; exits when the app's end closes.
Every read or write of the live MjData happens on the physics thread (requests are queued into its
pre-step hook), so the physics loop never takes a lock per step and nothing observes a half step.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from concurrent.futures import Future

import mujoco
import numpy as np

from robots.sim import tasks as T
from robots.sim.frames import FrameBuffer, FrameLayout
from robots.sim.render import RGBDRenderer
from robots.sim.variations import Variation, make_variation
from robots.sim.world import (
    BUTTON_HOUSING_HEIGHT,
    BUTTON_PRESS_DEPTH,
    CUBE_HALF,
    CUBES,
    FRANKA_INFO,
    HEIGHT,
    SCENE_CAMERA,
    WIDTH,
    WRIST_CAMERA,
    BOARD_GROUPS,
    XARM_INFO,
    build_xarm_model,
    decorate_franka_scene,
)

FRANKA_HOST = "127.0.0.2"
# When another sim-franka lab (a second app, a parallel test run) already serves 127.0.0.2, the next
# lab takes the next free loopback address; SimLab.arm() connects to whichever was bound.
FRANKA_HOST_FALLBACKS = tuple(f"127.0.0.{i}" for i in range(3, 33))
XARM_HOME_POSE = T.pose7([0.30, 0.0, 0.30], T.TOOL_DOWN)
XARM_HOME_SEED = np.array([0.0, -0.5, -1.0, 0.0, 1.5, 0.0])
CALL_TIMEOUT = 3.0


def _background_thread_priority() -> None:
    """Render work yields to physics: SCHED_OTHER (never inherit a FIFO class) and nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, PermissionError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, PermissionError, OSError):
        pass


class LabServer:
    def __init__(self, robot: str, wrist_camera: bool, render_hz: float, realtime: bool, shm: dict[str, str]):
        self.robot = robot
        self.render_hz = float(render_hz)
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._step_lock = threading.Lock()
        self._running = True
        self._physics_thread: threading.Thread | None = None
        self._srv = None
        self.servo = None
        self.button_pressed = False
        self.show_board = ""  # "gripper" | "table": which calibration board is drawn ("" none; render thread reads it)
        self.task = T.get_task("pick_cube")
        self.seed = 0
        self.steps = 0
        self.render_ms: list[float] = []
        self.frames_rendered = 0
        if robot == "franka":
            self._build_franka()
            self.realtime = True  # franky-sim paces itself; the libfranka protocol is real time
        elif robot == "xarm6":
            self._build_xarm()
            self.realtime = bool(realtime)
        else:
            raise ValueError(f"unknown sim robot {robot!r}; expected franka or xarm6")
        self._index_objects()
        self.cameras = [SCENE_CAMERA] + ([WRIST_CAMERA] if wrist_camera else [])
        self._buffers = {c: FrameBuffer.attach(shm[c], FrameLayout(WIDTH, HEIGHT)) for c in self.cameras}
        self._K: dict[str, np.ndarray] = {}
        self._render_ready = threading.Event()
        self._render_error = ""
        self._render_thread = threading.Thread(target=self._render_loop, name="sim-render", daemon=True)
        self._render_thread.start()
        if not self._render_ready.wait(30.0) or self._render_error:
            raise RuntimeError(f"sim renderer failed: {self._render_error or 'timeout'}")
        self._start_physics()

    # ------------------------------------------------------------------ world construction
    def _build_franka(self) -> None:
        from franky_sim import SimulationServer
        from franky_sim.mujoco_simulator import MujocoSimulator
        from robots.sim import franky_fixes

        franky_fixes.install()

        self.info_names = FRANKA_INFO
        sim = MujocoSimulator()
        sim.init()
        sim.add_robot()
        decorate_franka_scene(sim)
        self._srv = SimulationServer(sim, hostname_candidates=[FRANKA_HOST, *FRANKA_HOST_FALLBACKS])
        try:
            self._srv.init()
        except OSError:
            raise RuntimeError(f"port 1337 is in use on {FRANKA_HOST} and all fallback loopback addresses — "
                               "too many franky-sim servers are running on this machine") from None
        self.franka_host = self._srv.robot_servers[0].hostname
        self._sim = sim
        self.model, self.data = sim.model, sim.data
        sim.register_pre_step_callback(lambda _s: self._drain_calls())
        sim.register_post_step_callback(lambda _s: self._post_step())

    def _build_xarm(self) -> None:
        from robots.sim.xarm_servo import XArmServo

        self.info_names = XARM_INFO
        self.model = build_xarm_model()
        self.data = mujoco.MjData(self.model)
        self.servo = XArmServo(self.model, self.data)
        self.q_home = self.servo.solve_ik(XARM_HOME_POSE, XARM_HOME_SEED)
        self.servo.teleport(self.q_home)
        mujoco.mj_forward(self.model, self.data)
        # The whole start state (gripper linkage open included), for resets.
        self.qpos_home = self.data.qpos.copy()

    def _index_objects(self) -> None:
        m = self.model
        jid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)  # noqa: E731
        self.cube_qadr = {c: int(m.jnt_qposadr[jid(f"{c}_joint")]) for c in CUBES}
        self.cube_dadr = {c: int(m.jnt_dofadr[jid(f"{c}_joint")]) for c in CUBES}
        self.button_qadr = int(m.jnt_qposadr[jid("button_joint")])
        self.mocap = {n: int(m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)]) for n in ("bin", "button")}
        self.cube_geom = {c: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"{c}_geom") for c in CUBES}
        # Scene variations (robots/sim/variations.py) change these; a plain reset restores them.
        self.table_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "table")
        self.table_pos0 = m.body_pos[self.table_body].copy()
        self.cube_rgba0 = {c: m.geom_rgba[g].copy() for c, g in self.cube_geom.items()}
        self.variation = Variation()
        finger_ids = {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, b) for b in self.info_names.finger_bodies}
        self.finger_geoms = {g for g in range(m.ngeom) if int(m.geom_bodyid[g]) in finger_ids}

    # ------------------------------------------------------------------ physics thread
    def _start_physics(self) -> None:
        if self._srv is not None:
            self._srv.run_async()
            self._physics_thread = self._srv.async_thread
        elif self.realtime:
            self._physics_thread = threading.Thread(target=self._xarm_loop, name="sim-physics", daemon=True)
            self._physics_thread.start()

    def _xarm_step(self) -> None:
        self._drain_calls()
        self.servo.update(self.model.opt.timestep)
        mujoco.mj_step(self.model, self.data)
        self._post_step()

    def _xarm_loop(self) -> None:
        wall0, sim0 = time.monotonic(), self.data.time
        while self._running:
            with self._step_lock:
                self._xarm_step()
            ahead = (self.data.time - sim0) - (time.monotonic() - wall0)
            if ahead > 0.002:
                time.sleep(ahead)
            elif ahead < -0.1:  # fell behind (machine busy): keep real-time pace from here, no catch-up burst
                wall0, sim0 = time.monotonic(), self.data.time

    def advance(self, dt: float) -> float:
        """Lock-step mode (xArm6, realtime=False): step ``dt`` seconds of sim time now."""
        if self.realtime:
            raise RuntimeError("advance() is only for a lab started with realtime=False")
        n = max(1, int(round(dt / self.model.opt.timestep)))
        with self._step_lock:
            for _ in range(n):
                self._xarm_step()
            return float(self.data.time)

    def _drain_calls(self) -> None:
        while True:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(fn())
            except BaseException as e:  # delivered to the caller, the loop keeps running
                fut.set_exception(e)

    def _post_step(self) -> None:
        self.steps += 1
        if self.data.qpos[self.button_qadr] < -BUTTON_PRESS_DEPTH:
            self.button_pressed = True

    def call(self, fn):
        """Run ``fn`` on the physics thread between two steps and return its result."""
        if self._physics_thread is None:
            with self._step_lock:
                return fn()
        if not self._physics_thread.is_alive():
            raise RuntimeError("the physics loop has stopped")
        fut: Future = Future()
        self._calls.put((fn, fut))
        return fut.result(timeout=CALL_TIMEOUT)

    # ------------------------------------------------------------------ render thread
    def _render_loop(self) -> None:
        # Lowered only once the context exists: at nice 19 on a loaded box, EGL/llvmpipe set-up alone
        # outlasted the 30 s start timeout.
        try:
            scratch = mujoco.MjData(self.model)
            renderers = {c: RGBDRenderer(self.model, c, WIDTH, HEIGHT) for c in self.cameras}
            self._K = {c: r.K for c, r in renderers.items()}
        except Exception as e:
            self._render_error = f"{type(e).__name__}: {e}"
            self._render_ready.set()
            return
        self._render_ready.set()
        _background_thread_priority()
        index = 0
        period = 1.0 / self.render_hz
        next_t = time.monotonic()
        while self._running:
            try:
                qpos, mpos, mquat = self.call(lambda: (self.data.qpos.copy(), self.data.mocap_pos.copy(),
                                                       self.data.mocap_quat.copy()))
            except Exception:
                if not self._running:
                    break
                time.sleep(0.05)
                continue
            stamp = time.monotonic()
            scratch.qpos[:] = qpos
            scratch.mocap_pos[:] = mpos
            scratch.mocap_quat[:] = mquat
            mujoco.mj_kinematics(self.model, scratch)
            mujoco.mj_camlight(self.model, scratch)
            t0 = time.perf_counter()
            for cam, r in renderers.items():
                for where, group in BOARD_GROUPS.items():
                    r.show_group(group, self.show_board == where)
                rgb, depth, T_bc = r.render_u16(scratch)
                self._buffers[cam].write(index, stamp, rgb, depth, T_bc)
            self.render_ms.append(1000 * (time.perf_counter() - t0))
            del self.render_ms[:-100]
            self.frames_rendered += 1
            index += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:  # cannot keep up: render as fast as possible, the app counts the gaps it sees
                next_t = time.monotonic()
        for r in renderers.values():
            r.close()

    # ------------------------------------------------------------------ scene queries (physics thread)
    def _object_poses_live(self) -> dict[str, np.ndarray]:
        d = self.data
        poses = {}
        for c, a in self.cube_qadr.items():
            q = d.qpos[a : a + 7]
            poses[c] = np.array([q[0], q[1], q[2], q[4], q[5], q[6], q[3]])
        for n, i in self.mocap.items():
            p, q = d.mocap_pos[i], d.mocap_quat[i]
            poses[n] = np.array([p[0], p[1], p[2], q[1], q[2], q[3], q[0]])
        # The button's pose is the top of its cap, where it is pressed.
        poses["button"][2] += BUTTON_HOUSING_HEIGHT + 0.016 + d.qpos[self.button_qadr]
        # Not an object: the table top's height (0 unless a variation moved it), for the task geometry.
        poses["table"] = np.array([0.0, 0.0, self.variation.table_dz, 0.0, 0.0, 0.0, 1.0])
        return poses

    def _in_gripper(self, cube: str) -> bool:
        g = self.cube_geom[cube]
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            if (c.geom1 == g and c.geom2 in self.finger_geoms) or (c.geom2 == g and c.geom1 in self.finger_geoms):
                return True
        return False

    def _task_state_live(self) -> dict:
        return {"button_pressed": self.button_pressed, "red_in_gripper": self._in_gripper("cube_red")}

    def object_poses(self) -> dict[str, np.ndarray]:
        return self.call(self._object_poses_live)

    def success(self) -> bool:
        return bool(self.call(lambda: self.task.success(self._object_poses_live(), self._task_state_live())))

    def oracle_waypoints(self) -> list[T.Waypoint]:
        return self.task.waypoints(self.object_poses())

    def reset(self, task: str, seed: int, variation: str = "none") -> dict:
        tk = T.get_task(task)
        layout = T.sample_layout(int(seed))
        var = make_variation(variation, int(seed), layout, tk.objects, CUBES)
        layout = var.layout or layout
        dz = var.table_dz

        def apply():
            d = self.data
            if self.servo is not None:
                # A reset scene starts with the gripper open, not opening: a closed reading at a trial's
                # first tick made policies hold the gripper shut (they condition on it). The whole
                # start state is restored (the linkage's joints are coupled), then the layout on top.
                d.qpos[:] = self.qpos_home
                self.servo.teleport(self.q_home)
                self.servo.gripper_opening = 1.0
                d.qvel[:] = 0.0
            for c, p in layout.items():
                if c in self.cube_qadr:
                    a, v = self.cube_qadr[c], self.cube_dadr[c]
                    half = 0.5 * p.yaw
                    d.qpos[a : a + 7] = [p.x, p.y, CUBE_HALF + dz, np.cos(half), 0.0, 0.0, np.sin(half)]
                    d.qvel[v : v + 6] = 0.0
                else:
                    d.mocap_pos[self.mocap[c]] = [p.x, p.y, dz]
            m = self.model
            m.body_pos[self.table_body] = self.table_pos0 + [0.0, 0.0, dz]  # a static body: read every step
            for c, g in self.cube_geom.items():
                m.geom_rgba[g] = self.cube_rgba0[c] if c not in var.colours else [*var.colours[c][1], 1.0]
            self.variation = var
            d.qpos[self.button_qadr] = 0.0
            mujoco.mj_forward(self.model, d)
            self.button_pressed = False

        self.call(apply)
        self.task, self.seed = tk, int(seed)
        return {"task": tk.name, "seed": int(seed), "instruction": var.instruction(tk.instruction),
                "variation": var.name, "objects": list(tk.objects),
                "max_duration": tk.max_duration, "poses": self.object_poses()}

    # ------------------------------------------------------------------ xArm6 arm (physics thread)
    def arm_state(self) -> dict:
        sv = self.servo

        def read():
            d = self.data
            from scipy.spatial.transform import Rotation

            quat = Rotation.from_matrix(d.site_xmat[sv.site].reshape(3, 3)).as_quat()
            return {
                "sim_time": float(d.time),
                "ee_pose": np.concatenate([d.site_xpos[sv.site], quat]),
                "joint_pos": d.qpos[sv.qadr].copy(),
                "gripper": sv.gripper_width(d.qpos),
                "moving": bool(np.max(np.abs(d.qvel[sv.dadr])) > 0.02),
                "busy": sv.busy,
                "error": sv.error,
                # Same snapshot as ee_pose: enough to re-render this instant offline (robots/sim/rerender.py).
                "sim_state": _snapshot(d),
            }

        return self.call(read)

    def sim_state(self) -> dict:
        """The whole simulator state now (for the FR3, whose arm state comes through franky)."""
        return self.call(lambda: _snapshot(self.data))

    def info(self) -> dict:
        return {"robot": self.robot, "realtime": self.realtime, "width": WIDTH, "height": HEIGHT,
                "K": self._K, "cameras": self.cameras, "timestep": float(self.model.opt.timestep),
                "home_pose": XARM_HOME_POSE if self.robot == "xarm6" else None, "pid": os.getpid(),
                "franka_host": getattr(self, "franka_host", None)}

    def stats(self) -> dict:
        return {"steps": self.steps, "sim_time": self.call(lambda: float(self.data.time)),
                "frames_rendered": self.frames_rendered,
                "render_ms": float(np.mean(self.render_ms)) if self.render_ms else float("nan")}

    def handle(self, op: str, args: tuple):
        sv = self.servo
        if op in ("servo", "move_to", "home", "stop", "gripper", "arm_state") and sv is None:
            raise RuntimeError(f"{op!r} is an xArm6 request; the FR3 is driven through franky")
        if op == "servo":
            pose = np.asarray(args[0], float)
            return self.call(lambda: sv.servo(pose, self.data.time))
        if op == "move_to":
            pose = np.asarray(args[0], float)
            return self.call(lambda: sv.move_to(pose, self.data.time))
        if op == "home":
            return self.call(lambda: sv.move_joints(self.q_home, self.data.time))
        if op == "stop":
            return self.call(sv.hold)
        if op == "gripper":
            opening = float(np.clip(args[0], 0.0, 1.0))
            return self.call(lambda: setattr(sv, "gripper_opening", opening))
        if op == "arm_state":
            return self.arm_state()
        if op == "advance":
            return self.advance(float(args[0]))
        if op == "reset":
            return self.reset(*args)  # task, seed[, variation]
        if op == "object_poses":
            return self.object_poses()
        if op == "sim_state":
            return self.sim_state()
        if op == "success":
            return self.success()
        if op == "oracle_waypoints":
            return self.oracle_waypoints()
        if op == "info":
            return self.info()
        if op == "stats":
            return self.stats()
        if op == "calibration_board":
            where = str(args[0] or "")
            if where and where not in BOARD_GROUPS:
                raise ValueError(f"unknown calibration board {where!r}; expected one of: {', '.join(BOARD_GROUPS)}")
            self.show_board = where
            return where
        if op == "ping":
            return True
        raise ValueError(f"unknown sim request {op!r}")

    def close(self) -> None:
        self._running = False
        if self._srv is not None:
            try:
                self._srv.cleanup()
            except Exception:
                pass
        elif self._physics_thread is not None:
            self._physics_thread.join(timeout=2.0)
        self._render_thread.join(timeout=3.0)
        for b in self._buffers.values():
            b.close()


def _snapshot(d: mujoco.MjData) -> dict:
    """Enough of ``d`` to re-render this instant offline (robots/sim/rerender.py); physics thread only."""
    return {"qpos": d.qpos.copy(), "mocap_pos": d.mocap_pos.ravel().copy(),
            "mocap_quat": d.mocap_quat.ravel().copy()}


def main(conn, robot: str, wrist_camera: bool, render_hz: float, realtime: bool, shm: dict[str, str]) -> None:
    """Process entry point (multiprocessing 'spawn')."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # never inherit the app's RT class
    except (AttributeError, PermissionError, OSError):
        pass
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        lab = LabServer(robot, wrist_camera, render_hz, realtime, shm)
    except BaseException as e:
        conn.send(("err", f"sim start failed: {type(e).__name__}: {e}"))
        return
    conn.send(("ok", lab.info()))
    try:
        while True:
            try:
                op, args = conn.recv()
            except (EOFError, OSError):
                break  # the app closed its end or died: shut down, never linger as an orphan
            if op == "close":
                conn.send(("ok", None))
                break
            try:
                conn.send(("ok", lab.handle(op, args)))
            except Exception as e:
                msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                if os.environ.get("ACTSTUDIO_SIM_DEBUG"):
                    msg += "\n" + traceback.format_exc()
                conn.send(("err", msg))
    finally:
        lab.close()


def _cli() -> None:
    import argparse
    from multiprocessing.connection import Connection

    ap = argparse.ArgumentParser(description="ActStudio simulated lab process (started by SimLab.start)")
    ap.add_argument("--fd", type=int, required=True, help="socket fd of the connection to the app")
    ap.add_argument("--robot", required=True, choices=["franka", "xarm6"])
    ap.add_argument("--render-hz", type=float, default=15.0)
    ap.add_argument("--shm", required=True, help="camera=shared_memory_name[,…]")
    ap.add_argument("--wrist", action="store_true")
    ap.add_argument("--lockstep", action="store_true", help="xArm6: step only on advance() requests")
    a = ap.parse_args()
    shm = dict(item.split("=", 1) for item in a.shm.split(","))
    main(Connection(a.fd), a.robot, a.wrist, a.render_hz, not a.lockstep, shm)


if __name__ == "__main__":
    _cli()
