"""The Annotate tab on a LeRobot v3 dataset folder, driven like a user: the browser lists its
episodes, the video scrubs (frames decoded from the shared mp4), Propose, key edits, the
inspector, Ctrl+S; the subtasks land in the dataset's parquet. The screenshot
(ACTSTUDIO_SCREENSHOTS=docs/screenshots) is docs/screenshots/annotate_lerobot.png."""
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PySide6 import QtCore, QtWidgets
from PySide6.QtTest import QTest
from synthetic_pick_place import pick_place
from test_gui_annotate import Settings

from recorder.episode import EpisodeWriter
from recorder.export_lerobot import export_lerobot
from recorder.lerobot_dataset import episode_path
from widgets.annotate_tab import ANNOTATOR_KEY, AnnotateTab

Qt = QtCore.Qt
H, W = 96, 128


def scene(ee: np.ndarray, grip: float, cube: np.ndarray) -> np.ndarray:
    """A top-down sketch of the pick-and-place: table, bin, cube, gripper (so frames differ visibly)."""
    img = np.empty((H, W, 3), np.uint8)
    img[:] = (96, 84, 70)
    img[10:40, 88:120] = (60, 60, 140)                                   # bin

    def px(p):
        return int(np.clip(H / 2 - p[1] * 160, 4, H - 5)), int(np.clip((p[0] - 0.3) * 220 + 16, 4, W - 5))

    cy, cx = px(cube)
    img[cy - 4:cy + 4, cx - 4:cx + 4] = (200, 40, 40)
    gy, gx = px(ee)
    half = int(3 + 5 * grip)
    img[gy - 1:gy + 2, gx - half - 2:gx + half + 3] = (230, 230, 230)
    img[gy - 5:gy + 6, gx - half - 2:gx - half] = img[gy - 5:gy + 6, gx + half + 1:gx + half + 3] = (230, 230, 230)
    return img


def make_episode(path: Path, seed: int) -> Path:
    syn = pick_place(seed, fps=20.0)
    cam = {"K": np.array([[80.0, 0, W / 2], [0, 80.0, H / 2], [0, 0, 1]]), "T_base_camera": np.eye(4),
           "width": W, "height": H, "depth_scale": 0.001, "model": "synthetic", "serial": "0"}
    w = EpisodeWriter(path, {"robot": "franka", "task": "pick_place", "instruction": "put the red cube in the bin",
                             "fps": 20.0}, cam, queue_frames=len(syn.gripper) + 8)
    grip = (syn.gripper - syn.gripper.min()) / max(1e-6, np.ptp(syn.gripper))
    held = grip < 0.5
    cube = syn.ee_pose[0, :3].copy()
    cube[:2] = syn.ee_pose[np.argmax(held), :2] if held.any() else cube[:2]
    for i in range(len(syn.gripper)):
        if held[i]:
            cube = syn.ee_pose[i, :3]
        w.append(i / 20.0, scene(syn.ee_pose[i], grip[i], cube), np.full((H, W), 600, np.uint16), syn.ee_pose[i],
                 np.zeros(7), float(syn.gripper[i]), syn.action[i])
    return w.finalize("success", propose=False)


@pytest.fixture(scope="module")
def lerobot_template(tmp_path_factory):
    d = tmp_path_factory.mktemp("lr_gui")
    export_lerobot([make_episode(d / "a.h5", 0), make_episode(d / "b.h5", 3)], d / "pick_place_lerobot", progress=False)
    return d / "pick_place_lerobot"


@pytest.fixture
def tab(qtbot, tmp_path, lerobot_template):
    ds = Path(shutil.copytree(lerobot_template, tmp_path / "pick_place_lerobot"))
    win = QtWidgets.QMainWindow()
    t = AnnotateTab(Settings(**{ANNOTATOR_KEY: "alice"}))
    win.setCentralWidget(t)
    win.resize(1280, 800)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    t.set_dataset(ds)
    qtbot.waitUntil(lambda: t.controller.episode is not None, timeout=20000)
    yield t, ds, win
    t.shutdown()


def key(tab, k, mods=Qt.NoModifier):
    QTest.keyClick(tab.timeline, k, mods)


def test_lerobot_dataset_in_annotate_tab(qtbot, tab, tmp_path):
    t, ds, win = tab
    c = t.controller
    rows = t.browser.rows()
    assert [r["name"] for r in rows] == ["episode_000000", "episode_000001"] and not any(r["error"] for r in rows)
    assert t.browser.header.text() == "pick_place_lerobot (LeRobot v3): 2 episodes"
    assert c.episode.path == episode_path(ds, 0)                       # the first episode opened itself
    t.browser.select(episode_path(ds, 1))
    qtbot.waitUntil(lambda: c.episode.path == episode_path(ds, 1), timeout=20000)
    assert "no segments yet" in t.message_label.text()
    # scrub: the player shows the decoded frame the playhead is on
    for f in (120, 37, 38):
        c.set_frame(f)
        qtbot.waitUntil(lambda f=f: t.player.shown_frame == f, timeout=10000)
    rgb, _ = c.cached_frame(38)
    assert rgb.shape == (H, W, 3)
    t.propose_button.click()
    qtbot.waitUntil(lambda: len(t.timeline.segments()) >= 4, timeout=20000)
    assert c.doc.segments == c.docs["auto"].segments
    # edits with the existing tools: a label key on the selected segment, the inspector's instruction
    t.timeline.select_segment(1)
    key(t, Qt.Key_1)                                                    # primitive #1: grasp
    ins = t.inspector
    ins.instruction.setFocus()
    ins.instruction.selectAll()
    QTest.keyClicks(ins.instruction, "close the gripper on the red cube")
    QTest.keyClick(ins.instruction, Qt.Key_Return)
    t.timeline.setFocus()
    key(t, Qt.Key_A, Qt.ControlModifier | Qt.ShiftModifier)            # accept all: verified
    key(t, Qt.Key_S, Qt.ControlModifier)
    qtbot.waitUntil(lambda: t.save_label.text() == "Saved ✓", timeout=15000)
    assert {r["name"]: r for r in t.browser.rows()}["episode_000001"]["status"] == "verified"
    table = pq.read_table(ds / "data/chunk-000/file-000.parquet")
    first = table.column("episode_index").to_pylist().index(1)
    rows = table.column("language_persistent")[first].as_py()
    seg = c.doc[1]
    assert ("close the gripper on the red cube", pytest.approx(seg.start / 20)) in [
        (r["content"], r["timestamp"]) for r in rows if r["style"] == "subtask"]
    assert len(rows) == len(c.doc)
    # the screenshot: a LeRobot dataset open in Annotate with edited segments
    c.set_frame(seg.start + 4)
    t.timeline.select_segment(1)
    qtbot.waitUntil(lambda: t.player.shown_frame == seg.start + 4, timeout=10000)
    if c.suggestions.checkpoint is not None:   # the bundled encoder labels the segment from decoded frames
        qtbot.waitUntil(lambda: c.suggestions.cached(c.episode.path, seg.start, seg.end) is not None
                        or bool(c.suggestions.error), timeout=60000)
        assert c.suggestions.error == ""
    QtWidgets.QApplication.processEvents()
    # Written where ACTSTUDIO_SCREENSHOTS points (docs/screenshots to refresh the README's), else tmp.
    shots = Path(os.environ.get("ACTSTUDIO_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert win.grab().save(str(shots / "annotate_lerobot.png"))
