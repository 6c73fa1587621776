"""Crash safety: a real subprocess recording 640x480 RGB-D at 30 fps is SIGKILLed at random moments."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bench.kill_sweep import frame_tag
from recorder.episode import EpisodeReader, EpisodeWriter, marker_path
from recorder.recovery import recover_partial

REPO = Path(__file__).resolve().parents[1]

# The child prints the number of frames appended after every append, so the parent knows exactly
# how many the "app" believed were recorded when the kill hit.
CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from recorder.episode import EpisodeWriter
    from bench.kill_sweep import tag_frame
    H, W = 480, 640
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.clip(np.stack([xx * 0.3 + 60, yy * 0.3 + 80, xx * 0.1 + 100], -1)
                   + rng.normal(0, 2.5, (H, W, 3)), 0, 255).astype(np.uint8)
    depth0 = (800 + yy * 1.2 + rng.normal(0, 2, (H, W))).astype(np.uint16)
    cam = dict(K=np.eye(3), width=W, height=H, depth_scale=0.001, T_base_camera=np.eye(4))
    w = EpisodeWriter(sys.argv[1], dict(robot="franka", task="pick_cube", fps=30), cam)
    t0 = time.monotonic()
    for i in range(100000):
        rgb = base.copy(); tag_frame(rgb, i)
        depth = depth0.copy(); depth[0, 0] = i
        w.append(t0 + i / 30, rgb, depth, np.full(7, float(i)), np.full(7, i / 10), 0.5,
                 np.full(8, float(i)), {"expert_phase": f"phase{i}"})
        print(w.appended, w.lag, w.dropped, flush=True)
        time.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))
""")


def _record_and_kill(path: Path, kill_after: float) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    first = child.stdout.readline()  # the writer is up and the first frame queued
    assert first, "recorder child died before recording"
    time.sleep(kill_after)
    os.kill(child.pid, signal.SIGKILL)
    rest = child.stdout.read()
    child.wait()
    lines = [first, *rest.splitlines()]
    appended, lag, dropped = map(int, lines[-1].split())
    assert dropped == 0
    return appended


def test_sigkill_mid_episode_loses_at_most_one_second(tmp_path):
    rng = random.Random(1234)
    moments = [rng.uniform(0.3, 3.0) for _ in range(4)]
    for k, moment in enumerate(moments):
        path = tmp_path / f"ep_{k:03d}.h5"
        appended = _record_and_kill(path, moment)
        assert marker_path(path).exists(), "a killed recording must leave its marker"
        results = recover_partial(tmp_path)
        mine = [r for r in results if r.path == path]
        assert not marker_path(path).exists()
        if mine and mine[0].status == "empty":
            # Killed before the first frame reached the disk: allowed only if that is < 1 s of frames.
            print(f"kill at {moment:.2f}s: appended {appended}, nothing on disk yet")
            assert appended <= 30 and not path.exists()
            continue
        assert mine and mine[0].status == "recovered", results
        with EpisodeReader(path) as ep:
            lost = appended - ep.n_frames
            print(f"kill at {moment:.2f}s: appended {appended}, recovered {ep.n_frames}, lost {lost}")
            assert 0 <= lost <= 30, f"lost {lost} frames (> 1 s at 30 fps)"
            assert ep.meta["recovered"] == 1 and ep.outcome == "unknown" and ep.meta["state"] == "complete"
            # Content of every field still belongs to the right frame, at the first and last frame
            # (the RGB stream, GOP 10, is cut wherever the kill fell: mostly mid-GOP).
            for i in (0, ep.n_frames - 1):
                assert frame_tag(ep.rgb(i)) == i
                assert ep.depth(i)[0, 0] == i
                assert ep.ee_pose[i, 0] == i and ep.action[i, 7] == i
                assert ep.extras["expert_phase"][i] == f"phase{i}"
            np.testing.assert_allclose(ep.time, np.arange(ep.n_frames) / 30, atol=1e-9)


def test_live_writer_is_not_recovered_and_empty_partial_is_removed(tmp_path):
    cam = dict(K=np.eye(3), width=8, height=6, depth_scale=0.001)
    w = EpisodeWriter(tmp_path / "live.h5", dict(robot="franka", task="t"), cam)
    w.append(0.0, np.zeros((6, 8, 3), np.uint8), np.zeros((6, 8), np.uint16), np.zeros(7), np.zeros(7), 1.0, np.zeros(8))
    # A partial left by a dead process (pid 1's start time never matches) that never got a frame.
    dead = tmp_path / "dead.h5"
    import h5py
    with h5py.File(dead, "w", libver="latest") as f:
        f.attrs.update({"schema": "actstudio.episode", "schema_version": 1, "state": "recording"})
    marker_path(dead).write_text('{"pid": 1, "start_ticks": -1}')
    results = {r.path.name: r.status for r in recover_partial(tmp_path)}
    assert results == {"live.h5": "live", "dead.h5": "empty"}
    assert not dead.exists() and not marker_path(dead).exists()
    w.finalize("success")
    assert recover_partial(tmp_path) == []


def test_crashed_file_without_marker_is_recovered_by_the_index(tmp_path):
    from recorder.dataset import Dataset
    cam = dict(K=np.eye(3), width=8, height=6, depth_scale=0.001)
    w = EpisodeWriter(tmp_path / "src" / "a.h5", dict(robot="franka", task="t", fps=30), cam, flush_interval=0.05)
    for i in range(20):
        w.append(i / 30, np.full((6, 8, 3), i, np.uint8), np.zeros((6, 8), np.uint16), np.zeros(7), np.zeros(7), 1.0,
                 np.zeros(8), block=True)
    deadline = time.monotonic() + 5
    while w.flushed < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    # A byte copy taken while the writer holds the file open is exactly what a SIGKILL leaves behind.
    (tmp_path / "crashed.h5").write_bytes((tmp_path / "src" / "a.h5").read_bytes())
    w.finalize("success")
    ds = Dataset(tmp_path)
    assert [str(r) for r in ds.recovered] == ["crashed.h5: recovered"]
    assert ds[0].ok and ds[0].n_frames == 20 and ds[0].recovered
    with ds.open(0) as ep:
        assert abs(int(ep.rgb(19)[0, 0, 0]) - 19) <= 2  # H.264: a flat frame comes back within a level or two


def _mid_gop_copy(tmp_path: Path, n: int = 17) -> tuple[Path, int]:
    """A byte copy of a v2 take while recording, after n frames (GOP 7 at 20 fps: mid-GOP)."""
    import shutil
    from bench.kill_sweep import tag_frame
    cam = dict(K=np.eye(3), width=64, height=48, depth_scale=0.001)
    src = tmp_path / "src" / "a.h5"
    w = EpisodeWriter(src, dict(robot="franka", task="t", fps=20), cam, flush_interval=0.05)
    rng = np.random.default_rng(0)
    base = rng.integers(60, 90, (48, 64, 3), dtype=np.uint8)
    for i in range(n):
        rgb = base.copy()
        tag_frame(rgb, i)
        w.append(i / 20, rgb, np.full((48, 64), i, np.uint16), np.zeros(7), np.zeros(7), 1.0, np.zeros(8), block=True)
    deadline = time.monotonic() + 5
    while w.flushed < n and time.monotonic() < deadline:
        time.sleep(0.01)
    path = tmp_path / "crashed.h5"
    shutil.copyfile(src, path)  # what a SIGKILL at this instant leaves
    w.discard()
    shutil.rmtree(tmp_path / "src")
    marker_path(path).write_text('{"pid": 1, "start_ticks": -1, "phase": "recording"}')
    return path, n


def test_video_cut_mid_gop_keeps_every_whole_packet(tmp_path):
    path, n = _mid_gop_copy(tmp_path)
    assert [r.status for r in recover_partial(tmp_path)] == ["recovered"]
    with EpisodeReader(path) as ep:
        assert ep.schema_version == 2 and ep.n_frames == n  # 17 = two GOPs of 7 + 3 frames of the third
        assert [frame_tag(ep.rgb(i)) for i in (0, 13, 14, n - 1)] == [0, 13, 14, n - 1]
        assert ep.depth(n - 1)[5, 5] == n - 1


def test_video_packet_cut_mid_write_is_dropped_not_shown(tmp_path):
    """The stream ends inside the last packet (bytes missing/garbled): the frames before it survive."""
    import h5py
    path, n = _mid_gop_copy(tmp_path)
    with h5py.File(path, "r", swmr=True, libver="latest") as f:
        off, size = (int(v) for v in f["obs/rgb/index"][n - 1, :2])
        ds = f["obs/rgb/packets"]
        k = off + size // 2
        at = ds.id.get_chunk_info_by_coord((k - k % ds.chunks[0],)).byte_offset + k % ds.chunks[0]
    with open(path, "r+b") as fh:  # the tail of the last packet never landed
        fh.seek(at)
        fh.write(bytes(size - size // 2))
    assert [r.status for r in recover_partial(tmp_path)] == ["recovered"]
    with EpisodeReader(path) as ep:
        assert ep.n_frames == n - 1 and frame_tag(ep.rgb(n - 2)) == n - 2


# ------------------------------------------------------------------------------------------------
# Kills around the save (issue 12): the file is never deleted, the verdict is kept.

def _take(path: Path, n: int = 30, **kw) -> EpisodeWriter:
    cam = dict(K=np.eye(3), width=8, height=6, depth_scale=0.001)
    w = EpisodeWriter(path, dict(robot="franka", task="t", fps=20), cam, **kw)
    for i in range(n):
        w.append(i / 20, np.full((6, 8, 3), i, np.uint8), np.zeros((6, 8), np.uint16), np.r_[0.4 + i / 100, 0, 0.2, 0, 0, 0, 1],
                 np.zeros(7), 1.0 if i < n // 2 else 0.3, np.zeros(8), block=True)
    return w


def _as_if_dead(path: Path) -> None:
    """Rewrite the marker as if its writer process had died (pid 1's start time never matches)."""
    import json
    marker = json.loads(marker_path(path).read_text())
    marker_path(path).write_text(json.dumps({**marker, "pid": 1, "start_ticks": -1}))


OLD_FINALIZE_CHILD = textwrap.dedent("""
    import os, signal, sys, h5py, numpy as np
    from recorder.episode import EpisodeWriter, _STOP
    from recorder.proposals import write_into_open_file
    cam = dict(K=np.eye(3), width=8, height=6, depth_scale=0.001)
    w = EpisodeWriter(sys.argv[1], dict(robot="franka", task="t", fps=20), cam)
    for i in range(30):
        w.append(i / 20, np.full((6, 8, 3), i, np.uint8), np.zeros((6, 8), np.uint16),
                 np.r_[0.4 + i / 100, 0, 0.2, 0, 0, 0, 1], np.zeros(7), 1.0, np.zeros(8), block=True)
    w._stop(_STOP)
    # What finalize did before issue 12: the recorded file itself opened r+ (no SWMR) ...
    f = h5py.File(sys.argv[1], "r+")
    write_into_open_file(f)
    f.attrs["outcome"] = "success"
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # ... and the process killed while it had it open
""")


def test_file_left_open_for_write_by_a_killed_finalize_is_recovered_not_deleted(tmp_path):
    """The bug of issue 12: `info` printed 'unreadable partial file removed' and deleted 6.7 MB."""
    import h5py
    path = tmp_path / "ep.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", OLD_FINALIZE_CHILD, str(path)], env=env, timeout=60)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    results = recover_partial(tmp_path)
    assert [r.status for r in results] == ["recovered"], results
    with EpisodeReader(path) as ep:
        assert ep.n_frames == 30 and abs(int(ep.rgb(29)[0, 0, 0]) - 29) <= 2 and ep.meta["recovered"] == 1
        assert "auto" in ep.annotations  # recovery proposes segments too


def test_unreadable_file_is_moved_aside_never_deleted(tmp_path):
    path = tmp_path / "ep.h5"
    junk = b"\x89HDF\r\n\x1a\n" + os.urandom(5000)
    path.write_bytes(junk)
    marker_path(path).write_text('{"pid": 1, "start_ticks": -1, "phase": "recording"}')
    results = recover_partial(tmp_path)
    assert [r.status for r in results] == ["kept"] and "not deleted" in results[0].message
    assert (tmp_path / "ep.h5.unreadable").read_bytes() == junk
    assert not path.exists() and not marker_path(path).exists()
    assert recover_partial(tmp_path) == []  # reported once, then left alone


def test_kill_while_saving_keeps_the_operators_verdict(tmp_path):
    """The marker carries outcome + notes from the moment finalize starts writing the copy."""
    from recorder.episode import _STOP, _write_marker, finalizing_path
    path = tmp_path / "ep.h5"
    w = _take(path)
    w._stop(_STOP)  # the writer closed the partial; finalize then marks the verdict ...
    _write_marker(path, phase="finalizing", outcome="failure", notes="dropped it")
    _as_if_dead(path)
    finalizing_path(path).write_bytes(path.read_bytes()[:1000])  # ... and died half-way through the copy
    results = recover_partial(tmp_path)
    assert [r.status for r in results] == ["recovered"]
    with EpisodeReader(path) as ep:
        assert ep.n_frames == 30 and ep.outcome == "failure" and ep.meta["recovered"] == 1
        assert ep.meta["notes"].startswith("dropped it") and "while saving" in ep.meta["notes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep.h5"]


def test_kill_after_the_save_before_the_marker_went_keeps_the_complete_episode(tmp_path):
    from recorder.episode import _write_marker
    path = tmp_path / "ep.h5"
    _take(path).finalize("success", notes="fine")
    _write_marker(path, phase="finalizing", outcome="success", notes="fine")
    _as_if_dead(path)
    mtime = path.stat().st_mtime_ns
    results = recover_partial(tmp_path)
    assert [r.status for r in results] == ["complete"] and results[0].n_frames == 30
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    with EpisodeReader(path) as ep:
        assert ep.outcome == "success" and ep.meta["recovered"] == 0


def test_killed_before_the_first_frame_leaves_nothing_behind(tmp_path):
    from recorder.episode import creating_path
    path = tmp_path / "ep.h5"
    cam = dict(K=np.eye(3), width=8, height=6, depth_scale=0.001)
    w = EpisodeWriter(path, dict(robot="franka", task="t", fps=20), cam)
    assert creating_path(path).exists() and not path.exists()  # no frame yet: not under its name
    marker_path(path).write_text('{"pid": 1, "start_ticks": -1, "phase": "created"}')  # as if we died
    results = recover_partial(tmp_path)
    assert [r.status for r in results] == ["empty"]
    w.discard()
    assert list(tmp_path.iterdir()) == []


def test_h5_consistency_flags_checksum_matches_hdf5(tmp_path):
    """recorder/h5flags.lookup3 must reproduce HDF5's superblock checksum, or clearing would break files."""
    import h5py

    from recorder.h5flags import clear_write_flags, superblock_flags
    p = tmp_path / "f.h5"
    with h5py.File(p, "w", libver="latest") as f:
        f["x"] = np.arange(3)
    assert superblock_flags(p) == 0  # a checksum mismatch would give None
    f = h5py.File(p, "r+")
    assert superblock_flags(p) == 1 and not clear_write_flags(p)  # held open (flock): refused
    f.close()


def test_app_is_not_asked_about_takes_killed_before_their_first_frame(tmp_path):
    from recorder.recovery import dead_partials
    shell = tmp_path / "shell.h5"
    w = EpisodeWriter(shell, dict(robot="franka", task="t", fps=20), dict(K=np.eye(3), width=8, height=6, depth_scale=0.001))
    w._stop(_STOP_TOKEN())
    _as_if_dead(shell)
    crashed = tmp_path / "crashed.h5"
    w2 = _take(crashed)
    w2._stop(_STOP_TOKEN())
    _as_if_dead(crashed)
    assert dead_partials(tmp_path) == [crashed]  # the shell is cleaned up, not asked about
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crashed.h5", "crashed.h5.recording"]


def _STOP_TOKEN():
    from recorder.episode import _STOP
    return _STOP
