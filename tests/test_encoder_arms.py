"""The bundled encoder labels sim-franka clips too (issue 14, item 5), and bench/encoder_arms.py scores
each robot apart.

tests/data/encoder_franka_clips.npz holds a few clips exactly as policies/clip_data.build_clips makes
them (16 frames cropped and resized to 48×64) from one held-out sim-franka demo (seed 600+, a layout no
bundled model trained on), with the scripted expert's labels. The encoder bundled before, trained on
sim-xarm6 images only, called this demo's first "move" a "transport".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.encoder_arms import paired_bootstrap, per_robot, split_indices
from policies.clip_data import ClipDataset
from policies.encoder import RoboActCLIP

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/data/encoder_franka_clips.npz"
BUNDLED = ROOT / "assets/checkpoints/encoder_sim.pt"


@pytest.fixture(scope="module")
def bundled_predictions():
    z = np.load(FIXTURE)
    frames = torch.from_numpy(z["frames"]).permute(0, 1, 4, 2, 3)  # (K, 16, 3, 48, 64) uint8
    model = RoboActCLIP.load(BUNDLED)
    with torch.no_grad():
        probs = model.action_probs(frames).numpy()
    return [str(p) for p in z["primitive"]], [model.cfg.actions[i] for i in probs.argmax(1)], probs, model


def test_fixture_is_tiny_and_in_the_encoders_input_format():
    assert FIXTURE.stat().st_size < 200_000
    z = np.load(FIXTURE)
    assert z["frames"].dtype == np.uint8 and z["frames"].shape[1:] == (16, 48, 64, 3)
    assert str(z["robot"]) == "sim-franka" and "move" in list(z["primitive"])


def test_bundled_encoder_calls_a_held_out_sim_franka_move_a_move(bundled_predictions):
    true, pred, probs, model = bundled_predictions
    k = true.index("move")
    assert pred[k] != "transport", f"a sim-franka 'move' suggested as transport ({probs[k].max():.0%})"
    assert pred[k] == "move"


def test_bundled_encoder_labels_most_held_out_sim_franka_clips(bundled_predictions):
    true, pred, _, _ = bundled_predictions
    assert np.mean([t == p for t, p in zip(true, pred)]) >= 0.6


def test_bundled_encoder_says_it_was_trained_on_both_arms():
    ck = RoboActCLIP.read_checkpoint(BUNDLED)
    held = ck["provenance"]["held_out_per_robot"]
    assert set(held) == {"sim-franka", "sim-xarm6"}
    assert all(m["macro"] > 0.5 for m in held.values())


def _clip_folder(tmp_path: Path) -> ClipDataset:
    """Six one-frame-pattern clips: robots a and b, episodes a0/a1/b0, two primitives."""
    rows = [("a", "a0", "move"), ("a", "a0", "lift"), ("a", "a1", "move"), ("a", "a1", "lift"),
            ("b", "b0", "move"), ("b", "b0", "lift")]
    with open(tmp_path / "captions.jsonl", "w") as fh:
        for k, (robot, ep, prim) in enumerate(rows):
            name = f"clip_{k:05d}.npz"
            np.savez_compressed(tmp_path / name, frames=np.full((4, 8, 8, 3), k, np.uint8),
                                proprio=np.zeros((4, 8), np.float32))
            fh.write(json.dumps({"clip": name, "caption": f"{prim} cube", "primitive": prim, "object": "cube",
                                 "episode": ep, "task": "t", "robot": robot}) + "\n")
    return ClipDataset(tmp_path, size=(8, 8))


def test_per_robot_scores_each_robots_held_out_clips_apart(tmp_path):
    data = _clip_folder(tmp_path)
    tr, te = split_indices(data, {"a1", "b0"})
    assert tr.tolist() == [0, 1] and te.tolist() == [2, 3, 4, 5]
    pred = ["move", "move", "move", "lift"]  # robot a: lift missed; robot b: both right
    res = per_robot(data, te, pred, ["lift", "move"])
    assert res["a"]["macro"] == 0.5 and res["a"]["accuracy"] == 0.5 and res["a"]["episodes"] == 1
    assert res["b"]["macro"] == 1.0 and res["b"]["n"] == 2


def test_paired_bootstrap_is_zero_for_equal_predictions_and_signed_otherwise(tmp_path):
    data = _clip_folder(tmp_path)
    idx = np.arange(6)
    right = [r.primitive for r in data.records]
    wrong = ["move"] * 6
    assert paired_bootstrap(data, idx, right, right, ["lift", "move"], n=50) == (0.0, 0.0, 0.0)
    d, lo, hi = paired_bootstrap(data, idx, right, wrong, ["lift", "move"], n=50)
    assert d == 0.5 and 0 < lo <= d <= hi


def test_only_successful_demos_are_clipped(tmp_path):
    """A timed-out demo's expert phases no longer say what its images show: bench/encoder_arms skips it."""
    from bench.encoder_arms import successful
    from recorder.episode import EpisodeWriter

    cam = {"K": np.eye(3), "width": 8, "height": 6, "T_base_camera": np.eye(4), "depth_scale": 0.001,
           "model": "sim:scene_cam", "serial": ""}
    paths = []
    for name, outcome in (("ok.h5", "success"), ("late.h5", "failure")):
        w = EpisodeWriter(tmp_path / name, {"robot": "sim-franka", "task": "pick_cube", "fps": 20.0}, cam)
        for i in range(3):
            w.append(0.05 * i, np.zeros((6, 8, 3), np.uint8), np.zeros((6, 8), np.uint16),
                     np.r_[0.3, 0, 0.3, 0, 0, 0, 1], np.zeros(7), 1.0, np.r_[0.3, 0, 0.3, 0, 0, 0, 1, 1.0], {},
                     block=True)
        paths.append(w.finalize(outcome, propose=False))
    assert [p.name for p in successful(paths)] == ["ok.h5"]
