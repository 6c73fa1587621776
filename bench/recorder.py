"""Episode recorder benchmark: sustained 640x480 RGB-D at 30 fps per compression option, and random
frame reads on a 2-minute episode.

    .venv/bin/python bench/recorder.py                       # all options, 60 s each
    .venv/bin/python bench/recorder.py --seconds 20 --options none,blosc-zstd1

Frames are synthetic but camera-like (smooth scene, a moving object, sensor noise of a few grey
levels; depth a plane with noise and 2 % holes): pure noise would be incompressible, a noiseless
render unrealistically cheap. A 100 Hz "control thread" runs beside the writer and reports how late
its ticks come, since h5py holds the GIL while HDF5 compresses. Ratios are against the ``none`` row
measured in the same run (the machine is shared, absolute numbers are noisy).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.episode import EpisodeReader, EpisodeWriter  # noqa: E402
from recorder.schema import COMPRESSIONS, DEFAULT_COMPRESSION  # noqa: E402

H, W, FPS = 480, 640, 30
CAM = dict(K=[[615.0, 0, 320], [0, 615.0, 240], [0, 0, 1]], width=W, height=H, depth_scale=0.001)
# A still arm at a valid pose (unit quaternion): finalize() proposes segments from it.
POSE = np.array([0.4, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0])
ACTION = np.r_[POSE, 1.0]


def make_frames(n: int = 30) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    scene = np.stack([xx * 0.3 + 60, yy * 0.3 + 80, xx * 0.1 + yy * 0.1 + 100], -1)
    scene[300:] = [120, 90, 60]
    plane = 800 + yy * 1.2
    frames = []
    for k in range(n):
        rgb = scene.copy()
        x = 100 + 15 * k
        rgb[200:260, x:x + 60] = [200, 30, 30]
        rgb = np.clip(rgb + rng.normal(0, 2.5, rgb.shape), 0, 255).astype(np.uint8)
        depth = plane + rng.normal(0, 2, (H, W))
        depth[200:260, x:x + 60] -= 40
        depth = depth.astype(np.uint16)
        depth[rng.random((H, W)) < 0.02] = 0
        frames.append((rgb, depth))
    return frames


class ControlTicker(threading.Thread):
    """Stands in for the 100 Hz control loop: records how late each tick wakes up."""

    def __init__(self, rate: float = 100.0):
        super().__init__(daemon=True)
        self.period, self.late, self.running = 1.0 / rate, [], True

    def run(self) -> None:
        nxt = time.monotonic() + self.period
        while self.running:
            time.sleep(max(0.0, nxt - time.monotonic()))
            self.late.append(time.monotonic() - nxt)
            nxt += self.period


def sustained(option: str, seconds: float, folder: Path, frames) -> dict:
    path = folder / f"sustained_{option}.h5"
    path.unlink(missing_ok=True)
    ticker = ControlTicker()
    ticker.start()
    w = EpisodeWriter(path, dict(robot="franka", task="bench", fps=FPS), CAM, compression=option)
    n = int(seconds * FPS)
    max_lag, append_ms = 0, []
    t0 = time.monotonic()
    for i in range(n):
        rgb, depth = frames[i % len(frames)]
        a = time.perf_counter()
        w.append(t0 + i / FPS, rgb, depth, POSE, np.zeros(7), 1.0, ACTION, {"expert_phase": "bench"})
        append_ms.append((time.perf_counter() - a) * 1e3)
        max_lag = max(max_lag, w.lag)
        time.sleep(max(0.0, t0 + (i + 1) / FPS - time.monotonic()))
    wall = time.monotonic() - t0
    w.finalize("unknown")
    ticker.running = False
    ticker.join()
    late = np.array(ticker.late) * 1e3
    return dict(option=option, frames=n, dropped=w.dropped, max_lag=max_lag, cpu=100 * w.cpu_time / wall,
                mb_min=path.stat().st_size / 1e6 / (n / FPS) * 60, append_p99=np.percentile(append_ms, 99),
                tick_p99=np.percentile(late, 99), tick_max=late.max())


def write_fast(option: str, seconds: float, folder: Path, frames) -> Path:
    """A `seconds`-long episode written as fast as the writer drains (the read test's input)."""
    path = folder / f"read_{option}.h5"
    path.unlink(missing_ok=True)
    w = EpisodeWriter(path, dict(robot="franka", task="bench", fps=FPS), CAM, compression=option)
    for i in range(int(seconds * FPS)):
        rgb, depth = frames[i % len(frames)]
        w.append(i / FPS, rgb, depth, POSE, np.zeros(7), 1.0, ACTION, block=True)
    w.finalize("unknown")
    return path


def random_reads(path: Path, n: int = 300) -> dict:
    rng = np.random.default_rng(1)
    with EpisodeReader(path) as ep:
        idx = rng.integers(0, ep.n_frames, n)
        ms = []
        for i in idx:
            a = time.perf_counter()
            ep.rgb(i)
            ep.depth(i)
            ms.append((time.perf_counter() - a) * 1e3)
        return dict(frames=ep.n_frames, p50=np.percentile(ms, 50), p99=np.percentile(ms, 99), max=max(ms))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="sustained recording per option")
    ap.add_argument("--options", default=",".join(COMPRESSIONS), help="comma-separated compression options")
    ap.add_argument("--read-seconds", type=float, default=120.0, help="episode length for the read test")
    ap.add_argument("--read-options", default=f"none,{DEFAULT_COMPRESSION}", help="options for the read test")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()
    options = args.options.split(",")
    if "none" not in options:
        options.insert(0, "none")
    frames = make_frames()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        rows = []
        for opt in options:
            rows.append(sustained(opt, args.seconds, folder, frames))
            print(f"  {opt}: done", file=sys.stderr, flush=True)
        base = next(r for r in rows if r["option"] == "none")
        print(f"\nSustained {W}x{H} RGB-D @ {FPS} fps for {args.seconds:g} s per option "
              f"(writer CPU = writer thread CPU time / wall; 100 Hz tick lateness = GIL stalls)")
        print(f"| option | frames | dropped | max lag | writer CPU % | MB/min | size vs none | append p99 ms "
              f"| 100 Hz tick late p99 / max ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            mark = " (default)" if r["option"] == DEFAULT_COMPRESSION else ""
            print(f"| {r['option']}{mark} | {r['frames']} | {r['dropped']} | {r['max_lag']} | {r['cpu']:.1f} | "
                  f"{r['mb_min']:.0f} | {r['mb_min'] / base['mb_min']:.2f} | {r['append_p99']:.2f} | "
                  f"{r['tick_p99']:.1f} / {r['tick_max']:.1f} |")

        reads = []
        for opt in args.read_options.split(","):
            path = write_fast(opt, args.read_seconds, folder, frames)
            reads.append((opt, random_reads(path)))
            path.unlink()
        base_p50 = reads[0][1]["p50"]
        print(f"\nRandom frame read (rgb + depth) on a {args.read_seconds:g} s episode, 300 reads")
        print("| option | frames | p50 ms | p99 ms | max ms | p50 vs first |")
        print("|---|---|---|---|---|---|")
        for opt, r in reads:
            print(f"| {opt} | {r['frames']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | {r['p50'] / base_p50:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
