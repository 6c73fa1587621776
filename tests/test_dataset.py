"""Folder index: bad files listed with their message, cache keyed on mtime+size, info command."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from recorder.dataset import INDEX_NAME, Dataset
from recorder.episode import EpisodeReader, EpisodeWriter, marker_path
from tests.test_episode import make_v0, record

REPO = Path(__file__).resolve().parents[1]


def tiny(path, task="pick_cube", n=6, outcome="success"):
    w = EpisodeWriter(path, dict(robot="franka", task=task, fps=10), None)
    for i in range(n):
        w.append(i / 10, None, None, np.zeros(7), np.zeros(7), 1.0, np.zeros(8), block=True)
    w.finalize(outcome, propose=False)


def test_folder_lists_good_and_bad_and_caches(tmp_path):
    record(tmp_path / "ep_000.h5", n=8).finalize("success", propose=False)  # "new": no proposals yet
    tiny(tmp_path / "ep_001.h5", task="stack_cubes", outcome="failure")
    (tmp_path / "ep_002.h5").write_bytes(b"garbage" * 100)
    record(tmp_path / "ep_003.h5", n=8).finalize("success")
    with h5py.File(tmp_path / "ep_003.h5", "r+") as f:
        f.attrs["schema_version"] = 99
    make_v0(tmp_path / "ep_004.h5")
    (tmp_path / "notes.txt").write_text("not an episode")

    ds = Dataset(tmp_path)
    assert [e.name for e in ds] == ["ep_000.h5", "ep_001.h5", "ep_002.h5", "ep_003.h5", "ep_004.h5"]
    assert [e.ok for e in ds] == [True, True, False, False, True]
    assert ds[2].error == "ep_002.h5: file: not an HDF5 file"
    assert ds[3].error.startswith("ep_003.h5: schema_version: 99 is newer")
    assert (ds[1].task, ds[1].outcome, ds[1].n_frames, ds[1].duration) == ("stack_cubes", "failure", 6, 0.5)
    assert ds[0].annotation == "new" and ds[0].size > 0
    assert ds.cache_hits == 0
    with ds.open(4) as ep:  # migrated v0 opens like any other
        assert ep.meta["schema_version"] == 1

    # Annotate one episode (as the annotation module would): only that file is re-read.
    time.sleep(0.01)
    with h5py.File(tmp_path / "ep_001.h5", "r+") as f:
        g = f.create_group("annotations/auto")
        g["start"], g["end"] = np.array([0]), np.array([5])
        g["source"] = np.array(["auto"], dtype=h5py.string_dtype())
    ds2 = Dataset(tmp_path)
    assert ds2.cache_hits == 4
    assert (ds2[1].annotation, ds2[1].annotators) == ("proposed", ["auto"])
    assert [e.to_json() for i, e in enumerate(ds2) if i != 1] == [e.to_json() for i, e in enumerate(ds) if i != 1]
    assert json.loads((tmp_path / INDEX_NAME).read_text())["version"] == 2

    (tmp_path / INDEX_NAME).write_text("{broken")  # a damaged cache costs a rescan, nothing else
    assert [e.ok for e in Dataset(tmp_path)] == [True, True, False, False, True]


def test_reopen_of_many_episodes_is_fast(tmp_path):
    for i in range(100):
        tiny(tmp_path / f"ep_{i:04d}.h5")
    t0 = time.perf_counter()
    cold = Dataset(tmp_path)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = Dataset(tmp_path)
    t_warm = time.perf_counter() - t0
    print(f"100 episodes: cold index {t_cold * 1e3:.0f} ms, cached {t_warm * 1e3:.0f} ms")
    assert warm.cache_hits == 100 and len(cold) == 100 and all(e.ok for e in warm)
    assert t_warm < t_cold / 3


def test_info_command(tmp_path):
    record(tmp_path / "ep_000.h5", n=8, rgb_codec=None).finalize("success", notes="x")  # a v1 (lossless) file
    (tmp_path / "ep_001.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    # A crashed recording (dead writer) is recovered by `info` on the folder.
    w = record(tmp_path / "ep_002.h5", n=5)
    w.finalize("success")
    with h5py.File(tmp_path / "ep_002.h5", "r+") as f:
        f.attrs["state"] = "recording"
    marker_path(tmp_path / "ep_002.h5").write_text('{"pid": 1, "start_ticks": -1}')

    run = lambda *a: subprocess.run([sys.executable, "main.py", "info", *map(str, a)], cwd=REPO,
                                    capture_output=True, text=True, timeout=120)
    out = run(tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "ep_002.h5: recovered"
    assert lines[1].startswith("ep_000.h5: 8 frames, 0.3 s, 20 fps, task place_in_bin, robot xarm6, success,")
    assert lines[2].startswith("ep_001.h5: file: ")
    assert lines[1].endswith("schema v1 (lossless RGB; `main.py migrate` makes it v2)")  # which files migrate
    assert lines[3].startswith("ep_002.h5: 5 frames") and "unknown recovered" in lines[3]
    assert lines[3].endswith("MB, schema v2")
    assert lines[4] == "3 episodes, 2 ok, 1 bad"
    with EpisodeReader(tmp_path / "ep_002.h5") as ep:
        assert ep.meta["recovered"] == 1
    ok = run(tmp_path / "ep_000.h5")
    assert ok.returncode == 0 and ok.stdout.count("\n") == 1
    missing = run(tmp_path / "nope.h5")
    assert missing.returncode == 1 and missing.stdout.strip() == "nope.h5: file: not found"
