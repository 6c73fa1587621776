"""LeRobot export benchmark: one camera-like 640x480 30 fps episode (bench/recorder.py's frames),
exported per video codec; prints export speed, video MB per minute beside the HDF5 episode's, and
the RGB PSNR of the decoded video against the recorded frames.

    .venv/bin/python bench/lerobot_export.py                 # 10 s episode, libsvtav1 and libx264
    .venv/bin/python bench/lerobot_export.py --seconds 30 --codecs libsvtav1
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recorder import ACTION, CAM, FPS, POSE, make_frames  # noqa: E402
from recorder.episode import EpisodeWriter  # noqa: E402
from recorder.export_lerobot import RGB_KEY, export_lerobot  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--codecs", default="libsvtav1,libx264")
    ap.add_argument("--depth", action="store_true", help="also a libsvtav1 row with depth (12-bit HEVC)")
    args = ap.parse_args()
    import av

    frames = make_frames(30)
    n = int(args.seconds * FPS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ep = tmp / "ep.h5"
        w = EpisodeWriter(ep, dict(robot="franka", task="bench", fps=FPS), {**CAM, "K": np.array(CAM["K"]),
                          "T_base_camera": np.eye(4), "model": "bench", "serial": "0"}, queue_frames=n + 8)
        for i in range(n):
            rgb, depth = frames[i % len(frames)]
            w.append(i / FPS, rgb, depth, POSE, np.zeros(7), 1.0, ACTION)
        w.finalize("success", propose=False)
        minutes = n / FPS / 60
        h5_mb = ep.stat().st_size / 2**20
        print(f"episode: {n} frames 640x480 RGB-D @ {FPS} fps; HDF5 (RGB-D, default compression) "
              f"{h5_mb / minutes:.0f} MB/min")
        print(f"{'codec':<18} {'export s':>9} {'frames/s':>9} {'RGB MB/min':>13} {'PSNR dB':>8}")
        runs = [(c, False) for c in args.codecs.split(",")] + ([("libsvtav1", True)] if args.depth else [])
        for codec, depth in runs:
            out = tmp / f"ds_{codec}_{depth}"
            t0 = time.perf_counter()
            export_lerobot([ep], out, vcodec=codec, depth=depth, progress=False)
            dt = time.perf_counter() - t0
            mp4 = out / f"videos/{RGB_KEY}/chunk-000/file-000.mp4"
            with av.open(str(mp4)) as c:
                dec = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            p = np.mean([psnr(dec[i], frames[i % len(frames)][0]) for i in range(0, n, max(1, n // 30))])
            name = codec + (" + depth" if depth else "")
            extra = ""
            if depth:
                dmp4 = out / "videos/observation.images.depth/chunk-000/file-000.mp4"
                extra = f"   depth video {dmp4.stat().st_size / 2**20 / minutes:.1f} MB/min"
            print(f"{name:<18} {dt:>9.1f} {n / dt:>9.0f} {mp4.stat().st_size / 2**20 / minutes:>13.1f} {p:>8.1f}{extra}")


if __name__ == "__main__":
    main()
