"""Evaluate tab: a real 2-trial rollout on the simulated xArm6 (spline-IK policy, no checkpoint needed)
driven from the tab, with the operator's F key deciding the first trial."""
import json

import numpy as np
import pytest
from PySide6 import QtCore

from app.rollout import LiveState
from app.success import TrialRecord
from widgets.evaluate_tab import COLUMNS, EvaluateTab


@pytest.fixture
def tab(qtbot):
    w = EvaluateTab(None)
    qtbot.addWidget(w)
    w.resize(1200, 700)
    w.show()
    yield w
    w.shutdown()


def test_show_state_draws_summary_curve_ci_and_table(tab):
    trials = [TrialRecord(i, "pick_cube", 1000 + i, "success" if ok else "failure", "success" if ok else "timeout",
                          8.0, latency_p50_ms=21.0) for i, ok in enumerate([1, 1, 0, 1])]
    tab.show_state(LiveState(phase="running", trial=4, n_trials=20, trials=trials, latencies_s=[0.02, 0.03],
                             chunk=np.zeros((16, 7))))
    assert "3/4 = 75 %" in tab.summary.text() and "Wilson 95 % CI 30–95 %" in tab.summary.text()
    x, y = tab.curve.getData()
    np.testing.assert_allclose(y, [100, 100, 200 / 3, 75])
    lo, hi = tab.ci_low.getData()[1], tab.ci_high.getData()[1]
    assert np.all(lo <= y) and np.all(y <= hi)
    assert tab.table.rowCount() == 4 and tab.table.item(2, 3).text() == "timeout"
    assert "p50 25 ms" in tab.latency.text()


def _tracked_trials():
    rows = [("success", "success", "move grasp lift", "move grasp lift", "", ""),
            ("failure", "plan_finished", "move grasp", "move", "grasp",
             "grasp missed: the gripper closed on nothing, 2.1 cm beside the cube"),
            ("failure", "timeout", "move grasp lift", "move grasp", "lift",
             "dropped while lifting: the cube left the gripper while moving"),
            ("success", "success", "move grasp lift", "move grasp lift", "", "")]
    return [TrialRecord(i, "pick_cube", 1000 + i, o, r, 9.0, reached=re, completed=co, failed_at=fa, diagnosis=d,
                        failed_frame=80 if fa else -1) for i, (o, r, re, co, fa, d) in enumerate(rows)]


def test_evaluate_tab_shows_success_by_subtask_and_where_trials_failed(tab):
    tab.show_state(LiveState(phase="done", trial=3, n_trials=4, trials=_tracked_trials()))
    t = tab.subtask_table
    got = [[t.item(r, c).text() for c in range(t.columnCount())] for r in range(t.rowCount())]
    assert [t.horizontalHeaderItem(c).text() for c in range(t.columnCount())][:3] == ["subtask", "reached", "done"]
    assert got == [["move", "4", "4", "100 %", "51–100 %", "0"],
                   ["grasp", "4", "3", "75 %", "30–95 %", "1"],
                   ["lift", "3", "2", "67 %", "21–94 %", "1"]]
    heights = tab.subtask_bars.opts["height"]
    np.testing.assert_allclose(heights, [100, 75, 200 / 3])
    col = {name: i for i, name in enumerate(COLUMNS)}
    assert tab.table.item(1, col["failed at"]).text() == "grasp"
    assert "closed on nothing" in tab.table.item(1, col["diagnosis"]).text()
    assert "frame 80" in tab.table.item(1, col["failed at"]).toolTip()
    assert tab.table.item(0, col["failed at"]).text() == ""


def test_export_without_a_report_is_a_one_line_message(tab, tmp_path):
    tab.out.setText(str(tmp_path / "nothing"))
    assert tab.export_failures(str(tmp_path / "out")) is False
    assert tab.status.text().startswith("export: no rollout report")


def test_export_failed_trials_on_hardware_copies_the_failed_episodes(tab, qtbot, tmp_path):
    """No simulator to take over on hardware: the button's worker copies the failed episodes (the sim path,
    expert takeover, runs in tests/test_rollout.py)."""
    from app.success import write_report
    from recorder.episode import EpisodeReader
    from test_annotate_controller import make_episode

    run = tmp_path / "run"
    (run / "episodes").mkdir(parents=True)
    eps = [make_episode(run / "episodes" / f"ep{i}.h5", seed=i) for i in range(2)]
    trials = [r for r in _tracked_trials()[:2]]
    for t, ep in zip(trials, eps):
        t.episode = str(ep)
    write_report(run, trials, {"title": "hw"})
    tab.out.setText(str(run))
    tab.robot.setText("xarm6:192.168.1.5")
    assert tab.export_failures(str(tmp_path / "corr"))
    qtbot.waitUntil(lambda: not tab.export_worker.running, timeout=20_000)
    qtbot.wait(50)
    assert tab.status.text() == f"export: 1 failed episodes copied to {tmp_path / 'corr'} (correct them in Annotate)"
    copied = sorted((tmp_path / "corr").glob("*.h5"))
    assert [p.name for p in copied] == ["ep1.h5"] and EpisodeReader(copied[0]).n_frames > 10
    assert tab.export_btn.isEnabled()


def test_bad_form_gives_a_one_line_message(tab):
    tab.policy.setCurrentText("expert")
    tab.checkpoint.setText("")
    assert tab.start() is False
    assert tab.status.text().startswith("cannot start:") and "checkpoint" in tab.status.text()


def test_instruction_keypoints_and_scene_reach_the_rollout_config(tab):
    """Instruction → waypoints → expert from the tab: the instruction and predictor apply to predicted
    waypoints only (the fields are disabled otherwise), the scene variation to any run."""
    tab.task.setCurrentText("place_in_bin")
    assert tab.instruction.placeholderText().startswith("put the red cube in the bin")
    tab.waypoints.setCurrentText("oracle")
    assert not tab.instruction.isEnabled() and not tab.keypoints.isEnabled()
    tab.variation.setCurrentText("table-2cm")
    cfg = tab.config()
    assert cfg.instruction is None and cfg.keypoints is None and cfg.variation == "table-2cm"
    tab.waypoints.setCurrentText("predicted")
    assert tab.instruction.isEnabled() and tab.keypoints.isEnabled()
    tab.instruction.setText("  drop the red cube into the bin ")
    tab.keypoints.setText("/tmp/kp.pt")
    cfg = tab.config()
    assert (cfg.waypoints, cfg.instruction, cfg.keypoints) == ("predicted", "drop the red cube into the bin", "/tmp/kp.pt")
    tab.keypoints.setText("")
    assert tab.start() is False and "keypoint checkpoint" in tab.status.text()


@pytest.mark.timeout(600)
def test_two_trial_sim_rollout_from_the_tab_with_operator_key(tab, qtbot, tmp_path):
    tab.policy.setCurrentText("spline-ik")
    tab.trials.setValue(2)
    tab.out.setText(str(tmp_path / "eval"))
    chunks = []
    tab.chunkChanged.connect(chunks.append)
    assert tab.start()
    assert not tab.start_btn.isEnabled() and tab.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: (s := tab.snapshot()) is not None and s.phase == "running" and s.trial_t > 2.5,
                    timeout=180_000)
    tab.activateWindow()
    tab.setFocus()
    qtbot.keyClick(tab, QtCore.Qt.Key_F)  # the operator calls the first trial a failure
    qtbot.waitUntil(lambda: not tab.worker.running, timeout=300_000)
    qtbot.wait(50)
    assert tab.table.rowCount() == 2, tab.status.text()
    assert tab.table.item(0, 2).text() == "failure" and tab.table.item(0, 3).text() == "operator"
    # The second trial is decided by the sim, not the operator (a starved sim may run out of time).
    second = tab.table.item(1, 3).text()
    assert second in ("success", "plan_finished", "timeout")
    k = int(second == "success")
    assert f"{k}/2 = {k * 50} %" in tab.summary.text()
    assert len(tab.curve.getData()[1]) == 2 and tab.start_btn.isEnabled()
    doc = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert [t["reason"] for t in doc["trials"]] == ["operator", second]
