"""Exports (LA JSONL, encoder clips, robomimic HDF5) and the annotate-propose / export commands."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main as cli_main
from recorder.annotations import AnnotationDoc, load_annotations, save_annotations
from recorder.episode import EpisodeReader
from recorder.export import clip_indices, export_encoder_clips, export_language_action, export_robomimic
from synthetic_pick_place import pick_place, write_episode


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    d = tmp_path_factory.mktemp("eps")
    return d, [write_episode(d / f"ep{i}.h5", pick_place(i)) for i in range(2)]


def test_propose_command_writes_keyframes_and_auto_segments(episodes, capsys):
    d, paths = episodes
    assert cli_main(["annotate-propose", str(d)]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 episodes proposed" in out and "grasp lift transport lower place" in out
    with EpisodeReader(paths[0]) as r:
        kinds = [k["kind"] for k in r.keyframes]
        assert "gripper_close" in kinds and "gripper_open" in kinds
        n = r.n_frames
    auto = load_annotations(paths[0])["auto"]
    assert auto.segments[0].start == 0 and auto.segments[-1].end == n


def _verify(paths):
    """A human accepts the proposals and marks the first segment as unusable."""
    for p in paths:
        auto = load_annotations(p)["auto"]
        doc = AnnotationDoc("alice", auto.n_frames, auto.segments)
        doc, _ = doc.accept_all(quality=3)
        doc, _ = doc.set_field(0, "quality", 1)
        doc, _ = doc.set_field(1, "object", "red cube")
        save_annotations(p, doc)


def test_language_action_export_keeps_quality_two_and_up(episodes, tmp_path):
    d, paths = episodes
    _verify(paths)
    out = tmp_path / "la.jsonl"
    n = export_language_action(paths, out, annotator="alice")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    per_ep = [len(load_annotations(p)["alice"]) - 1 for p in paths]
    assert n == len(lines) == sum(per_ep)
    assert all(rec["quality"] >= 2 for rec in lines)
    lift = next(rec for rec in lines if rec["primitive"] == "lift")
    assert lift["instruction"] == "lift the object upward while holding it"
    assert len(lift["state"]) == len(lift["action"]) == lift["end"] - lift["start"]
    assert len(lift["state"][0]) == 8 and len(lift["action"][0]) == 8
    assert lift["state"][-1][2] > lift["state"][0][2]  # it goes up
    assert not any(k in lift for k in ("rgb", "depth", "frames"))  # vision-agnostic


def test_encoder_clips_have_16_uniform_frames_and_captions(episodes, tmp_path):
    d, paths = episodes
    _verify(paths)
    n = export_encoder_clips(paths[:1], tmp_path / "clips", annotator="alice")
    caps = [json.loads(x) for x in (tmp_path / "clips" / "captions.jsonl").read_text().splitlines()]
    assert n == len(caps) > 3
    grasp = next(c for c in caps if c["primitive"] == "grasp")
    assert grasp["caption"] == "Robot grasps red cube, action is grasp"
    z = np.load(tmp_path / "clips" / grasp["clip"])
    assert z["frames"].shape == (16, 24, 32, 3)
    # the synthetic frames carry their index in the pixels: the clip holds exactly those frames
    assert list(z["frames"][:, 0, 0, 0]) == list(z["indices"] % 256)
    assert z["indices"][0] == grasp["start"] and z["indices"][-1] == grasp["end"] - 1
    assert list(clip_indices(0, 4, 16)) == sorted(clip_indices(0, 4, 16))


def test_exports_of_a_v2_video_episode_hold_its_frames(tmp_path):
    """Schema v2 (RGB as H.264): clips and robomimic images are the decoded frames, in order."""
    from bench.kill_sweep import frame_tag

    path = write_episode(tmp_path / "v2.h5", pick_place(0), rgb_codec="h264", propose=True)
    _verify([path])
    assert export_encoder_clips([path], tmp_path / "clips", annotator="alice") > 3
    cap = json.loads((tmp_path / "clips" / "captions.jsonl").read_text().splitlines()[1])
    z = np.load(tmp_path / "clips" / cap["clip"])
    assert [frame_tag(f) for f in z["frames"]] == list(z["indices"])
    assert export_robomimic([path], tmp_path / "rm.hdf5", images=True) == 1
    import h5py
    with h5py.File(tmp_path / "rm.hdf5", "r") as f:
        img = f["data/demo_0/obs/agentview_image"]
        assert [frame_tag(img[i]) for i in (0, 17, img.shape[0] - 1)] == [0, 17, img.shape[0] - 1]


def test_robomimic_export_loads_with_robomimic_sequence_dataset(episodes, tmp_path):
    robomimic = pytest.importorskip("robomimic")
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    d, paths = episodes
    out = tmp_path / "rm.hdf5"
    assert export_robomimic(paths, out, images=True) == 2
    keys = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": keys, "rgb": ["agentview_image"]}})
    ds = SequenceDataset(hdf5_path=str(out), obs_keys=keys + ["agentview_image"], dataset_keys=("actions", "rewards"),
                         load_next_obs=False, frame_stack=1, seq_length=10, pad_frame_stack=True,
                         pad_seq_length=True, get_pad_mask=False, goal_mode=None, hdf5_cache_mode="low_dim",
                         hdf5_use_swmr=True, hdf5_normalize_obs=False, filter_by_attribute=None)
    with EpisodeReader(paths[0]) as r:
        n0 = r.n_frames
        assert len(ds) == n0 + EpisodeReader(paths[1]).n_frames
        item = ds[5]
        assert item["actions"].shape == (10, 8)
        np.testing.assert_allclose(item["actions"][0], r.action[5])
        np.testing.assert_allclose(item["obs"]["robot0_eef_pos"][0], r.ee_pose[5, :3])
        assert item["obs"]["agentview_image"].shape[1:] in ((24, 32, 3), (3, 24, 32))


def test_export_command_and_bad_input(episodes, tmp_path, capsys):
    d, paths = episodes
    _verify(paths)
    assert cli_main(["export", "la", str(d), "-o", str(tmp_path / "la.jsonl"), "--annotator", "alice"]) == 0
    assert "language-action episodes from 2 episodes" in capsys.readouterr().out
    assert cli_main(["export", "la", str(tmp_path / "missing"), "-o", str(tmp_path / "x.jsonl")]) == 1
    msg = capsys.readouterr().out.strip()
    assert msg.endswith("no such file or directory") and "\n" not in msg
    assert cli_main(["export", "la", str(d), "-o", str(tmp_path / "y.jsonl"), "--annotator", "zed"]) == 1
    assert "no annotations by 'zed'" in capsys.readouterr().out
