"""Control-loop timing on the simulated lab: rate × camera rendering.

    python -m bench.teleop [--robot sim-xarm6] [--seconds 10] [--rates 20 100]

For each configuration a fresh simulated lab is started and the ControlLoop runs the scripted operator
(pick_cube) for ``--seconds``. Printed per row: loop period p50/p99/max, overruns, compute time per
tick, sim render time per frame (measured in the sim process) and the frame rate and frame age the
loop actually saw (from the frames' capture stamps), and CPU use of this (app) process and of the sim
process. "camera off" still starts the lab's renderer (it cannot be removed) but at its minimum rate
(0.5 Hz) and without a camera in the loop. Ratios are against the first row, measured in the same run,
because other jobs share these cores.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import psutil

from app.session import DeviceSession

IDLE_RENDER_HZ = 0.5  # the lab's minimum: "camera off"
CAMERA_RENDER_HZ = 15.0  # DESIGN.md budget: ~10-20 Hz RGB-D on a 2-core box


class FrameWatch:
    """Listener: distinct frames seen by the loop and how old each was when first seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.last_index = None
        self.stamps: list[float] = []
        self.ages: list[float] = []

    def __call__(self, tick) -> None:
        f = tick.frame
        if f is None or f.index == self.last_index:
            return
        with self.lock:
            self.last_index = f.index
            self.stamps.append(f.stamp)
            self.ages.append(time.monotonic() - f.stamp)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run_config(robot: str, rate: float, camera: bool, seconds: float) -> dict:
    session = DeviceSession(robot, "sim" if camera else "none", "scripted", rate,
                            render_hz=CAMERA_RENDER_HZ if camera else IDLE_RENDER_HZ)
    with session:
        app_proc = psutil.Process(os.getpid())
        sim_proc = psutil.Process(session.lab.pid)
        loop = session.control_loop()
        frames = FrameWatch()
        loop.add_listener(frames)
        stats0 = session.lab.stats()
        c_app, c_sim, w0 = cpu_seconds(app_proc), cpu_seconds(sim_proc), time.monotonic()
        with loop:
            time.sleep(seconds)
        wall = time.monotonic() - w0
        c_app, c_sim = cpu_seconds(app_proc) - c_app, cpu_seconds(sim_proc) - c_sim
        stats1 = session.lab.stats()
        timing = loop.timing_stats()
        dropped = session.camera.dropped_frames if session.camera is not None else 0
    n_frames = len(frames.stamps)
    fps = (n_frames - 1) / (frames.stamps[-1] - frames.stamps[0]) if n_frames > 2 else float("nan")
    return {
        "rate": rate, "camera": camera, **timing,
        "render_ms": stats1.get("render_ms", float("nan")) if camera else float("nan"),
        "frames_rendered": stats1["frames_rendered"] - stats0["frames_rendered"],
        "fps_seen": fps, "frame_age_ms": 1e3 * float(np.median(frames.ages)) if frames.ages else float("nan"),
        "dropped": dropped, "cpu_app": 100 * c_app / wall, "cpu_sim": 100 * c_sim / wall,
        "sim_rtf": (stats1["sim_time"] - stats0["sim_time"]) / wall,
    }


def fmt(x: float, spec: str = ".1f") -> str:
    return "–" if x != x else format(x, spec)


def print_table(rows: list[dict]) -> None:
    base = rows[0]
    print("| rate Hz | camera | period p50 ms | p99 ms | max ms | p99 / base | overruns | compute p50 ms "
          "| render ms/frame | frames seen Hz | frame age ms | app CPU % | sim CPU % | CPU (app+sim) / base "
          "| sim RTF |")
    print("|---" * 15 + "|")
    for r in rows:
        cpu = r["cpu_app"] + r["cpu_sim"]
        print(f"| {r['rate']:g} | {'on' if r['camera'] else 'off'} | {fmt(r['period_p50_ms'])} "
              f"| {fmt(r['period_p99_ms'])} | {fmt(r['period_max_ms'])} "
              f"| {fmt(r['period_p99_ms'] / r['period_p50_ms'] / (base['period_p99_ms'] / base['period_p50_ms']), '.2f')} "
              f"| {r['overruns']} | {fmt(r['compute_p50_ms'])} | {fmt(r['render_ms'])} | {fmt(r['fps_seen'])} "
              f"| {fmt(r['frame_age_ms'])} | {fmt(r['cpu_app'], '.0f')} | {fmt(r['cpu_sim'], '.0f')} "
              f"| {fmt(cpu / (base['cpu_app'] + base['cpu_sim']), '.2f')} | {fmt(r['sim_rtf'], '.2f')} |")
    print("p99 / base compares jitter (p99 over p50) with the first row; CPU % is of one core "
          "(up to 200 % on 2 cores); sim RTF = simulated seconds per wall second.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.teleop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="sim-xarm6", help="sim-xarm6 | sim-franka (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="per configuration (default %(default)s)")
    ap.add_argument("--rates", type=float, nargs="+", default=[20.0, 100.0])
    args = ap.parse_args(argv)
    rows = []
    print(f"bench.teleop: {args.robot}, scripted operator on pick_cube, {args.seconds:g} s per row, "
          f"{psutil.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    for camera in (False, True):
        for rate in args.rates:
            print(f"  running {rate:g} Hz, camera {'on' if camera else 'off'} ...", flush=True)
            rows.append(run_config(args.robot, rate, camera, args.seconds))
    print()
    print_table(rows)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (shared machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
