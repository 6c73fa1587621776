"""Franka streaming: velocity-twist stream (FrankaArm default) vs absolute async CartesianMotion per tick.

    python -m bench.franka_servo [--reps 2] [--rate 20] [--seconds 3]

Both drive franky-sim (own subprocess) through the real franky client on the same 0.1 m/s circle
with a ±10° yaw sway. Columns: tracking error against where the target is *now* (max / mean),
against the target sent one tick earlier, the slowest 1 ms sim step inside any 50 ms window of the
steady part (≈0 means stop-and-go between ticks), time to rest after the last update, and the sim's
loop rate during the run. Ratios are against the pose-motion baseline measured in the same run;
the machine is shared, so compare ratios, not absolute figures, across runs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.spatial.transform import Rotation

from robots.base import DeviceError
from robots.franka import FrankaArm
from robots.sim.franky_server import ServerProcess

DOWN = np.array([1.0, 0.0, 0.0, 0.0])


def circle(t, center, q0, r=0.04, w=2.5, ramp=0.6):
    phi = w * t * t / (2 * ramp) if t < ramp else w * ramp / 2 + w * (t - ramp)
    yaw = np.radians(10) * np.sin(np.pi * t / 3.0) ** 2
    q = (Rotation.from_euler("z", yaw) * Rotation.from_quat(q0)).as_quat()
    return np.r_[center + r * np.array([np.cos(phi) - 1, np.sin(phi), 0.0]), q]


def run_once(arm: FrankaArm, srv: ServerProcess, mode: str, rate: float, seconds: float) -> dict:
    arm.servo_mode = mode
    arm.rate_hz = rate
    arm.move_to(np.r_[0.5, 0.0, 0.35, DOWN])
    start = arm.state().ee_pose
    errs, lag = [], []
    prev = None
    t0 = time.monotonic()
    for k in range(int(seconds * rate) + 1):
        while time.monotonic() < t0 + k / rate:
            time.sleep(0.0005)
        ref = circle(k / rate, start[:3], start[3:])
        cur = arm.state().ee_pose
        if k:
            errs.append(np.linalg.norm(cur[:3] - ref[:3]))
            lag.append(np.linalg.norm(cur[:3] - prev[:3]))
        arm.servo(ref)
        prev = ref
    t_end = time.monotonic()
    rest = None
    while time.monotonic() < t_end + 2.0:
        rec = srv.wait_next()
        if rec and rec["ee_speed_max"] < 0.005:
            rest = rec["rx"] - t_end
            break
    arm.stop()
    steady = srv.window(t0 + 0.8, t_end - 0.05)
    return {
        "max_err_mm": 1000 * max(errs), "mean_err_mm": 1000 * float(np.mean(errs)),
        "max_err_prev_mm": 1000 * max(lag),
        "min_step_speed": min(r["ee_speed_min"] for r in steady) if steady else float("nan"),
        "rest_s": rest if rest is not None else float("nan"),
        "loop_hz": statistics.median(r["loop_hz"] for r in srv.window(t0, t_end)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    rows: dict[str, list[dict]] = {"pose": [], "velocity": []}
    failures = {m: 0 for m in rows}
    with ServerProcess(report_hz=20.0) as srv:
        arm = FrankaArm(srv.host)
        arm.connect()
        try:
            for _ in range(args.reps):
                for mode in rows:  # interleaved so load changes hit both alike
                    try:
                        rows[mode].append(run_once(arm, srv, mode, args.rate, args.seconds))
                    except DeviceError as exc:  # e.g. franky's planner rejecting a cut-in pose target
                        print(f"{mode}: run failed: {exc}")
                        failures[mode] += 1
                        time.sleep(0.5)
                        arm.recover()
        finally:
            arm.disconnect()
    cols = ["max_err_mm", "mean_err_mm", "max_err_prev_mm", "min_step_speed", "rest_s", "loop_hz"]
    nan = float("nan")
    med = {m: {c: statistics.median(r[c] for r in rs) if rs else nan for c in cols} for m, rs in rows.items()}
    print(f"Franka streaming at {args.rate:g} Hz, 0.1 m/s circle, median of {args.reps} (shared 2-core machine)")
    print("| mode | " + " | ".join(cols) + " | failed runs | max_err ratio vs pose |")
    print("|---" * (len(cols) + 3) + "|")
    for m in ("pose", "velocity"):
        ratio = med[m]["max_err_mm"] / med["pose"]["max_err_mm"]
        print(f"| {m} | " + " | ".join(f"{med[m][c]:.3f}" for c in cols)
              + f" | {failures[m]}/{args.reps} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
