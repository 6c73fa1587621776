"""LeRobot v3.0 export: layout and contents checked here with pyarrow + PyAV, and loaded by the real
``lerobot`` 0.6.1 in its own venv (scripts/setup-lerobot-venv.sh; skipped when that venv is absent)."""
import json
import os
import subprocess
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from synthetic_pick_place import pick_place

from app.cli import main as cli_main
from recorder import export_lerobot as xl
from recorder.annotations import AnnotationDoc, Segment, save_annotations
from recorder.episode import EpisodeReader, EpisodeWriter
from recorder.export_lerobot import RGB_KEY, export_lerobot

ROOT = Path(__file__).resolve().parents[1]
H, W = 48, 64


def grey(ep: int, i: int) -> int:
    """The uniform grey level painted into frame ``i`` of episode ``ep``: 6 levels apart frame to frame,
    so a decoded frame names its index despite lossy video."""
    return 8 + (ep * 37 + i * 6) % 240


def make_episode(path: Path, ep: int, n: int, *, fps: float = 20.0, task: str = "place_in_bin",
                 instruction: str = "put the red cube in the bin") -> Path:
    syn = pick_place(ep, fps=fps)
    cam = {"K": np.array([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]]), "T_base_camera": np.eye(4),
           "width": W, "height": H, "depth_scale": 0.001, "model": "synthetic", "serial": "0"}
    w = EpisodeWriter(path, {"robot": "franka", "task": task, "instruction": instruction, "fps": fps}, cam,
                      queue_frames=n + 8)
    for i in range(n):
        joints = np.linspace(-1, 1, 7) + 0.01 * i + ep
        w.append(i / fps + 0.003 * (i % 3), np.full((H, W, 3), grey(ep, i), np.uint8),
                 np.full((H, W), 500 + i, np.uint16), syn.ee_pose[i], joints, float(syn.gripper[i]), syn.action[i])
    return w.finalize("success", propose=False)


SEGMENTS = [  # (start, end, primitive, instruction, quality): quality 1 is not exported
    (0, 8, "move", "reach above the red cube", 3),
    (8, 14, "grasp", "grasp the red cube", 3),
    (14, 20, "lift", "lift the cube", 1),
    (20, 30, "transport", "carry the cube to the bin", 2),
]


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    d = tmp_path_factory.mktemp("lr_eps")
    paths = [make_episode(d / "ep0.h5", 0, 30), make_episode(d / "ep1.h5", 1, 24, instruction="")]
    segs = [Segment(a, b, prim, instruction=text, quality=q, source="human") for a, b, prim, text, q in SEGMENTS]
    save_annotations(paths[0], AnnotationDoc("alice", 30, segs))
    return d, paths


def expected_arrays(paths, fps=20):
    """What the export must hold, read from the HDF5 episodes."""
    cols = {k: [] for k in ("state", "ee_pose", "action", "episode", "frame", "pixel", "depth_mm")}
    subtasks = []
    for e, p in enumerate(paths):
        with EpisodeReader(p) as r:
            n = r.n_frames
            cols["state"].append(np.hstack([r.joint_pos, r.gripper[:, None]]))
            cols["ee_pose"].append(r.ee_pose)
            cols["action"].append(r.action)
            cols["episode"].append(np.full(n, e))
            cols["frame"].append(np.arange(n))
            cols["pixel"].append(np.array([r.rgb(i)[0, 0, 0] for i in range(n)]))
            cols["depth_mm"].append(np.array([r.depth(i)[0, 0] * r.camera.depth_scale * 1000 for i in range(n)]))
        kept = [(round(float(np.float32(a / fps)), 6), text) for a, b, _, text, q in SEGMENTS if q >= 2] if e == 0 else []
        subtasks.append(kept)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["subtasks"] = np.array(json.dumps(subtasks))
    out["hw"] = np.array([H, W])
    return out


def test_export_layout_counts_and_contents_match_the_episodes(episodes, tmp_path):
    d, paths = episodes
    out = tmp_path / "ds"
    res = export_lerobot(paths, out, progress=False)
    exp = expected_arrays(paths)
    assert (res.episodes, res.frames, res.subtasks) == (2, 54, 3)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/info.json",
                     "meta/stats.json", "meta/tasks.parquet", f"videos/{RGB_KEY}/chunk-000/file-000.mp4"]
    assert not list(tmp_path.glob("ds.*.partial"))
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["robot_type"] == "franka"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 54, 2)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": "0:2"}
    f = info["features"]
    assert f["observation.state"]["shape"] == [8] and f["observation.state"]["names"][-1] == "gripper"
    assert f["action"]["shape"] == [8] and f["observation.ee_pose"]["names"] == ["x", "y", "z", "qx", "qy", "qz", "qw"]
    assert f[RGB_KEY]["dtype"] == "video" and f[RGB_KEY]["shape"] == [H, W, 3]
    assert f[RGB_KEY]["info"]["video.codec"] in ("av1", "h264") and f[RGB_KEY]["info"]["video.fps"] == 20
    assert f["language_persistent"]["dtype"] == "language" and f["language_events"]["dtype"] == "language"

    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.num_rows == 54 and pq.ParquetFile(out / "data/chunk-000/file-000.parquet").num_row_groups == 2
    for key, name in (("observation.state", "state"), ("observation.ee_pose", "ee_pose"), ("action", "action")):
        got = np.array(data.column(key).to_pylist(), dtype=np.float32)
        np.testing.assert_array_equal(got, exp[name].astype(np.float32))
    np.testing.assert_array_equal(data.column("index").to_numpy(), np.arange(54))
    np.testing.assert_array_equal(data.column("episode_index").to_numpy(), exp["episode"])
    np.testing.assert_array_equal(data.column("frame_index").to_numpy(), exp["frame"])
    # timestamps on the fps grid (the recorded clock jitters; LeRobot seeks video by timestamp)
    np.testing.assert_allclose(data.column("timestamp").to_numpy(), exp["frame"] / 20, atol=1e-6)
    # task: the instruction, else the task name
    tasks = pq.read_table(out / "meta/tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0, 1], "task": ["put the red cube in the bin", "place_in_bin"]}
    assert set(data.column("task_index").to_numpy()[exp["episode"] == 1]) == {1}
    # subtasks: LeRobot's language_persistent rows, the same on every frame of an episode
    lang = data.column("language_persistent").to_pylist()
    rows0 = lang[0]
    assert [(r["style"], r["role"], r["content"]) for r in rows0] == [
        ("subtask", "assistant", "reach above the red cube"), ("subtask", "assistant", "grasp the red cube"),
        ("subtask", "assistant", "carry the cube to the bin")]
    assert [r["timestamp"] for r in rows0] == pytest.approx([0.0, 0.4, 1.0])
    assert all(r["camera"] is None and r["tool_calls"] is None for r in rows0)
    assert all(x == rows0 for x in lang[:30]) and all(x == [] for x in lang[30:])
    assert all(x == [] for x in data.column("language_events").to_pylist())

    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["episode_index"], e["length"], e["dataset_from_index"], e["dataset_to_index"]) for e in eps] == [
        (0, 30, 0, 30), (1, 24, 30, 54)]
    assert eps[1][f"videos/{RGB_KEY}/from_timestamp"] == pytest.approx(1.5)
    assert eps[1][f"videos/{RGB_KEY}/to_timestamp"] == pytest.approx(2.7)
    assert eps[0]["tasks"] == ["put the red cube in the bin"]
    assert eps[0]["stats/observation.state/mean"] == pytest.approx(exp["state"][:30].mean(0), abs=1e-5)
    assert np.array(eps[0][f"stats/{RGB_KEY}/mean"]).shape == (3, 1, 1)
    stats = json.loads((out / "meta/stats.json").read_text())
    assert stats["action"]["max"] == pytest.approx(exp["action"].max(0), abs=1e-5)
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}

    # the mp4: decodable with PyAV, one frame per row, each frame the one painted for that row
    with av.open(str(out / f"videos/{RGB_KEY}/chunk-000/file-000.mp4")) as c:
        frames = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
    assert len(frames) == 54 and frames[0].shape == (H, W, 3)
    levels = np.array([fr.mean() for fr in frames])
    assert np.abs(levels - exp["pixel"]).max() <= 3


def test_export_command_refuses_bad_input_and_keeps_what_exists(episodes, tmp_path, capsys):
    d, paths = episodes
    out = tmp_path / "ds"
    assert cli_main(["export", "lerobot", str(d), "-o", str(out), "--depth"]) == 0
    assert "2 episodes (54 frames, 3 subtasks, 2 tasks) from 2 episodes" in capsys.readouterr().out
    assert (out / f"videos/{xl.DEPTH_KEY}/chunk-000/file-000.mp4").exists()
    before = (out / "meta/info.json").read_text()
    assert cli_main(["export", "lerobot", str(d), "-o", str(out)]) == 1  # never overwrites
    msg = capsys.readouterr().out.strip()
    assert msg.endswith("already exists; choose a new output folder") and "\n" not in msg
    assert (out / "meta/info.json").read_text() == before
    odd = make_episode(tmp_path / "odd.h5", 2, 5, fps=15.0)
    assert cli_main(["export", "lerobot", str(paths[0]), str(odd), "-o", str(tmp_path / "x")]) == 1
    assert "odd.h5: fps 15; LeRobot needs one integer fps" in capsys.readouterr().out
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("x.*.partial"))


def test_failed_export_leaves_no_dataset(episodes, tmp_path, monkeypatch):
    d, paths = episodes
    calls = {"n": 0}
    real = xl._Video.add

    def add(self, rgb, keyframe=False):
        calls["n"] += 1
        if calls["n"] == 40:  # in the second episode's video
            raise OSError("disk full")
        real(self, rgb, keyframe)

    monkeypatch.setattr(xl._Video, "add", add)
    with pytest.raises(OSError, match="disk full"):
        export_lerobot(paths, tmp_path / "ds", progress=False)
    assert list(tmp_path.iterdir()) == []


def _lerobot_python() -> Path | None:
    venv = Path(os.environ.get("ACTSTUDIO_LEROBOT_VENV", ROOT / ".lerobot-venv"))
    py = venv / "bin" / "python"
    return py if py.exists() else None


def _run_check(py: Path, out: Path, paths, tmp_path: Path) -> str:
    np.savez(tmp_path / "expected.npz", **expected_arrays(paths))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([str(py), str(ROOT / "scripts/lerobot_check.py"), str(out), str(tmp_path / "expected.npz")],
                          capture_output=True, text=True, timeout=300, env=env)
    log = proc.stdout + proc.stderr
    print(log)
    assert proc.returncode == 0 and "LEROBOT CHECK OK" in proc.stdout, log[-3000:]
    return proc.stdout


def test_files_roll_over_at_the_size_limits_and_chunks_fill_up(episodes, tmp_path, monkeypatch):
    """Past data_files_size_in_mb / video_files_size_in_mb the next episode starts a new file, as
    lerobot's writer does; every episode row says where its frames are."""
    d, paths = episodes
    monkeypatch.setattr(xl, "DATA_FILE_MB", 1e-6)
    monkeypatch.setattr(xl, "VIDEO_FILE_MB", 1e-6)
    out = tmp_path / "ds"
    export_lerobot(paths, out, progress=False)
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["data/file_index"], e[f"videos/{RGB_KEY}/file_index"]) for e in eps] == [(0, 0), (1, 1)]
    assert eps[1][f"videos/{RGB_KEY}/from_timestamp"] == 0.0 and eps[1][f"videos/{RGB_KEY}/to_timestamp"] == pytest.approx(1.2)
    assert pq.read_table(out / "data/chunk-000/file-001.parquet").column("index").to_pylist() == list(range(30, 54))
    with av.open(str(out / f"videos/{RGB_KEY}/chunk-000/file-001.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 24
    assert xl._next_file(0, 998) == (0, 999) and xl._next_file(0, 999) == (1, 0)
    py = _lerobot_python()
    if py is not None:
        _run_check(py, out, paths, tmp_path)


def test_export_loads_in_lerobot_0_6_1(episodes, tmp_path):
    """The real LeRobotDataset reads the export: items, decoded frames and subtasks match the HDF5."""
    py = _lerobot_python()
    if py is None:
        pytest.skip("no lerobot venv (build it with scripts/setup-lerobot-venv.sh, or set ACTSTUDIO_LEROBOT_VENV)")
    version = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('lerobot'))"],
                             capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip(f"{py}: lerobot not importable ({version.stderr.strip().splitlines()[-1:]})")
    assert version.stdout.strip() == "0.6.1"
    d, paths = episodes
    out = tmp_path / "ds"
    export_lerobot(paths, out, depth=True, progress=False)
    _run_check(py, out, paths, tmp_path)


def test_depth_export_is_lerobot_depth_video_within_a_quantisation_step(episodes, tmp_path):
    d, paths = episodes
    out = tmp_path / "ds"
    export_lerobot(paths, out, depth=True, progress=False)
    exp = expected_arrays(paths)
    info = json.loads((out / "meta/info.json").read_text())
    f = info["features"][xl.DEPTH_KEY]
    assert f["dtype"] == "video" and f["shape"] == [H, W, 1]
    assert f["info"]["is_depth_map"] is True and f["info"]["depth_unit"] == "mm"
    assert (f["info"]["video.codec"], f["info"]["video.pix_fmt"], f["info"]["video.channels"]) == ("hevc", "gray12le", 1)
    assert f["info"]["video.extra_options"] == {"x265-params": "lossless=1"} and f["info"]["video.use_log"] is True
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert eps[1][f"videos/{xl.DEPTH_KEY}/from_timestamp"] == pytest.approx(1.5)
    with av.open(str(out / f"videos/{xl.DEPTH_KEY}/chunk-000/file-000.mp4")) as c:
        codes = np.stack([fr.to_ndarray(format="gray12le") for fr in c.decode(video=0)])
    assert codes.shape == (54, H, W)
    # lossless: exactly the codes of the recorded depth; their inverse is within half a step of it
    np.testing.assert_array_equal(codes[:, 0, 0], xl.quantize_depth_mm(exp["depth_mm"]))
    lo, hi, sh = 10.0, 10000.0, 3500.0
    back = np.exp(codes[:, 0, 0] / 4095 * (np.log(hi + sh) - np.log(lo + sh)) + np.log(lo + sh)) - sh
    step = (exp["depth_mm"] + sh) * (np.log(hi + sh) - np.log(lo + sh)) / 4095
    assert np.all(np.abs(back - exp["depth_mm"]) <= step / 2 + 1e-3)
    stats = json.loads((out / "meta/stats.json").read_text())[xl.DEPTH_KEY]
    assert np.array(stats["min"]).shape == (1, 1, 1)
    assert stats["min"][0][0][0] == 500 and stats["max"][0][0][0] == 529  # mm, as recorded


def test_image_stats_from_histograms_equal_numpy_on_the_pixels():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, 12, 10, 3)).astype(np.uint8)
    frames[..., 1] //= 3  # channels differ
    s = xl._image_stats(xl.pixel_histogram(frames[:2]) + xl.pixel_histogram(frames[2:]), 4)
    px = frames.reshape(-1, 3) / 255.0
    for name, want in (("min", px.min(0)), ("max", px.max(0)), ("mean", px.mean(0)), ("std", px.std(0)),
                       ("q10", np.quantile(px, 0.1, axis=0, method="inverted_cdf")),
                       ("q50", np.quantile(px, 0.5, axis=0, method="inverted_cdf"))):
        assert s[name].shape == (3, 1, 1)
        np.testing.assert_allclose(s[name].ravel(), want, atol=1e-12, err_msg=name)
    assert s["count"].tolist() == [4]
