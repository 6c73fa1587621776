"""`python main.py demo`: headless teleop on the simulated lab.

Runs the fixed-rate control loop (safety filter, watchdog) with the chosen input — by default the
scripted operator, which drives the arm through twists and gripper buttons the way a person would —
prints one status line per second (rate, tracking error, safety events, expert phase) and the task's
success at the end. Exit code 0 when the sim task succeeded, 1 when it did not, 2 on a device error.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter

import numpy as np

from app.config import add_device_args
from app.session import DeviceSession
from app.teleop import Tick
from robots.base import DeviceError


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="headless teleop demo on the simulated lab",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(p, default_input="scripted")
    add_demo_args(p)
    p.set_defaults(func=run_demo)


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=20.0, help="run at most this long (default %(default)s)")
    p.add_argument("--task", default="pick_cube",
                   help="sim task: pick_cube | place_in_bin | stack_cubes | press_button (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="layout seed of the sim task (default %(default)s)")
    p.add_argument("--keep-going", action="store_true",
                   help="run the full --seconds even after the task succeeded")


class _SecondStats:
    """Aggregates ticks on the control thread; the main thread takes a snapshot once a second."""

    def __init__(self):
        self._lock = threading.Lock()
        self._reset()
        self.total_events: Counter[str] = Counter()
        self.faults: set[str] = set()

    def _reset(self):
        self.n = 0
        self.err_max = 0.0
        self.err_sum = 0.0
        self.events: Counter[str] = Counter()
        self.phase = ""
        self.prev_action: np.ndarray | None = None

    def __call__(self, tick: Tick) -> None:
        with self._lock:
            self.n += 1
            # The arm reaches a target one tick after it is sent: compare with the previous command.
            if self.prev_action is not None and tick.commanding:
                err = float(np.linalg.norm(tick.state.ee_pose[:3] - self.prev_action[:3]))
                self.err_max = max(self.err_max, err)
                self.err_sum += err
            self.prev_action = tick.action
            for e in tick.events:
                key = e.split(":")[0]
                self.events[key] += 1
                self.total_events[key] += 1
            if tick.fault:
                self.faults.add(tick.fault)
            self.phase = str(tick.info.get("expert_phase", self.phase))

    def take(self) -> dict:
        with self._lock:
            snap = {"n": self.n, "err_max": self.err_max, "err_mean": self.err_sum / max(self.n - 1, 1),
                    "events": dict(self.events), "phase": self.phase}
            prev = self.prev_action
            self._reset()
            self.prev_action = prev
            return snap


def run_demo(args, banner: str = "") -> int:
    try:
        session = DeviceSession(args.robot, args.camera, args.input, args.rate, task=args.task, seed=args.seed)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if banner:
        print(banner)
    print(f"demo: {session!r}, task {args.task} seed {args.seed}, up to {args.seconds:g} s "
          "(headless; Ctrl+C stops)")
    stats = _SecondStats()
    try:
        with session:
            loop = session.control_loop()
            loop.add_listener(stats)
            success = False
            t_start = time.monotonic()
            with loop:
                while True:
                    remaining = args.seconds - (time.monotonic() - t_start)
                    if remaining <= 0:
                        break
                    time.sleep(min(1.0, remaining))
                    s = stats.take()
                    success = bool(session.lab.success()) if session.lab is not None else False
                    ev = " ".join(f"{k}×{v}" for k, v in sorted(s["events"].items())) or "-"
                    print(f"t={time.monotonic() - t_start:5.1f}s  rate {s['n']:3d} Hz  "
                          f"track err mean {s['err_mean'] * 1e3:5.1f} mm max {s['err_max'] * 1e3:5.1f} mm  "
                          f"phase {s['phase'] or '-':<9s} events {ev}"
                          + ("  [task done]" if success else ""), flush=True)
                    if loop.fault and loop.fault != "estop":
                        print(f"stopped: {loop.fault}", file=sys.stderr)
                        break
                    if success and not args.keep_going:
                        break
            timing = loop.timing_stats()
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"loop: {timing['ticks']} ticks, period p50 {timing['period_p50_ms']:.1f} ms "
          f"p99 {timing['period_p99_ms']:.1f} ms max {timing['period_max_ms']:.1f} ms, "
          f"overruns {timing['overruns']}, listener errors {timing['listener_errors']}")
    if stats.total_events:
        print("safety/watchdog events: " + ", ".join(f"{k} {v}" for k, v in stats.total_events.most_common()))
    if session.sim_robot is None:
        print("task success: n/a (no simulated lab)")
        return 0
    print(f"task {args.task} seed {args.seed}: {'SUCCESS' if success else 'FAILURE'}")
    return 0 if success else 1
