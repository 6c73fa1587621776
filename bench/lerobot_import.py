"""LeRobot import benchmark: what the Annotate tab pays on a LeRobot v3 dataset.

1. Scrub: random frame reads (recorder.lerobot_dataset.VideoFrames, what the frame decoder runs)
   of the second episode inside a shared 640x480 30 fps mp4 (bench/recorder.py's camera-like
   frames, exported with LeRobot's encoder settings: AV1, GOP 2), and steps +1 (playback).
2. Save: one annotation save (recorder.lerobot_annotations.save_docs: rewrite of the episode's data
   parquet + sidecar + journal, fsynced) against the data file's size, since LeRobot keeps subtasks
   in the frame table (lerobot's own annotation writer rewrites the shards the same way).

    .venv/bin/python bench/lerobot_import.py
    .venv/bin/python bench/lerobot_import.py --seconds 20 --rows 20000,200000
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recorder import ACTION, CAM, FPS, POSE, make_frames  # noqa: E402
from recorder import lerobot_annotations as la  # noqa: E402
from recorder.annotations import AnnotationDoc, Segment  # noqa: E402
from recorder.episode import EpisodeWriter  # noqa: E402
from recorder.export_lerobot import export_lerobot  # noqa: E402
from recorder.lerobot_dataset import VideoFrames, load_episode  # noqa: E402


def pct(x, q):
    return float(np.percentile(np.asarray(x) * 1e3, q))


def scrub(tmp: Path, seconds: float) -> None:
    frames = make_frames(30)
    n = int(seconds * FPS)
    eps = []
    for e in range(2):
        p = tmp / f"ep{e}.h5"
        w = EpisodeWriter(p, dict(robot="franka", task="bench", fps=FPS), {**CAM, "K": np.array(CAM["K"]),
                          "T_base_camera": np.eye(4), "model": "bench", "serial": "0"}, queue_frames=n + 8)
        for i in range(n):
            rgb, depth = frames[i % len(frames)]
            w.append(i / FPS, rgb, depth, POSE, np.zeros(7), 1.0, ACTION)
        eps.append(w.finalize("success", propose=False))
    out = tmp / "ds"
    export_lerobot(eps, out, progress=False)
    ep = load_episode(out, 1)
    v = VideoFrames(ep.video["path"], ep.video["from_timestamp"], ep.fps, ep.n_frames)
    rng = np.random.default_rng(0)
    rand = []
    for i in rng.integers(0, n, 200):
        v._lru.clear()   # measure decoding, not the cache
        t = time.perf_counter()
        v.rgb(int(i))
        rand.append(time.perf_counter() - t)
    v._lru.clear()
    v.rgb(0)
    step = []
    for i in range(1, min(n, 200)):
        t = time.perf_counter()
        v.rgb(i)
        step.append(time.perf_counter() - t)
    v.close()
    print(f"scrub: episode 2 of 2 in one 640x480 AV1 mp4 ({n} frames each): random read p50 {pct(rand, 50):.1f} ms, "
          f"p99 {pct(rand, 99):.1f} ms; next frame p50 {pct(step, 50):.1f} ms, p99 {pct(step, 99):.1f} ms")


def save(tmp: Path, rows: int) -> None:
    """A dataset of 500-frame episodes, 14-d state and action, in one data file of ``rows`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    root = tmp / f"save_{rows}"
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    per = 500
    n_eps = rows // per
    rng = np.random.default_rng(0)
    vec = lambda: pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=rows * 14).astype(np.float32)), 14)  # noqa: E731
    table = pa.table({"observation.state": vec(), "action": vec(),
                      "timestamp": pa.array((np.arange(rows) % per / FPS).astype(np.float32)),
                      "frame_index": pa.array(np.arange(rows) % per), "episode_index": pa.array(np.arange(rows) // per),
                      "index": pa.array(np.arange(rows)), "task_index": pa.array(np.zeros(rows, np.int64))})
    la._write_table(table, root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"episode_index": list(range(n_eps)), "data/chunk_index": [0] * n_eps,
                             "data/file_index": [0] * n_eps, "length": [per] * n_eps}),
                   root / "meta/episodes/chunk-000/file-000.parquet")
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": FPS, "features": {},
                                                     "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"}))
    mb = (root / "data/chunk-000/file-000.parquet").stat().st_size / 2**20
    times = []
    for k in range(4):   # the first save adds the language columns; later ones replace one episode's rows
        doc = AnnotationDoc("bench", per, [Segment(0, 100 + k, "move", instruction="reach", source="human"),
                                           Segment(100 + k, per, "grasp", instruction="grasp", source="human")])
        t = time.perf_counter()
        la.save_docs(root, 3, [doc], subtasks_from="bench")
        times.append(time.perf_counter() - t)
    print(f"save: data file {rows} rows ({mb:.1f} MB): first save {times[0] * 1e3:.0f} ms, "
          f"later saves {np.median(times[1:]) * 1e3:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each of the two scrubbed episodes")
    ap.add_argument("--rows", default="20000,200000", help="data-file sizes (frames) for the save benchmark")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scrub(Path(tmp), args.seconds)
        for r in args.rows.split(","):
            save(Path(tmp), int(r))


if __name__ == "__main__":
    main()
