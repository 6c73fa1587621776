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

EXPERT = BUNDLED_DIR / "expert_multitask.pt"
KEYPOINTS = BUNDLED_DIR / "keypoints_multitask.pt"


def test_manifest_lists_every_bundled_checkpoint():
    listed = {b.path.name for b in bundled_checkpoints()}
    assert listed == {p.name for p in BUNDLED_DIR.glob("*.pt")}


@pytest.mark.parametrize("robot", ["sim-xarm6", "xarm6:192.168.1.208", "sim-franka", "franka:172.16.0.2"])
@pytest.mark.parametrize("task", ["pick_cube", "place_in_bin", "stack_cubes", "press_button"])
def test_one_expert_and_one_predictor_for_every_task_on_both_arms(task, robot):
    assert bundled_checkpoint("expert", task, robot) == EXPERT
    assert bundled_checkpoint("keypoints", task, robot) == KEYPOINTS


def test_no_match_says_what_ships_and_which_flag(tmp_path):
    (tmp_path / "bundled.json").write_text(json.dumps({"checkpoints": [
        {"file": "e.pt", "kind": "expert", "task": "pick_cube", "robots": ["xarm6"]}]}))
    (tmp_path / "e.pt").write_bytes(b"x")
    with pytest.raises(NoBundledCheckpoint) as err:
        bundled_checkpoint("expert", "stack_cubes", "sim-franka", folder=tmp_path)
    msg = str(err.value)
    assert "task 'stack_cubes' on franka" in msg and "e.pt (expert, pick_cube on xarm6)" in msg
    assert "--checkpoint PATH" in msg and "\n" not in msg


def test_rollout_cli_without_checkpoint_fails_clearly_when_nothing_fits(tmp_path, capsys):
    assert main(["rollout", "--task", "pick_cube", "--robot", "xarm7:10.0.0.1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rollout:") and "\n" not in err
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
    assert args.keypoints == str(KEYPOINTS)
    assert "no --keypoints, using the bundled" in capsys.readouterr().err
    given = Namespace(policy="expert", checkpoint="mine.pt", waypoints="predicted:kp.pt", keypoints=None,
                      task="pick_cube", robot="sim-franka")
    _bundled_defaults(given)                                # explicit choices are left alone
    assert given.checkpoint == "mine.pt" and given.keypoints is None
