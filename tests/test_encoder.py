"""policies/encoder.py, clip_data.py, encoder_train.py: the RoboAct-CLIP encoder learns motion primitives
from synthetic clips, its ablation switches change what it can see, checkpoints round-trip."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from policies.clip_data import ClipDataError, ClipDataset, build_clips, camera_frames, expert_segments
from policies.encoder import EncoderConfig, EncoderError, RoboActCLIP, SLOTS
from policies.encoder_train import EncoderTrainConfig, epoch_order, evaluate, train_encoder
from policies.text import TextEncoder
from recorder.primitives import caption

H, W, N = 24, 32, 16
MOTIONS = {"lift": (-1, 0), "lower": (1, 0), "transport": (0, 1), "wait": (0, 0)}


def moving_square(motion: str, rng: np.random.Generator, n: int = N) -> np.ndarray:
    """(n,H,W,3) uint8: a red square on grey drifting by ≈8 px in the motion's image direction."""
    dy, dx = MOTIONS[motion]
    y0 = rng.integers(9, 11) if dy == 0 else (4 if dy > 0 else 14) + rng.integers(0, 3)
    x0 = rng.integers(3, 20) if dx == 0 else 3 + rng.integers(0, 5)
    frames = np.full((n, H, W, 3), 110, np.uint8)
    frames += rng.integers(0, 12, frames.shape, dtype=np.uint8)
    for i in range(n):
        y = int(np.clip(y0 + dy * 8 * i / (n - 1), 0, H - 6))
        x = int(np.clip(x0 + dx * 8 * i / (n - 1), 0, W - 6))
        frames[i, y:y + 6, x:x + 6] = (200, 30, 30)
    return frames


def write_clip_folder(folder, per_class: int = 10, seed: int = 0) -> None:
    """An encoder-clip folder (export layout), one synthetic 'episode' per clip."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "captions.jsonl", "w") as fh:
        k = 0
        for motion in MOTIONS:
            for _ in range(per_class):
                name = f"clip_{k:05d}.npz"
                np.savez_compressed(folder / name, frames=moving_square(motion, rng), indices=np.arange(N),
                                    proprio=np.zeros((N, 8), np.float32))
                fh.write(json.dumps({"clip": name, "caption": caption(motion, "red cube"), "primitive": motion,
                                     "object": "red cube", "episode": f"ep{k}", "task": "synthetic"}) + "\n")
                k += 1


@pytest.fixture(scope="session")
def text_encoder():
    # The real packaged model through the shared disk cache: after the first run it never loads.
    return TextEncoder()


@pytest.fixture(scope="session")
def trained(tmp_path_factory, text_encoder):
    root = tmp_path_factory.mktemp("enc")
    write_clip_folder(root / "clips")
    data = ClipDataset(root / "clips", size=(H, W))
    cfg = EncoderTrainConfig(out_dir=str(root / "run"), epochs=12, batch_size=10, lr=3e-3, log_every=1,
                             threads=1)
    stream = io.StringIO()
    res = train_encoder(data, cfg, {"d_model": 64, "embed_dim": 32}, text_encoder=text_encoder, stream=stream)
    return data, res, stream.getvalue().splitlines(), root


def test_learns_motion_primitives_on_held_out_clips(trained):
    data, res, lines, _ = trained
    assert res.metrics["n"] == 10 and len(res.metrics["per_primitive"]) >= 3
    assert res.metrics["macro"] >= 0.9, res.metrics


def test_progress_is_a_json_lines_stream(trained):
    _, res, lines, _ = trained
    events = [json.loads(ln) for ln in lines]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("epoch") == 12
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, len(steps) + 1))
    assert {"contrastive", "ortho", "l2", "recomb", "aux", "total"} <= set(steps[-1])
    # Training lowers the loss: the last epoch's mean is well below the first's.
    ep = [e["total"] for e in events if e["event"] == "epoch"]
    assert ep[-1] < 0.7 * ep[0]


def test_checkpoint_round_trip_and_resume(trained, text_encoder):
    data, res, _, root = trained
    model = RoboActCLIP.load(res.checkpoint)
    again = evaluate(model, data, data.split_by_episode(0.25, 0)[1])
    assert again["macro"] == pytest.approx(res.metrics["macro"])
    cfg = EncoderTrainConfig(out_dir=str(root / "run"), epochs=13, batch_size=10, lr=3e-3)
    stream = io.StringIO()
    more = train_encoder(data, cfg, text_encoder=text_encoder, resume=res.checkpoint, stream=stream)
    start = json.loads(stream.getvalue().splitlines()[0])
    assert start["step"] == res.steps and more.steps == res.steps + 3 and more.epochs_done == 13


def _model(**kw) -> RoboActCLIP:
    cfg = EncoderConfig(actions=["lift", "lower"], objects=["red cube"], frame_size=(H, W), d_model=32,
                        embed_dim=16, **kw)
    return RoboActCLIP(cfg, torch.randn(2, 384))


def _batch(b=6):
    rng = np.random.default_rng(1)
    frames = torch.from_numpy(np.stack([moving_square(["lift", "lower"][i % 2], rng) for i in range(b)]))
    frames = frames.permute(0, 1, 4, 2, 3)
    act = torch.arange(b) % 2
    labels = {"subject": torch.zeros(b, dtype=torch.long), "object": torch.zeros(b, dtype=torch.long), "action": act}
    return frames, labels, act


@pytest.mark.parametrize("kw, expect", [
    ({}, {"contrastive", "ortho", "l2", "recomb", "aux"}),
    ({"temporal": False}, {"contrastive", "ortho", "l2", "recomb", "aux"}),
    ({"disentangle": False}, {"contrastive", "aux"}),
    ({"recomb": False, "ortho": False}, {"contrastive", "aux"}),
    ({"aux": False, "ortho": False}, {"contrastive", "recomb"}),
])
def test_loss_switches(kw, expect):
    torch.manual_seed(0)
    m = _model(**kw)
    frames, labels, act = _batch()
    loss, parts = m.loss(frames, m.candidate_text[act], act, labels)
    assert set(parts) - {"total"} == expect
    loss.backward()
    assert m.backbone.proj.weight.grad.abs().sum() > 0  # the frame backbone is trained through every variant


def test_no_temporal_sees_only_first_and_last_frame():
    torch.manual_seed(0)
    frames, _, _ = _batch(2)
    shuffled = frames.clone()
    shuffled[:, 1:-1] = frames[:, 1:-1].flip(1)  # same ends, reversed middle
    for temporal, same in ((False, True), (True, False)):
        m = _model(temporal=temporal).eval()
        with torch.no_grad():
            a, b = m.visual(frames)["video"], m.visual(shuffled)["video"]
        assert torch.allclose(a, b, atol=1e-5) == same


def test_relative_position_bias_is_used():
    torch.manual_seed(0)
    m = _model().eval()
    frames, _, _ = _batch(2)
    with torch.no_grad():
        before = m.visual(frames)["video"].clone()
        for blk in m.temporal.blocks:
            blk.attn.rel_bias.normal_(0, 3)
        after = m.visual(frames)["video"]
    assert not torch.allclose(before, after, atol=1e-4)


def test_feature_bank_keeps_last_instance_per_class():
    m = _model()
    heads = {s: torch.arange(3 * 16, dtype=torch.float).view(3, 16) + 100 * i for i, s in enumerate(SLOTS)}
    labels = {"subject": torch.tensor([0, 0, 0]), "object": torch.tensor([0, 0, 0]), "action": torch.tensor([1, 0, 1])}
    m.update_banks(heads, labels)
    torch.testing.assert_close(m.bank_action[1], heads["action"][2])
    torch.testing.assert_close(m.bank_action[0], heads["action"][1])
    assert m.bank_action_filled.all() and m.bank_subject_filled.all()


def test_bad_inputs_are_one_line_errors(tmp_path):
    m = _model()
    with pytest.raises(EncoderError, match="16 frames"):
        m.visual(torch.zeros(1, 8, 3, H, W, dtype=torch.uint8))
    with pytest.raises(EncoderError, match="not a RoboAct-CLIP"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        RoboActCLIP.load(tmp_path / "other.pt")
    with pytest.raises(EncoderError, match="no such checkpoint"):
        RoboActCLIP.load(tmp_path / "missing.pt")
    with pytest.raises(EncoderError, match="nothing to train"):
        EncoderConfig(actions=["lift"], objects=["x"], contrastive=False, aux=False)
    with pytest.raises(ClipDataError, match="no captions.jsonl"):
        ClipDataset(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"clip": "clip_00000.npz"}\n')
    with pytest.raises(ClipDataError, match="line 1: bad record"):
        ClipDataset(tmp_path)


def test_clip_backbone_from_a_local_checkpoint(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    tiny = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                            image_size=32, patch_size=8, projection_dim=24)
    CLIPVisionModelWithProjection(tiny).save_pretrained(tmp_path / "clip")
    m = _model(backbone=str(tmp_path / "clip"))
    frames, labels, act = _batch(2)
    loss, _ = m.loss(frames, m.candidate_text[act], act, labels)
    loss.backward()
    assert all(p.grad is None for p in m.backbone.clip.parameters())  # frozen, as in the paper
    assert m.backbone.proj.weight.grad is not None
    m.save(tmp_path / "enc.pt")
    assert not any(k.startswith("backbone.clip.") for k in torch.load(tmp_path / "enc.pt")["state_dict"])
    RoboActCLIP.load(tmp_path / "enc.pt")  # the tower comes back from its folder
    with pytest.raises(EncoderError, match="not a folder"):
        _model(backbone=str(tmp_path / "nope"))


def test_build_clips_from_expert_phases(tmp_path):
    from synthetic_pick_place import pick_place, write_episode

    syn = pick_place(seed=3)
    ep = write_episode(tmp_path / "ep.h5", syn)
    n = build_clips([ep], tmp_path / "clips", size=(12, 16))
    segs = expert_segments(syn.phases, syn.gripper)
    assert n == len(segs) >= 5
    data = ClipDataset(tmp_path / "clips", size=(12, 16))
    assert [r.primitive for r in data.records] == [s[2] for s in segs]
    assert data.records[0].object == "red cube"  # place_in_bin manipulates cube_red
    assert data.frames.shape == (n, 16, 3, 12, 16) and data.proprio.shape == (n, 16, 8)
    assert all(r.camera_frames == -1 for r in data.records)  # synthetic episodes record no frame_index
    # write_episode paints the frame index into the pixels: the clip holds the segment's frames.
    a, b, _ = segs[1]
    got = np.load(tmp_path / "clips" / data.records[1].clip)["frames"][:, 0, 0, 0]
    assert got[0] == a and got[-1] == b - 1


def test_build_clips_from_a_v2_video_episode(tmp_path):
    """Schema v2 (RGB as H.264): the clips hold the decoded frames of each segment (tagged frames)."""
    from bench.kill_sweep import frame_tag
    from synthetic_pick_place import pick_place, write_episode

    syn = pick_place(seed=3)
    ep = write_episode(tmp_path / "ep.h5", syn, rgb_codec="h264")
    n = build_clips([ep], tmp_path / "clips", size=(24, 32))  # full size: the tag block stays readable
    data = ClipDataset(tmp_path / "clips", size=(24, 32))
    a, b, _ = expert_segments(syn.phases, syn.gripper)[1]
    frames = np.load(tmp_path / "clips" / data.records[1].clip)["frames"]
    assert n >= 5 and frame_tag(frames[0]) == a and frame_tag(frames[-1]) == b - 1


def test_cli_train_encoder_streams_json_and_reports_errors(trained, tmp_path, capsys):
    from app.cli import main

    _, _, _, root = trained
    rc = main(["train", "encoder", "--clips", str(root / "clips"), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--batch-size", "20", "--frame-size", "24x32", "--d-model", "32", "--no-temporal", "--no-recomb",
               "--progress", "json", "--threads", "1"])
    out = capsys.readouterr()
    events = [json.loads(ln) for ln in out.out.splitlines()]
    assert rc == 0 and events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert events[0]["temporal"] is False and "recomb" not in events[0]["losses"]
    assert RoboActCLIP.load(tmp_path / "run" / "encoder.pt").cfg.temporal is False
    assert main(["train-encoder", "--clips", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no captions.jsonl" in err and "\n" not in err


def test_balanced_epoch_order_evens_out_primitives():
    labels = np.array([0] * 90 + [1] * 8 + [2] * 2)
    idx = np.arange(100) + 1000
    gen = torch.Generator().manual_seed(0)
    plain = epoch_order(idx, labels, False, gen)
    assert sorted(plain.tolist()) == idx.tolist()  # a permutation: class 0 keeps its 90 %
    drawn = np.concatenate([epoch_order(idx, labels, True, gen) for _ in range(20)]) - 1000
    share = np.bincount(labels[drawn], minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.05), share


def test_camera_frames_counts_distinct_images():
    class Reader:  # only the extras table is read
        extras = {"frame_index": np.array([4, 4, 4, 5, 5, 9, 9, 9])}

    assert camera_frames(Reader(), np.array([0, 1, 2])) == 1  # a still image: no motion to see
    assert camera_frames(Reader(), np.array([0, 3, 5, 7])) == 3
    Reader.extras = {}
    assert camera_frames(Reader(), np.array([0, 1])) == -1


def test_augmented_frames_stay_in_the_evaluation_pixel_range():
    from policies.encoder_train import _augment

    frames = torch.randint(0, 256, (3, N, 3, H, W), dtype=torch.uint8)
    frames[:, 1] = frames[:, 0]
    out = _augment(frames, torch.Generator().manual_seed(0))
    # uint8 like the evaluation input (the encoder reads float input as already scaled to [0, 1])
    assert out.dtype == torch.uint8 and out.shape == frames.shape
    assert torch.equal(out[:, 1], out[:, 0])  # one shift per clip: repeated frames stay repeated
    assert abs(out.float().mean() - frames.float().mean()) < 20


def test_episode_folds_hold_out_every_episode_once(trained):
    data = trained[0]
    folds = data.episode_folds(4, seed=1)
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(len(data)))  # every clip held out exactly once
    for tr, te in folds:
        assert not {data.records[i].episode for i in tr} & {data.records[i].episode for i in te}
    with pytest.raises(ClipDataError, match="at least 2 folds"):
        data.episode_folds(1)


def test_bench_crop_holds_every_object_placement():
    """The crop the bench (and the bundled encoder) cuts from the sim's scene camera contains every place
    an object can be put, 4 cm around its centre and 8 cm above the table (the old crop, 0.65 of the
    height, cut off the objects nearest the camera)."""
    import mujoco

    from bench.encoder import CROP
    from robots.sim import tasks as T
    from robots.sim.render import camera_pose, intrinsics
    from robots.sim.world import HEIGHT, SCENE_CAMERA, WIDTH, build_xarm_model

    model = build_xarm_model()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, SCENE_CAMERA)
    K, T_bc = intrinsics(model, cam, WIDTH, HEIGHT), camera_pose(data, cam)
    r = 0.04  # a cube's footprint; the far rim of a bin at the region's corner may touch the edge
    pts = np.array([(p.x + dx, p.y + dy, z) for s in range(200) for p in T.sample_layout(s).values()
                    for dx in (-r, 0, r) for dy in (-r, 0, r) for z in (0.0, 0.08)])
    pc = (pts - T_bc[:3, 3]) @ T_bc[:3, :3]
    assert (pc[:, 2] > 0).all()
    uv = pc[:, :2] / pc[:, 2:] * np.diag(K)[:2] + K[:2, 2]
    top, bottom, left, right = CROP
    assert (uv[:, 1] >= top * HEIGHT).all() and (uv[:, 1] <= bottom * HEIGHT).all()
    assert (uv[:, 0] >= left * WIDTH).all() and (uv[:, 0] <= right * WIDTH).all()
    old_bottom = 0.65
    assert (uv[:, 1] > old_bottom * HEIGHT).any()
