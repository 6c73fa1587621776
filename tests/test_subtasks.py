"""Per-subtask tracking (app.subtasks) on synthetic trial trajectories: which atomic action a failed
trial failed at and the diagnosis, the per-subtask summary with Wilson intervals and the report."""
import csv
import json

import numpy as np
import pytest

from app.subtasks import ObjectTrace, analyse_trial
from app.success import TrialRecord, subtask_summary, wilson_interval, write_report

FPS = 20.0
DOWN = [1.0, 0.0, 0.0, 0.0]
CUBE = np.array([0.45, 0.0, 0.02])
BIN = np.array([0.40, -0.20, 0.0])
HOLDING = 0.45  # measured opening with the 4 cm cube between the fingers


class Trial:
    """Builds a trial frame by frame: TCP path, measured gripper, cube pose following the fingers."""

    def __init__(self):
        self.tcp = [np.array([0.30, 0.0, 0.30])]
        self.grip = [1.0]
        self.cube = [CUBE.copy()]
        self.attached = False

    def move(self, to, frames=30):
        a = self.tcp[-1]
        for k in range(1, frames + 1):
            self._push(a + (np.asarray(to, float) - a) * k / frames, self.grip[-1])
        return self

    def gripper(self, value, frames=6, attach=None):
        g0 = self.grip[-1]
        if attach is not None:
            self.attached = attach
        for k in range(1, frames + 1):
            self._push(self.tcp[-1], g0 + (value - g0) * k / frames)
        return self

    def drop(self, to_z=0.02):
        """The cube falls out (fingers snap shut on nothing)."""
        self.attached = False
        c = self.cube[-1].copy()
        c[2] = to_z
        self.cube[-1] = c
        return self.gripper(0.0, frames=3)

    def hold(self, frames=20):
        for _ in range(frames):
            self._push(self.tcp[-1], self.grip[-1])
        return self

    def _push(self, p, g):
        self.tcp.append(np.asarray(p, float))
        self.grip.append(float(g))
        c = self.cube[-1].copy()
        if self.attached:
            c = self.tcp[-1].copy()
        self.cube.append(c)

    def arrays(self, success=None, bin_xy=BIN):
        n = len(self.tcp)
        ee = np.c_[np.array(self.tcp), np.tile(DOWN, (n, 1))]
        cube = np.c_[np.array(self.cube), np.tile([0, 0, 0, 1.0], (n, 1))]
        objects = {"cube_red": cube, "bin": np.tile(np.r_[bin_xy, 0, 0, 0, 1.0], (n, 1))}
        ok = np.zeros(n, bool) if success is None else success(objects)
        return ee, np.array(self.grip), objects, ok


def _grasped(t: Trial) -> Trial:
    return t.move(CUBE + [0, 0, 0.12]).move(CUBE, 20).gripper(HOLDING, attach=True).hold(8)


def _pick_ok(objects):
    return objects["cube_red"][:, 2] > 0.07


def test_successful_pick_completes_every_subtask():
    ee, g, obj, ok = _grasped(Trial()).move(CUBE + [0, 0, 0.15], 30).hold(10).arrays(_pick_ok)
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, outcome="success", reason="success")
    assert a.completed == ["move", "grasp", "lift"] and a.failed_at == "" and a.diagnosis == ""
    # The proposals segmented the same trajectory: a grasp segment and a lift segment.
    assert {"grasp", "lift"} <= {lab for _, _, lab in a.segments}


def test_pick_that_closes_beside_the_cube_fails_at_grasp_on_nothing():
    t = Trial().move(CUBE + [0.03, 0.0, 0.12]).move(CUBE + [0.03, 0.0, 0.0], 20).gripper(0.0).hold(20)
    ee, g, obj, ok = t.arrays(_pick_ok)
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="timeout")
    assert a.failed_at == "grasp", a
    assert "closed on nothing" in a.diagnosis and "3.0 cm beside the cube" in a.diagnosis and "timeout" in a.diagnosis
    # Over the cube but too high: the miss is named by its height.
    t = Trial().move(CUBE + [0.0, 0.0, 0.12]).move(CUBE + [0.005, 0.0, 0.035], 20).gripper(0.0).hold(20)
    ee, g, obj, ok = t.arrays(_pick_ok)
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="timeout")
    assert a.failed_at == "grasp" and "0.5 cm beside and 3.5 cm above the cube" in a.diagnosis, a
    assert a.reached == ["move", "grasp"] and a.completed == ["move"]
    assert 50 <= a.frame <= 60  # where the fingers closed


def test_pick_that_stops_above_fails_at_move_with_timeout_while_approaching():
    ee, g, obj, ok = Trial().move(CUBE + [0.0, 0.0, 0.10]).hold(40).arrays(_pick_ok)
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="timeout")
    assert a.failed_at == "move" and a.reached == ["move"] and a.completed == []
    assert a.diagnosis.startswith("timeout while approaching") and "10.0 cm" in a.diagnosis
    # Closing far from the cube is no grasp attempt: the approach never ended.
    ee, g, obj, ok = Trial().move(CUBE + [0.0, 0.0, 0.20], 10).gripper(0.0).hold(10).arrays(_pick_ok)
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="safety_stop")
    assert a.failed_at == "move" and a.diagnosis.startswith("the gripper closed 20.0 cm from the cube"), a


def test_commanded_gripper_decides_what_a_close_is():
    """A measured opening that flickers (1.0 → 0.9 while the arm moves) is no close when the policy kept
    commanding it open; with the command the closed-on-nothing diagnosis still works."""
    t = Trial().move(CUBE + [0.0, 0.15, 0.15])
    t.grip[10:14] = [0.95, 0.9, 0.92, 0.97]
    ee, g, obj, ok = t.hold(20).arrays(_pick_ok)
    cmd = np.ones(len(g))
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="timeout", command=cmd)
    assert a.failed_at == "move" and a.diagnosis.startswith("timeout while approaching"), a
    t = Trial().move(CUBE + [0.03, 0.0, 0.12]).move(CUBE + [0.03, 0.0, 0.0], 20)
    n0 = len(t.grip)
    ee, g, obj, ok = t.gripper(0.0).hold(20).arrays(_pick_ok)
    cmd = np.r_[np.ones(n0), np.zeros(len(g) - n0)]
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="timeout", command=cmd)
    assert a.failed_at == "grasp" and "closed on nothing" in a.diagnosis


def test_pick_that_pushes_the_cube_fails_at_grasp_pushed():
    t = Trial().move(CUBE + [0.0, 0.0, 0.12]).move(CUBE + [0.0, 0.0, 0.03], 20)
    for k in range(10):  # coming down, the fingers shove the cube 4 cm sideways before it can be grasped
        t._push(t.tcp[-1], 1.0)
        t.cube[-1] = t.cube[-2] + [0.004, 0.0, 0.0]
    ee, g, obj, ok = t.gripper(0.0).hold(10).arrays(_pick_ok)
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="timeout")
    assert a.failed_at == "grasp" and "pushed the cube" in a.diagnosis


def test_pick_that_drops_while_lifting_fails_at_lift():
    t = _grasped(Trial()).move(CUBE + [0, 0, 0.04], 10).drop().hold(10)
    ee, g, obj, ok = t.arrays(_pick_ok)
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="timeout")
    assert a.failed_at == "lift" and a.diagnosis.startswith("dropped while lifting"), a
    assert a.completed == ["move", "grasp"]


def test_place_in_bin_drop_in_transport_and_place_missed():
    above_bin = np.r_[BIN[:2], 0.17]
    half_way = (CUBE + above_bin) / 2 + [0, 0, 0.07]
    t = _grasped(Trial()).move(CUBE + [0, 0, 0.15], 20).move(half_way, 15).drop().hold(10)
    ee, g, obj, ok = t.arrays()
    a = analyse_trial("place_in_bin", ee, g, FPS, objects=obj, success=ok, reason="timeout")
    assert a.failed_at == "transport" and a.diagnosis.startswith("dropped in transport"), a
    assert "from the target" in a.diagnosis and a.completed == ["move", "grasp", "lift"]
    # Carried to 2.5 cm from the bin's centre, lowered and released, but the predicate never held.
    t = _grasped(Trial()).move(CUBE + [0, 0, 0.15], 20).move(above_bin + [0.025, 0, 0], 30)
    t.move(np.r_[BIN[:2] + [0.025, 0], 0.10], 10).gripper(1.0, attach=False).hold(10)
    ee, g, obj, ok = t.arrays()
    a = analyse_trial("place_in_bin", ee, g, FPS, objects=obj, success=ok, reason="timeout")
    assert a.failed_at == "place" and a.diagnosis.startswith("place missed"), a
    assert a.completed == ["move", "grasp", "lift", "transport"]


def test_policy_stop_is_named_in_the_diagnosis_and_success_overrides_checks():
    ee, g, obj, ok = Trial().move(CUBE + [0.0, 0.0, 0.10], 10).arrays(_pick_ok)
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, reason="out_of_workspace")
    assert a.failed_at == "move" and "left the workspace" in a.diagnosis
    assert a.diagnosis.startswith("stopped while approaching")
    a = analyse_trial("pick_cube", ee, g, FPS, objects=obj, success=ok, outcome="success", reason="success")
    assert a.completed == ["move", "grasp", "lift"] and not a.failed_at


def test_press_button_miss_and_no_frames():
    n = 60
    tcp = np.c_[np.linspace(0.3, 0.45, n), np.zeros(n), np.r_[np.linspace(0.3, 0.06, 40), np.full(20, 0.06)]]
    ee = np.c_[tcp, np.tile(DOWN, (n, 1))]
    button = np.tile([0.45, 0.05, 0.046, 0, 0, 0, 1.0], (n, 1))  # 5 cm beside the TCP's path
    a = analyse_trial("press_button", ee, np.zeros(n), FPS, objects={"button": button}, success=np.zeros(n, bool),
                      reason="timeout")
    assert a.failed_at == "move" and "approaching the button" in a.diagnosis
    a = analyse_trial("pick_cube", np.zeros((0, 7)), np.zeros(0), FPS, reason="safety_stop")
    assert a.failed_at == "move" and a.diagnosis.startswith("no frames")


def test_without_sim_state_the_proposals_decide():
    t = _grasped(Trial()).move(CUBE + [0, 0, 0.15], 30).hold(10)
    ee, g, _, _ = t.arrays()
    a = analyse_trial("pick_cube", ee, g, FPS, objects=None, reason="operator")
    assert a.completed == ["move", "grasp", "lift"]
    t = Trial().move(CUBE + [0.03, 0.0, 0.12]).move(CUBE + [0.03, 0.0, 0.0], 20).gripper(0.0).hold(20)
    ee, g, _, _ = t.arrays()
    a = analyse_trial("pick_cube", ee, g, FPS, objects=None, reason="operator")
    assert a.failed_at == "grasp" and "closed on nothing" in a.diagnosis


def test_object_trace_interpolates_onto_frames():
    samples = [(0.0, {"cube_red": np.r_[0.0, 0, 0, 0, 0, 0, 1]}, False),
               (0.1, {"cube_red": np.r_[0.02, 0, 0, 0, 0, 0, 1]}, True)]
    tr = ObjectTrace.from_samples(samples)
    poses, ok = tr.at(np.array([-0.05, 0.05, 0.1, 0.3]))
    np.testing.assert_allclose(poses["cube_red"][:, 0], [0.0, 0.01, 0.02, 0.02])
    assert ok.tolist() == [False, False, True, True]
    assert ObjectTrace.from_samples([]) is None


def _rec(i, outcome, reached, completed, failed_at="", diagnosis=""):
    return TrialRecord(i, "pick_cube", 1000 + i, outcome, "success" if outcome == "success" else "timeout", 5.0,
                       reached=reached, completed=completed, failed_at=failed_at, diagnosis=diagnosis)


def test_subtask_summary_counts_wilson_and_report_files(tmp_path):
    trials = [_rec(0, "success", "move grasp lift", "move grasp lift"),
              _rec(1, "failure", "move grasp", "move", "grasp", "grasp missed: the gripper closed on nothing"),
              _rec(2, "failure", "move", "", "move", "timeout while approaching"),
              _rec(3, "success", "move grasp lift", "move grasp lift"),
              TrialRecord(4, "pick_cube", 1004, "failure", "timeout", 1.0)]  # untracked (older report): left out
    rows = {s.subtask: s for s in subtask_summary(trials)}
    assert list(rows) == ["move", "grasp", "lift"]
    assert (rows["move"].reached, rows["move"].completed) == (4, 3)
    assert (rows["grasp"].reached, rows["grasp"].completed, rows["grasp"].failed_here) == (3, 2, 1)
    assert (rows["lift"].reached, rows["lift"].completed) == (2, 2)
    assert (rows["grasp"].ci_low, rows["grasp"].ci_high) == pytest.approx(wilson_interval(2, 3))
    paths = write_report(tmp_path, trials, {"title": "t"})
    doc = json.loads(paths["json"].read_text())
    assert [s["subtask"] for s in doc["subtasks"]] == ["move", "grasp", "lift"]
    assert doc["trials"][1]["failed_at"] == "grasp" and "nothing" in doc["trials"][1]["diagnosis"]
    with paths["subtasks_csv"].open() as f:
        got = list(csv.DictReader(f))
    assert [(r["subtask"], r["reached"], r["completed"]) for r in got] == [("move", "4", "3"), ("grasp", "3", "2"),
                                                                          ("lift", "2", "2")]
    assert "failed_at" in paths["csv"].read_text().splitlines()[0]
    assert paths["png"].stat().st_size > 5000
