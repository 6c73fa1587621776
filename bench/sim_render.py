"""Benchmark the sim lab's camera path and the xArm6 servo step.

    MUJOCO_GL=egl .venv/bin/python bench/sim_render.py [--frames 20]

Rows are timed in the same run and reported as ratios against the baseline (RGB + depth in two
passes with MuJoCo's default quality: 4096 shadow map, 4x MSAA), because the box is shared and
absolute numbers drift.
"""
from __future__ import annotations

import argparse
import statistics
import time
import xml.etree.ElementTree as ET

import mujoco
import numpy as np


def _model(fast: bool) -> mujoco.MjModel:
    from robots.sim.world import build_xarm_model

    m = build_xarm_model()
    if not fast:
        m.vis.quality.shadowsize = 4096
        m.vis.quality.offsamples = 4
        for i in range(m.nlight):
            m.light_castshadow[i] = 1
    return m


def _time(fn, frames: int) -> float:
    fn()  # warm-up (context, textures)
    ts = []
    for _ in range(frames):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20)
    a = ap.parse_args()
    from robots.sim.render import RGBDRenderer
    from robots.sim.world import HEIGHT, SCENE_CAMERA, WIDTH

    rows = []
    for fast in (False, True):
        m = _model(fast)
        d = mujoco.MjData(m)
        mujoco.mj_forward(m, d)
        r = RGBDRenderer(m, SCENE_CAMERA, WIDTH, HEIGHT)

        def rgb_only():
            mujoco.mjv_updateScene(m, d, r._opt, None, r._cam, mujoco.mjtCatBit.mjCAT_ALL.value, r._scene)
            mujoco.mjr_render(r._rect, r._scene, r._ctx)
            mujoco.mjr_readPixels(r._rgb, None, r._rect, r._ctx)

        def two_pass():
            rgb_only()
            mujoco.mjr_render(r._rect, r._scene, r._ctx)
            mujoco.mjr_readPixels(None, r._zbuf, r._rect, r._ctx)

        label = "shadows+MSAA" if not fast else "no shadows/MSAA"
        if not fast:
            rows.append((f"RGB+depth, 2 passes, {label} (baseline)", _time(two_pass, a.frames)))
        rows.append((f"RGB only, {label}", _time(rgb_only, a.frames)))
        rows.append((f"RGB+depth one pass -> uint16 mm, {label}", _time(lambda: r.render_u16(d), a.frames)))
        r.close()

    from robots.sim.tasks import TOOL_DOWN, pose7
    from robots.sim.xarm_servo import XArmServo

    m = _model(True)
    d = mujoco.MjData(m)
    sv = XArmServo(m, d)
    sv.teleport(sv.solve_ik(pose7([0.3, 0, 0.3], TOOL_DOWN), np.array([0, -0.5, -1.0, 0, 1.5, 0.0])))
    sv.move_to(pose7([0.45, 0.1, 0.1], TOOL_DOWN), 0.0)
    n = 1000

    def steps():
        for _ in range(n):
            sv.update(m.opt.timestep)
            mujoco.mj_step(m, d)

    step_ms = _time(steps, 3) / n

    base = rows[0][1]
    print(f"\nsim camera 640x480 (xArm6 scene, EGL/llvmpipe, shared 2-core box), median of {a.frames}")
    print(f"| {'path':<52} | {'ms/frame':>9} | {'ratio':>6} |")
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 8}|")
    for name, ms in rows:
        print(f"| {name:<52} | {ms:9.1f} | {ms / base:6.2f} |")
    print(f"\nxArm6 physics + Cartesian servo: {1000 * step_ms:.0f} us per 2 ms step "
          f"-> {m.opt.timestep / step_ms * 1000:.1f}x real time (lock-step ceiling, no rendering)")


if __name__ == "__main__":
    main()
