"""Bundled checkpoints by purpose: `main.py rollout --task pick_cube` needs no --checkpoint (issue 12)."""
from __future__ import annotations

import json

import pytest

from app.cli import main
from policies.bundled import (
    BUNDLED_DIR,
    NoBundledCheckpoint,
    bundled_checkpoint,
    bundled_checkpoints,
)

EXPERT = BUNDLED_DIR / "expert_pick_cube.pt"


def test_manifest_lists_every_bundled_checkpoint():
    listed = {b.path.name for b in bundled_checkpoints()}
    assert listed == {p.name for p in BUNDLED_DIR.glob("*.pt")}


@pytest.mark.parametrize("robot", ["sim-xarm6", "xarm6:192.168.1.208"])
def test_expert_for_pick_cube_on_the_xarm6(robot):
    assert bundled_checkpoint("expert", "pick_cube", robot) == EXPERT
    assert bundled_checkpoint("keypoints", "place_in_bin", robot).name == "keypoints_place_in_bin.pt"


@pytest.mark.parametrize("task,robot,family", [("pick_cube", "sim-franka", "franka"),
                                               ("stack_cubes", "sim-xarm6", "xarm6")])
def test_no_match_says_what_ships_and_which_flag(task, robot, family):
    with pytest.raises(NoBundledCheckpoint) as err:
        bundled_checkpoint("expert", task, robot)
    msg = str(err.value)
    assert f"task '{task}' on {family}" in msg and "expert_pick_cube.pt" in msg and "--checkpoint PATH" in msg
    assert "\n" not in msg


def test_rollout_cli_without_checkpoint_fails_clearly_when_nothing_fits(tmp_path, capsys):
    assert main(["rollout", "--task", "stack_cubes", "--robot", "sim-xarm6", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rollout: no bundled expert checkpoint for task 'stack_cubes' on xarm6")
    assert not (tmp_path / "r").exists()          # failed before any device started


def test_rollout_cli_without_checkpoint_uses_the_bundled_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["rollout", "--task", "pick_cube", "--trials", "1", "--max-seconds", "2",
                 "--out", str(out)]) == 0
    assert "using the bundled" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["config"]["checkpoint"] == str(EXPERT)
    assert report["summary"]["pick_cube"]["trials"] == 1


def test_predicted_waypoints_default_to_the_tasks_keypoint_predictor(capsys):
    from argparse import Namespace

    from app.commands.rollout import _bundled_defaults

    args = Namespace(policy="spline-ik", checkpoint=None, waypoints="predicted", keypoints=None,
                     task="place_in_bin", robot="sim-xarm6")
    _bundled_defaults(args)
    assert args.checkpoint is None                          # spline-ik needs no expert
    assert args.keypoints == str(BUNDLED_DIR / "keypoints_place_in_bin.pt")
    assert "no --keypoints, using the bundled" in capsys.readouterr().err
    given = Namespace(policy="expert", checkpoint="mine.pt", waypoints="predicted:kp.pt", keypoints=None,
                      task="pick_cube", robot="sim-franka")
    _bundled_defaults(given)                                # explicit choices are left alone
    assert given.checkpoint == "mine.pt" and given.keypoints is None
