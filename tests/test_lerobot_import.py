"""LeRobot v3 datasets in the Annotate tab's model: open, scrub, propose/edit, save subtasks back
(atomic, frame data untouched), reopen; crash atomicity of the save. Datasets come from our
exporter here (no lerobot needed); tests/test_lerobot_import_real.py uses lerobot's own writer."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_export_lerobot import SEGMENTS, grey, make_episode

from app.annotate_controller import PROPOSALS, AnnotateController
from app.episode_source import LeRobotSource, source_for
from app.lerobot_browse import scan_lerobot
from recorder import export_lerobot as xl
from recorder import lerobot_annotations as la
from recorder.annotations import AnnotationDoc, Segment, save_annotations
from recorder.lerobot_dataset import (
    LeRobotError,
    episode_path,
    is_lerobot_dataset,
    lerobot_ref,
    read_info,
)

ROOT = Path(__file__).resolve().parents[1]
FRAME_COLUMNS = ("observation.state", "observation.ee_pose", "action", "timestamp", "frame_index", "episode_index",
                 "index", "task_index")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two exports of the same two episodes: ``sub`` with ep0's 3 verified subtasks, ``split``
    without language columns and with one data/video file per episode (size limits forced low)."""
    d = tmp_path_factory.mktemp("lr_import")
    paths = [make_episode(d / "ep0.h5", 0, 30), make_episode(d / "ep1.h5", 1, 24)]
    mp = pytest.MonkeyPatch()   # before annotating: no language columns; one data/video file per episode
    mp.setattr(xl, "DATA_FILE_MB", 1e-6)
    mp.setattr(xl, "VIDEO_FILE_MB", 1e-6)
    xl.export_lerobot(paths, d / "split", progress=False)
    mp.undo()
    save_annotations(paths[0], AnnotationDoc("alice", 30, [Segment(a, b, p, instruction=t, quality=q, source="human")
                                                           for a, b, p, t, q in SEGMENTS]))
    xl.export_lerobot(paths, d / "sub", progress=False)
    return d


@pytest.fixture
def ds(tmp_path, datasets):
    return Path(shutil.copytree(datasets / "sub", tmp_path / "ds"))


def digest(root: Path, skip_data: bool = False) -> dict[str, str]:
    """sha256 of every file except our sidecar (and data parquet when ``skip_data``)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not rel.startswith("meta/actstudio") and not rel.startswith("meta/.actstudio") \
                and not (skip_data and rel.startswith("data/")):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def frame_columns(root: Path):
    """Every frame column of every data file, in file order (language columns left out)."""
    import pyarrow as pa
    return pa.concat_tables([pq.read_table(f, columns=list(FRAME_COLUMNS))
                             for f in sorted((root / "data").glob("*/*.parquet"))])


def subtasks(root: Path) -> dict[int, list[tuple[float, str]]]:
    out: dict[int, list] = {}
    for f in sorted((root / "data").glob("*/*.parquet")):
        t = pq.read_table(f)
        if "language_persistent" not in t.column_names:
            continue
        for e, rows in zip(t.column("episode_index").to_pylist(), t.column("language_persistent").to_pylist()):
            got = [(round(r["timestamp"], 4), r["content"]) for r in rows if r["style"] == "subtask"]
            assert out.setdefault(e, got) == got   # the same on every frame of the episode
    return out


def open_(qtbot, c, path):
    with qtbot.waitSignal(c.episodeOpened, timeout=15000):
        c.open_episode(path)
    return c.episode


def save(qtbot, c):
    with qtbot.waitSignal(c._autosave._saved, timeout=15000) as blocker:
        c.save_now(queue_behind=True)
    assert blocker.args[2] == "", blocker.args[2]


@pytest.fixture
def ctl(qtbot):
    c = AnnotateController("bob")
    yield c
    c.shutdown()


def test_detect_list_and_refuse_other_versions(ds, tmp_path):
    assert is_lerobot_dataset(ds) and not is_lerobot_dataset(tmp_path)
    rows, err = scan_lerobot(ds)
    assert err == "" and [(r.name, r.n_frames, r.ok) for r in rows] == [("episode_000000", 30, True),
                                                                         ("episode_000001", 24, True)]
    assert rows[0].task == "put the red cube in the bin" and rows[1].duration == pytest.approx(1.2)
    assert lerobot_ref(rows[1].path) == (ds, 1) and lerobot_ref(ds / "meta") is None
    assert isinstance(source_for(rows[1].path), LeRobotSource)
    old = Path(shutil.copytree(ds, tmp_path / "v21"))
    info = json.loads((old / "meta/info.json").read_text())
    (old / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    assert not is_lerobot_dataset(old)
    with pytest.raises(LeRobotError, match="codebase_version v2.1; only v3.x"):
        read_info(old)


def test_scrub_decodes_the_exported_frames_in_a_shared_mp4(ds):
    """Episode 1 starts 1.5 s into the same mp4 as episode 0: random access, steps and jumps back
    all give the painted frame (within codec error), with few keyframe seeks."""
    files = {p: p.stat().st_mtime_ns for p in ds.rglob("*")}
    src = source_for(episode_path(ds, 1))
    v = src.read()
    assert (v.n_frames, v.fps, v.has_images, v.cannot_propose) == (24, 20.0, True, "")
    assert len(src.load_docs()) == 0 and {p: p.stat().st_mtime_ns for p in ds.rglob("*")} == files   # opening writes nothing
    fr = src.frames()
    try:
        order = [17, 3, 4, 5, 6, 23, 0, 12, 11, 10, 22, 1]
        for i in order:
            seeks = fr._v.seeks
            rgb, depth = fr.read(i, True)
            assert depth is None and rgb.shape == (48, 64, 3)
            assert abs(float(rgb.mean()) - grey(1, i)) <= 3, (i, rgb.mean(), grey(1, i))
            if i in (4, 5, 6):
                assert fr._v.seeks == seeks   # a step decodes on, no seek
        with pytest.raises(IndexError):
            fr.read(24, False)
    finally:
        fr.close()


def test_open_edit_save_reopen_keeps_frames_and_writes_subtasks(qtbot, ctl, ds):
    before = digest(ds, skip_data=True)
    frames_before = frame_columns(ds)
    ep = open_(qtbot, ctl, episode_path(ds, 0))
    # the dataset's own subtasks (from our export: 3 verified segments) are the starting point
    assert set(ctl.docs) == {la.IMPORTED} and [s.instruction for s in ctl.doc.segments] == [
        "reach above the red cube", "grasp the red cube", "carry the cube to the bin"]
    assert ep.meta["source"] == "lerobot" and set(ep.curves()) == {"gripper", "speed", "height"}
    msgs = []
    ctl.message.connect(msgs.append)
    with qtbot.waitSignal(ctl.busyChanged, timeout=15000, check_params_cb=lambda text: text == ""):
        assert ctl.propose()
    assert PROPOSALS in ctl.docs and len(ctl.docs[PROPOSALS]), msgs
    assert "keyframes" in la.read_sidecar(ds)["episodes"]["0"]    # proposals live in the sidecar only
    assert ctl.move_boundary(0, "end", 6)
    assert ctl.set_field(1, "instruction", "close the gripper on the cube")
    assert ctl.set_field(1, "quality", 3) and ctl.set_field(1, "confidence", 2)
    assert ctl.set_field(2, "quality", 1)   # scored bad: not a LeRobot subtask
    save(qtbot, ctl)
    assert digest(ds, skip_data=True) == before          # videos, meta/episodes, tasks, stats, info untouched
    assert frame_columns(ds).equals(frames_before)       # every frame value as it was
    assert subtasks(ds)[0] == [(0.0, "reach above the red cube"), (0.3, "close the gripper on the cube")]
    assert subtasks(ds)[1] == []
    side = la.read_sidecar(ds)
    assert side["version"] == 2 and [h["version"] for h in side["history"]] == [1, 2]   # proposals, then bob's save
    assert side["history"][1]["subtasks"]["rows"] == [[0.0, "reach above the red cube"],
                                                       [pytest.approx(0.3), "close the gripper on the cube"]]
    assert not list(ds.rglob("*.tmp")) and not (ds / la.JOURNAL).exists()
    ctl.close_episode()

    other = AnnotateController("carol")
    try:
        open_(qtbot, other, episode_path(ds, 0))
        assert set(other.docs) == {"bob", PROPOSALS, la.IMPORTED}   # the dataset's original subtasks kept
        assert [s.instruction for s in other.docs[la.IMPORTED].segments] == [
            "reach above the red cube", "grasp the red cube", "carry the cube to the bin"]
        bob = other.docs["bob"]
        assert (bob[0].end, bob[1].instruction, bob[1].quality, bob[1].confidence, bob[2].quality) == (
            6, "close the gripper on the cube", 3, 2, 1)
        assert other.doc.segments == other.docs[PROPOSALS].segments   # carol starts from the proposals
    finally:
        other.shutdown()
    rows, _ = scan_lerobot(ds)
    assert (rows[0].annotation, rows[0].annotators) == ("proposed", ["auto", "bob"])   # no segment marked human yet


def test_first_save_adds_language_columns_to_every_shard(qtbot, ctl, datasets, tmp_path):
    """A dataset without language columns: every data file gains both (empty for other episodes)
    and info.json declares them (LeRobot casts every shard to the declared features)."""
    root = Path(shutil.copytree(datasets / "split", tmp_path / "split"))
    info0 = json.loads((root / "meta/info.json").read_text())
    assert "language_persistent" not in info0["features"]
    frames_before = frame_columns(root)
    open_(qtbot, ctl, episode_path(root, 1))
    assert ctl.fill_gap(0)                            # no segments yet: one over the whole episode
    assert ctl.split_at(10) and ctl.set_field(0, "instruction", "reach") and ctl.set_field(1, "instruction", "grasp")
    save(qtbot, ctl)
    assert frame_columns(root).equals(frames_before)
    assert subtasks(root) == {0: [], 1: [(0.0, "reach"), (0.5, "grasp")]}
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["language_persistent"] == {"dtype": "language", "shape": [1], "names": None}
    assert {k: v for k, v in info.items() if k != "features"} == {k: v for k, v in info0.items() if k != "features"}
    for f in sorted((root / "data").glob("*/*.parquet")):
        meta = pq.ParquetFile(f).metadata
        assert meta.num_row_groups == 1   # one episode per file here, one row group per episode


def test_dataset_without_ee_pose_says_what_is_missing_and_segments_by_hand(qtbot, ctl, ds):
    info = json.loads((ds / "meta/info.json").read_text())
    del info["features"]["observation.ee_pose"]
    (ds / "meta/info.json").write_text(json.dumps(info))
    f = ds / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(f).drop_columns(["observation.ee_pose"]), f)
    ep = open_(qtbot, ctl, episode_path(ds, 1))
    assert ep.ee_pose is None and "observation.ee_pose" in ep.cannot_propose and "by hand" in ep.cannot_propose
    assert set(ep.curves()) == {"gripper", "state speed", "action speed"}
    with qtbot.waitSignal(ctl.message, timeout=2000) as msg:
        assert not ctl.propose()
    assert "observation.ee_pose" in msg.args[0]
    assert ctl.fill_gap(5) and ctl.split_at(12) and ctl.relabel(1, "grasp")
    assert [(s.start, s.end, s.primitive) for s in ctl.doc.segments] == [(0, 12, "move"), (12, 24, "grasp")]
    save(qtbot, ctl)
    assert subtasks(ds)[1] == [(0.0, "move"), (0.6, "grasp")]


CRASH_SCRIPT = """
import os, signal, sys
from recorder import lerobot_annotations as la
from recorder.annotations import AnnotationDoc, Segment
root, step = sys.argv[1], sys.argv[2]
def hook(name):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)
la._crash_hook = hook
doc = AnnotationDoc("bob", 24, [Segment(0, 10, "move", instruction="reach", source="human"),
                                Segment(10, 24, "grasp", instruction="grasp", source="human")])
la.save_docs(root, 1, [doc], subtasks_from="bob")
print("SAVED")
"""


@pytest.mark.parametrize("step", ["data-written", "temporaries-written", "committed", "replaced-0", "replaced-1",
                                  "replaced-2", "none"])
def test_killed_save_leaves_the_old_or_the_new_version(datasets, tmp_path, step):
    """SIGKILL at each step of a first save (2 data files + info.json + sidecar change): after the
    next open (recover) the dataset is wholly the old version (killed before the journal was
    committed) or wholly the new one — never a mix — and frame data are untouched either way."""
    root = Path(shutil.copytree(datasets / "split", tmp_path / "ds"))
    frames_before, info_before = frame_columns(root), (root / "meta/info.json").read_text()
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(root), step], cwd=ROOT, capture_output=True, check=False,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (proc.returncode == 0) == (step == "none"), proc.stderr[-2000:]
    killed_after_commit = step in ("committed", "replaced-0", "replaced-1", "replaced-2")
    assert (root / la.JOURNAL).exists() == killed_after_commit
    la.recover(root)   # what every open does
    assert not (root / la.JOURNAL).exists() and not list(root.rglob("*.tmp"))
    assert frame_columns(root).equals(frames_before)
    if step in ("data-written", "temporaries-written"):   # old version, exactly
        assert (root / "meta/info.json").read_text() == info_before and subtasks(root) == {}
        assert la.read_sidecar(root)["version"] == 0
    else:                                                  # new version, everywhere
        assert subtasks(root) == {0: [], 1: [(0.0, "reach"), (0.5, "grasp")]}
        assert "language_persistent" in json.loads((root / "meta/info.json").read_text())["features"]
        side = la.read_sidecar(root)
        assert side["version"] == 1 and side["episodes"]["1"]["docs"]["bob"]["segments"][1]["instruction"] == "grasp"


def test_save_keeps_other_language_rows_and_history(ds):
    """Rows of other styles (a plan, memory …) stay; each save is a new version with the earlier
    ones kept in the history."""
    import pyarrow as pa
    f = ds / "data/chunk-000/file-000.parquet"
    t = pq.read_table(f)
    col = t.column("language_persistent").to_pylist()
    plan = {"role": "assistant", "content": "pick then place", "style": "plan", "timestamp": 0.0, "camera": None,
            "tool_calls": None}
    col = [[plan, *rows] if e == 0 else rows for e, rows in zip(t.column("episode_index").to_pylist(), col)]
    typ = t.schema.field("language_persistent").type
    persistent_s, _ = xl._language_types(pa.string())
    t = t.set_column(t.schema.get_field_index("language_persistent"), pa.field("language_persistent", typ),
                     pa.array(col, type=persistent_s).cast(typ))
    pq.write_table(t, f)
    for k, text in enumerate(("first", "second")):
        doc = AnnotationDoc("bob", 30, [Segment(0, 30, "move", instruction=text, source="human")])
        assert la.save_docs(ds, 0, [doc], subtasks_from="bob") == k + 1
    rows = pq.read_table(f).column("language_persistent")[0].as_py()
    assert [(r["style"], r["content"]) for r in rows] == [("plan", "pick then place"), ("subtask", "second")]
    hist = la.read_sidecar(ds)["history"]
    assert [h["subtasks"]["rows"][0][1] for h in hist] == ["first", "second"]


def test_label_suggestions_read_lerobot_frames(qtbot, ctl, ds):
    """The encoder's label suggestions work on a LeRobot episode (frames decoded from its mp4)."""
    ckpt = ROOT / "assets/checkpoints/encoder_sim.pt"
    if not ckpt.exists():
        pytest.skip("no bundled encoder checkpoint")
    svc = ctl.suggestions
    svc.set_checkpoint(ckpt)
    path = episode_path(ds, 1)
    with qtbot.waitSignal(svc.ready, timeout=60000) as got:
        assert svc.request(path, 2, 20) is None
    key, result = got.args
    assert key == svc.key(path, 2, 20) and len(result) == 3 and svc.error == ""
    assert abs(sum(p for _, p in result) - 1) <= 1 and all(0 <= p <= 1 for _, p in result)


def test_foreign_subtask_rows_become_segments_on_the_frame_grid():
    times = np.arange(40, dtype=np.float32) / 20 + np.float32(0.0005)   # a clock slightly off the grid
    rows = [{"timestamp": float(times[12]), "content": "grasp the mug", "style": "subtask"},
            {"timestamp": 0.0, "content": "approach", "style": "subtask"},
            {"timestamp": 99.0, "content": "after the end", "style": "subtask"}]
    doc = la.subtasks_to_doc(rows, times)
    assert [(s.start, s.end, s.primitive, s.instruction) for s in doc.segments] == [
        (0, 12, "move", "approach"), (12, 40, "grasp", "grasp the mug")]
    back = la.subtask_rows(doc, times)
    assert [(r["timestamp"], r["content"]) for r in back] == [(float(times[0]), "approach"),
                                                              (float(times[12]), "grasp the mug")]


def test_long_gop_h264_episode_inside_a_file(tmp_path):
    """Another writer's H.264 with a keyframe every 30 frames; the episode starts 1 s into the file:
    jumps back and forth and steps all give the right frame."""
    import av

    from recorder.lerobot_dataset import VideoFrames
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", 20, options={"g": "30", "crf": "18", "preset": "veryfast"})
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for i in range(90):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 9) % 250, np.uint8), format="rgb24")
            f.pts = i
            for pkt in st.encode(f):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    v = VideoFrames(path, 1.0, 20, 50, capacity=4)
    try:
        for i in (40, 2, 3, 4, 49, 0, 33, 31, 11, 12, *range(50)):
            assert abs(float(v.rgb(i).mean()) - ((i + 20) * 9) % 250) <= 3, i
        assert v._gop == 30                    # keyframes at file frames 28 and 58 (x264 scene cut)
        v.rgb(9)
        seeks = v.seeks
        assert abs(float(v.rgb(29).mean()) - (49 * 9) % 250) <= 3 and v.seeks == seeks   # within a GOP: decodes on
    finally:
        v.close()
