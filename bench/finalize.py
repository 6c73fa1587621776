"""Cost of a crash-atomic save: finalize into a copy + os.replace (what EpisodeWriter does) versus
opening the recorded file r+ in place (what it did before issue 12, which a kill turned into a file
nobody could open). Same episodes, same machine, one run; the ratio is the price of atomicity.

    .venv/bin/python -m bench.finalize [--seconds 10,60] [--dir /tmp]

Frames as bench/recorder.py makes them (camera-like 640x480 RGB-D), recorded at 20 Hz with the
default compression; each row finalizes one fresh recording per method (with keyframes + proposals).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from bench.recorder import ACTION, CAM, POSE, make_frames
from recorder.episode import _STOP, EpisodeWriter, marker_path
from recorder.proposals import write_into_open_file


def record(path: Path, frames: int, pool) -> EpisodeWriter:
    w = EpisodeWriter(path, dict(robot="bench", task="pick_cube", fps=20.0), CAM)
    for i in range(frames):
        rgb, depth = pool[i % len(pool)]
        pose = POSE + [0.001 * (i % 200), 0, 0, 0, 0, 0, 0]
        w.append(i / 20, rgb, depth, pose, np.zeros(7), 1.0 if (i // 100) % 2 else 0.3, ACTION, block=True)
    return w


def finalize_in_place(w: EpisodeWriter) -> None:
    """The pre-issue-12 finalize, for comparison only (not crash-safe)."""
    w._stop(_STOP)
    with h5py.File(w.path, "r+") as f:
        write_into_open_file(f)
        f.attrs.update({"outcome": "success", "state": "complete"})
    marker_path(w.path).unlink(missing_ok=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", default="10,60", help="take lengths in seconds (20 Hz)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    pool = make_frames(30)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; 640x480 RGB-D at 20 Hz")
    print(f"{'take':>6} {'file MB':>8} {'in place r+ ms':>15} {'copy + replace ms':>18} {'ratio':>6}")
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        d = Path(d)
        for seconds in map(float, args.seconds.split(",")):
            frames = int(seconds * 20)
            times = {"inplace": [], "atomic": []}
            size = 0.0
            for r in range(args.repeats):
                for method in ("inplace", "atomic"):
                    path = d / f"{method}_{seconds:g}_{r}.h5"
                    w = record(path, frames, pool)
                    while w.lag:  # let the writer drain so only the save is timed
                        time.sleep(0.01)
                    t = time.perf_counter()
                    if method == "atomic":
                        w.finalize("success")
                    else:
                        finalize_in_place(w)
                    times[method].append(time.perf_counter() - t)
                    size = path.stat().st_size / 1e6
                    path.unlink()
            a, b = statistics.median(times["inplace"]), statistics.median(times["atomic"])
            print(f"{seconds:5.0f}s {size:8.1f} {1e3 * a:15.0f} {1e3 * b:18.0f} {b / a:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
