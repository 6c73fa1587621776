"""RealSense driver cost per frame at 640×480, against the bare SDK loop measured in the same run.

Writes two recordings through the SDK (depth already on the colour grid; depth from a second
viewpoint that needs rs.align), then plays each back consumer-paced and reports ms/frame for:
the bare pipeline loop (wait_for_frames + copying both images out) as the baseline, and
RealSenseCamera (syncer dedupe, clock mapping, RGBDFrame, thread handoff, align when needed).

    .venv/bin/python -m bench.realsense_playback [--frames 90]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from robots.realsense import RealSenseCamera, _rs, write_rgbd_recording

W, H, FPS = 640, 480, 30
K = np.array([[615.0, 0.0, 319.5], [0.0, 615.0, 239.5], [0.0, 0.0, 1.0]])


def frames(n: int):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    depth = (800 + 400 * rng.random((H, W))).astype(np.uint16)
    for i in range(n):
        yield rgb, depth, i, 1000.0 + i * 1000.0 / FPS


def bare_sdk(path: Path) -> tuple[float, int]:
    rs = _rs()
    pipe, cfg = rs.pipeline(), rs.config()
    cfg.enable_device_from_file(str(path), repeat_playback=False)
    player = cfg.resolve(rs.pipeline_wrapper(pipe)).get_device().as_playback()
    player.set_real_time(False)
    player.pause()  # same start-up guard as the driver, or the baseline loses frames
    pipe.start(cfg).get_device().as_playback().resume()
    n, last, t0 = 0, -1, time.perf_counter()
    while True:
        ok, fs = pipe.try_wait_for_frames(200)
        if not ok:
            break
        c = fs.get_color_frame()
        if c.get_frame_number() == last:
            continue
        last = c.get_frame_number()
        np.array(c.get_data())
        np.array(fs.get_depth_frame().get_data())
        n += 1
    dt = time.perf_counter() - t0 - 0.2  # the final timeout is not work
    pipe.stop()
    return dt / n * 1000, n


def driver(path: Path) -> tuple[float, int]:
    cam = RealSenseCamera(playback=path, realtime=False, T_base_camera=np.eye(4))
    cam.start()
    n, t0 = 0, time.perf_counter()
    try:
        while True:
            cam.wait_frame(5.0)
            n += 1
    except Exception:
        pass
    dt = time.perf_counter() - t0 - 0.2
    cam.stop()
    return dt / n * 1000, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=90)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        registered = write_rgbd_recording(Path(tmp) / "registered.db3", frames(args.frames), K=K, fps=FPS)
        T = np.eye(4)
        T[0, 3] = 0.015  # D435: colour imager ~15 mm from the depth origin
        offset = write_rgbd_recording(Path(tmp) / "offset.db3", frames(args.frames), K=K, fps=FPS,
                                      T_color_depth=T)
        rows = []
        base_ms, n = bare_sdk(registered)
        rows.append(("bare SDK loop (baseline)", base_ms, n))
        rows.append(("RealSenseCamera, registered depth", *driver(registered)))
        rows.append(("RealSenseCamera, rs.align to colour", *driver(offset)))
    print(f"RealSense playback {W}x{H}, consumer-paced, {args.frames} frames (shared 2-core machine)")
    print(f"{'path':40s} {'ms/frame':>9s} {'frames':>7s} {'x baseline':>11s} {'max fps':>8s}")
    for name, ms, n in rows:
        print(f"{name:40s} {ms:9.2f} {n:7d} {ms / base_ms:11.2f} {1000 / ms:8.1f}")


if __name__ == "__main__":
    main()
