"""SIGKILL swept across the whole lifecycle (bench/kill_sweep.py): recording, finalize + proposals,
annotation saves and exports. Every kill point must leave a valid complete or recovered episode with
at most one second lost, the operator's verdict kept once the save began, and whole export files."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench import kill_sweep
from recorder.durable import atomic_dir, atomic_file


def _assert_all_pass(rows, capsys_or_none=None):
    table = "\n".join([kill_sweep.HEADER, *map(kill_sweep.format_row, rows)])
    print(table)
    bad = [r for r in rows if not r.ok]
    assert not bad, table


def test_kill_anywhere_in_an_episode_lifecycle_loses_nothing(tmp_path):
    rows = kill_sweep.sweep_episode(tmp_path, step=0.025, log=lambda *_: None)
    _assert_all_pass(rows)
    phases = {r.disk for r in rows}
    # The sweep really reached every stage: before the first frame, recording, saving, saved.
    assert any("marker:created" in d for d in phases), phases
    assert any("marker:recording" in d for d in phases), phases
    assert any("marker:finalizing" in d for d in phases), phases
    assert any(r.result.startswith("complete") for r in rows)


def test_kill_during_annotation_saves_keeps_the_last_or_next_version(tmp_path):
    _assert_all_pass(kill_sweep.sweep_annotation_saves(tmp_path, n=6, span=1.2, log=lambda *_: None))


def test_kill_during_exports_keeps_whole_outputs(tmp_path):
    _assert_all_pass(kill_sweep.sweep_exports(tmp_path, n=6, span=2.5, log=lambda *_: None))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_next_export_removes_a_killed_exports_temporaries(tmp_path):
    out = tmp_path / "la.jsonl"
    stale_file = tmp_path / f"la.jsonl.{_dead_pid()}.tmp"
    stale_file.write_text("half an export")
    with atomic_file(out) as tmp:
        tmp.write_text("new\n")
    assert out.read_text() == "new\n" and not stale_file.exists()

    clips = tmp_path / "clips"
    stale_dir = tmp_path / f"clips.{_dead_pid()}.partial"
    stale_dir.mkdir()
    (stale_dir / "clip_00000.npz").write_bytes(b"x")
    with atomic_dir(clips) as d:
        (d / "captions.jsonl").write_text("a\n")
    with atomic_dir(clips) as d:  # replacing an existing export swaps the folders
        (d / "captions.jsonl").write_text("b\n")
    assert (clips / "captions.jsonl").read_text() == "b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips", "la.jsonl"]


def test_a_failed_export_leaves_the_previous_one(tmp_path):
    clips = tmp_path / "clips"
    with atomic_dir(clips) as d:
        (d / "captions.jsonl").write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_dir(clips) as d:
            (d / "captions.jsonl").write_text("new, half")
            raise RuntimeError("disk full")
    assert (clips / "captions.jsonl").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["clips"]
