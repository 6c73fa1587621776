"""Training loop, data sets and the `train expert` command (policies/train.py, policies/datasets.py)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from policies.action_expert import ActionExpert, ExpertConfig
from policies.datasets import Windows, episode_windows, synthetic_trajectory, synthetic_windows
from policies.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(horizon=8, n_action_steps=4, unet_dims=(16, 32), pointnet_dims=(16, 32), state_feat=32,
            guide_feat=32, cloud_feat=16, step_embed=32, n_points=64)
TINY_CLI = ["--horizon", "8", "--unet-dims", "16,32", "--n-points", "64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _cfg(**kw):
    return TrainConfig(**{"steps": 10, "batch_size": 32, "log_every": 1, "ckpt_every": 10 ** 9, "warmup_steps": 2, **kw})


def test_synthetic_trajectories_are_consistent():
    tr = synthetic_trajectory(np.random.default_rng(0))
    assert tr["action"].shape == (len(tr["time"]), 8)
    # The arm state trails the command by exactly one tick.
    np.testing.assert_allclose(tr["ee_pose"][1:], tr["action"][:-1, :7])
    w = synthetic_windows(3, ExpertConfig(**TINY), seed=0)
    assert w.state.shape[1:] == (1, 10) and w.guide.shape[1:] == (4, 10) and w.action.shape[1:] == (8, 10)
    assert not w.has_clouds and torch.isfinite(w.action).all()
    # Chunks run forward in time: the first action of window i is the command at frame i.
    np.testing.assert_allclose(w.action[1, 0].numpy(), w.action[0, 1].numpy(), atol=1e-6)


def test_loss_decreases_and_progress_is_json_lines(tmp_path, capsys):
    w = synthetic_windows(4, ExpertConfig(**TINY), seed=1)
    res = train(_cfg(out_dir=str(tmp_path), steps=40, lr=3e-3), w, ExpertConfig(**TINY), progress="json")
    assert np.mean(res.losses[-8:]) < 0.8 * np.mean(res.losses[:4])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    step = next(e for e in events if e["event"] == "step")
    assert set(step) >= {"step", "epoch", "loss", "lr", "samples_per_s", "eta_s"}
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 41))
    assert Path(events[-1]["checkpoint"]).is_file()


def test_resume_continues_the_step_count(tmp_path):
    w = synthetic_windows(2, ExpertConfig(**TINY), seed=2)
    first = train(_cfg(out_dir=str(tmp_path)), w, ExpertConfig(**TINY), progress="none", stop_after=4)
    assert first.cancelled and first.step == 4
    ck = ActionExpert.read_checkpoint(first.checkpoint)
    assert ck["train"]["step"] == 4 and ck["train"]["lr_scheduler"]["last_epoch"] == 4
    steps_seen = []
    second = train(_cfg(out_dir=str(tmp_path)), w, progress="none", resume=first.checkpoint,
                   on_step=lambda s, loss: steps_seen.append(s))
    assert steps_seen == list(range(5, 11)) and second.step == 10 and not second.cancelled
    assert ActionExpert.read_checkpoint(second.checkpoint)["train"]["step"] == 10
    # An uninterrupted run of the same length lands on the same weights: resume lost nothing.
    straight = train(_cfg(out_dir=str(tmp_path / "b")), w, ExpertConfig(**TINY), progress="none")
    a, b = ActionExpert.load(second.checkpoint), ActionExpert.load(straight.checkpoint)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-4), k


class ArrayEpisode:
    """An in-memory episode with EpisodeReader's attribute names: a downward camera over a table with
    a box that the arm approaches; depth rendered analytically."""

    def __init__(self, path, n=12):
        self.path = str(path)
        self.n_frames = n
        self.time = np.arange(n) / 20.0
        down = Rotation.from_euler("x", np.pi).as_quat()
        self.ee_pose = np.array([np.r_[0.45 + 0.01 * i, 0.0, 0.3 - 0.015 * i, down] for i in range(n)])
        self.gripper = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(np.float32)
        self.action = np.c_[np.r_[self.ee_pose[1:], self.ee_pose[-1:]], self.gripper]
        self.keyframes = np.array([n // 2])
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("x", np.pi).as_matrix()
        T[:3, 3] = [0.5, 0.0, 1.0]
        self.camera = {"K": np.array([[80.0, 0, 40], [0, 80.0, 30], [0, 0, 1]]), "T_base_camera": T,
                       "depth_scale": 0.001, "width": 80, "height": 60}
        self.depth_calls = 0

    def depth(self, i):
        self.depth_calls += 1
        d = np.full((60, 80), 1000, dtype=np.uint16)  # table plane at z = 0
        d[20:40, 30 + i:50 + i] = 900  # a 10 cm box, moving so every frame's cloud differs
        return d


def test_finetune_on_episode_clouds_with_cache(tmp_path):
    cfg = ExpertConfig(**TINY)
    ep = ArrayEpisode(tmp_path / "ep0.h5")
    workspace = ((0.2, -0.4, 0.05), (0.8, 0.4, 0.5))  # above the table: only the box remains
    w = episode_windows(ep, cfg, workspace=workspace)
    assert w.has_clouds and w.clouds.shape == (12, 64, 3)
    assert (w.clouds[..., 2] > 0.05).all() and torch.allclose(w.clouds[..., 2], torch.tensor(0.1), atol=1e-3)
    assert ep.depth_calls == 12 and list(tmp_path.glob("ep0.h5.clouds-*.npz"))
    again = episode_windows(ep, cfg, workspace=workspace)
    assert ep.depth_calls == 12  # second pass read the cache
    torch.testing.assert_close(again.clouds, w.clouds)
    # Guidance comes from the keyframe spline: at the last frame it sits on the last pose.
    np.testing.assert_allclose(w.guide[-1, -1, :3].numpy(), ep.ee_pose[-1, :3], atol=1e-6)

    stage1 = train(_cfg(out_dir=str(tmp_path / "s1"), steps=3), synthetic_windows(2, cfg), cfg, progress="none")
    both = Windows.concat([w, synthetic_windows(1, cfg, seed=5)])
    stage2 = train(_cfg(out_dir=str(tmp_path / "s2"), stage="finetune", steps=3), both, progress="none",
                   init_checkpoint=stage1.checkpoint)
    assert np.isfinite(stage2.loss)
    s1, s2 = ActionExpert.load(stage1.checkpoint), ActionExpert.load(stage2.checkpoint)
    # Stage 2 starts from stage 1 (normaliser kept) and trains the PointNet, untouched in stage 1.
    torch.testing.assert_close(s1.normalizer.centre, s2.normalizer.centre)
    assert not torch.allclose(s1.pointnet.mlp[0].weight, s2.pointnet.mlp[0].weight)
    with pytest.raises(ValueError, match="needs point clouds"):
        train(_cfg(out_dir=str(tmp_path / "x"), stage="finetune"), synthetic_windows(1, cfg), cfg, progress="none")


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "main.py", "train", "expert", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cli_cancel_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = _cli("--synthetic", "2", "--steps", "100000", "--batch-size", "16", "--log-every", "1",
                "--progress", "json", "--out", str(tmp_path), *TINY_CLI)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "step" and events[-1]["step"] >= 2:
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=120)
    events += [json.loads(x) for x in rest.splitlines()]
    assert proc.returncode == 0, err
    cancelled = events[-1]
    assert cancelled["event"] == "cancelled" and cancelled["step"] >= 2
    ck = ActionExpert.read_checkpoint(cancelled["checkpoint"])
    assert ck["train"]["step"] == cancelled["step"]
    assert "Traceback" not in err


def test_cli_bad_input_is_one_line():
    proc = _cli("--stage", "finetune", "--episodes", "/nonexistent/dir")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().count("\n") == 0 and "nonexistent" in err and "Traceback" not in err


def test_torchrun_ddp_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", "--standalone", "main.py", "train", "expert",
                           "--synthetic", "2", "--steps", "4", "--batch-size", "8", "--log-every", "1",
                           "--device", "cpu", "--progress", "json", "--out", str(tmp_path), *TINY_CLI],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2
    assert sum(e["event"] == "start" for e in events) == 1  # only rank 0 reports
    assert events[-1]["event"] == "done" and events[-1]["step"] == 4
    # Both ranks hold the same weights after DDP steps; rank 0's checkpoint is what is saved.
    assert ActionExpert.read_checkpoint(events[-1]["checkpoint"])["train"]["step"] == 4


def test_noisy_waypoint_copies_share_targets_and_clouds(tmp_path):
    cfg = ExpertConfig(**TINY)
    ep = ArrayEpisode(tmp_path / "ep0.h5")
    workspace = ((0.2, -0.4, 0.05), (0.8, 0.4, 0.5))
    clean = episode_windows(ep, cfg, workspace=workspace)
    w = episode_windows(ep, cfg, workspace=workspace, waypoint_noise=0.03, noise_variants=3,
                        rng=np.random.default_rng(1))
    n = len(clean)
    assert len(w) == 4 * n and w.clouds.shape == clean.clouds.shape  # clouds stored once
    torch.testing.assert_close(w.guide[:n], clean.guide)  # the first copy is the clean one
    for k in range(1, 4):
        part = slice(k * n, (k + 1) * n)
        torch.testing.assert_close(w.action[part], clean.action)
        torch.testing.assert_close(w.state[part], clean.state)
        assert torch.equal(w.cloud_index[part], clean.cloud_index)
        moved = (w.guide[part, :, :3] - clean.guide[:, :, :3]).norm(dim=-1)
        # Noisy positions, same orientations and gripper commands.
        assert 0 < float(moved.max()) < 0.2
        torch.testing.assert_close(w.guide[part, :, 3:], clean.guide[:, :, 3:], atol=1e-4, rtol=0)
    assert w.batch(torch.arange(len(w)))["cloud"].shape[0] == len(w)


def test_perturb_waypoints_keeps_the_start():
    from policies.datasets import perturb_waypoints
    from policies.waypoints import Waypoint

    wps = [Waypoint(np.r_[0.4 + 0.1 * i, 0, 0.3, 0, 0, 0, 1], 1.0, t=float(i)) for i in range(4)]
    out = perturb_waypoints(wps, 0.02, np.random.default_rng(0))
    np.testing.assert_array_equal(out[0].pose, wps[0].pose)
    d = np.array([np.linalg.norm(a.pose[:3] - b.pose[:3]) for a, b in zip(out[1:], wps[1:])])
    assert (d > 0).all() and (d < 0.15).all()
    assert [w.t for w in out] == [w.t for w in wps]
    np.testing.assert_array_equal(wps[1].pose[:3], [0.5, 0, 0.3])  # the input is not modified


def test_guidance_probe_compares_exact_and_displaced_guidance(tmp_path):
    from bench.expert_guidance_probe import probe

    cfg = ExpertConfig(**TINY)
    ep = ArrayEpisode(tmp_path / "ep0.h5")
    res = train(_cfg(out_dir=str(tmp_path / "p"), stage="finetune", steps=3),
                episode_windows(ep, cfg, workspace=((0.2, -0.4, 0.05), (0.8, 0.4, 0.5))), cfg, progress="none")
    model = ActionExpert.load(res.checkpoint).eval()
    out = probe(model, [ep], sigma=0.03)
    n = len(out["exact"])
    assert n > 0 and len(out["displaced"]) == len(out["shift"]) == n  # the same approach frames both ways
    assert np.isfinite(out["exact"]).all() and (out["shift"] > 0).any()
    # Contact frames: the chunk (8 actions) that ends where the gripper closes (frame 12 of 24).
    grasp = probe(model, [ArrayEpisode(tmp_path / "ep1.h5", n=24)], sigma=0.03, frames="grasp")
    assert len(grasp["exact"]) == 1 and np.isfinite(grasp["exact"]).all()


def test_cloud_focus_sees_only_points_near_the_guidance_target(tmp_path):
    cfg = ExpertConfig(**TINY, cloud_focus=0.08)
    ep = ArrayEpisode(tmp_path / "ep0.h5")
    w = episode_windows(ep, cfg, workspace=((0.2, -0.4, 0.05), (0.8, 0.4, 0.5)))
    res = train(_cfg(out_dir=str(tmp_path / "f"), stage="finetune", steps=3), w, cfg, progress="none")
    model = ActionExpert.load(res.checkpoint).eval()
    assert model.config.cloud_focus == 0.08 and model.pointnet_focus is not None
    b = w.batch(torch.arange(4))
    state, guide, cloud = model._normalize_inputs(b["state"], b["guide"], b["cloud"])
    f = model._focus_feature(guide, cloud, None)
    # Moving points that lie far from the target changes nothing; moving the near ones does.
    target = b["guide"][:, -1:, :3]
    far = (b["cloud"] - target).norm(dim=-1) > 0.08
    assert far.any() and (~far).any()
    moved = b["cloud"].clone()
    pushed = target + 2 * (b["cloud"] - target)  # twice as far from the target: still outside
    moved[far] = pushed[far]
    torch.testing.assert_close(model._focus_feature(guide, model._normalize_inputs(b["state"], b["guide"], moved)[2], None), f)
    near = b["cloud"].clone()
    near[~far] += torch.tensor([0.0, 0.0, 0.01])
    assert not torch.allclose(model._focus_feature(guide, model._normalize_inputs(b["state"], b["guide"], near)[2], None), f)
    assert torch.isfinite(model.sample(b["state"], b["guide"], b["cloud"], steps=2)).all()


def test_next_gripper_change_targets_point_at_the_grasp_then_the_release():
    from policies.datasets import next_gripper_change_targets

    a = np.zeros((10, 8))
    a[:, 0] = np.arange(10) / 10  # x tells the frame
    a[:, 7] = [1, 1, 1, 0, 0, 0, 1, 1, 1, 1]  # close at frame 3, open at frame 6
    t = next_gripper_change_targets(a)
    np.testing.assert_allclose(t[:4, 0], 0.3)
    np.testing.assert_allclose(t[4:7, 0], 0.6)
    assert np.isnan(t[7:]).all()


def test_contact_targets_include_a_press_but_not_the_dips_of_a_grasp():
    """A press (down 5 cm, dwell, up, gripper closed throughout) is a contact; a pick's lower-grasp-lift
    dip is the grasp itself, not a second contact; a shallow wobble is none."""
    from policies.datasets import contact_frames, next_gripper_change_targets

    n = 60
    press = np.zeros((n, 8))
    press[:, 0] = np.arange(n) / 100
    press[:, 2] = np.concatenate([np.linspace(0.15, 0.10, 20), np.full(10, 0.10), np.linspace(0.10, 0.15, 30)])
    press[:, 2] += 0.005 * np.sin(np.arange(n))  # 5 mm wobble: no contact of its own
    (f,) = contact_frames(press)
    assert 19 <= f <= 31  # at the bottom
    t = next_gripper_change_targets(press)
    np.testing.assert_allclose(t[:f + 1], np.repeat(press[f:f + 1, :3], f + 1, 0))
    assert np.isnan(t[f + 1:]).all()

    pick = press.copy()
    pick[:, 7] = 1.0
    pick[25:, 7] = 0.0  # closes in the dwell at the bottom
    assert contact_frames(pick) == [25]


def test_keypoint_head_learns_where_the_box_is():
    """The head alone, on clouds of a table with a 4 cm box at a random place: after a short training
    its keypoint lands on the box's top centre (the target) to well under the box's size, on new boxes."""
    from policies.action_expert import CloudKeypointHead, keypoint_aux_loss

    def batch(gen, b=32):
        table = torch.rand(b, 48, 3, generator=gen) * torch.tensor([0.4, 0.4, 0.0]) - torch.tensor([0.2, 0.2, 0.3])
        centre = (torch.rand(b, 1, 3, generator=gen) - 0.5) * torch.tensor([0.3, 0.3, 0.0]) + torch.tensor([0, 0, -0.26])
        box = centre + (torch.rand(b, 16, 3, generator=gen) - 0.5) * torch.tensor([0.04, 0.04, 0.0])
        guide = centre[:, 0] + torch.randn(b, 3, generator=gen) * 0.02  # imprecise waypoint near it
        return torch.cat([table, box], 1), guide, centre[:, 0]

    torch.manual_seed(0)
    head = CloudKeypointHead(32)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        cloud, guide, target = batch(gen)
        loss = keypoint_aux_loss(head(cloud, guide), cloud, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    cloud, guide, target = batch(torch.Generator().manual_seed(99), 64)
    with torch.no_grad():
        err = (head(cloud, guide)["keypoint"] - target).norm(dim=-1)
        guide_err = (guide - target).norm(dim=-1)
    assert err.median() < 0.012 and err.median() < 0.5 * guide_err.median()


def test_expert_with_keypoint_head_trains_and_reports_its_keypoint(tmp_path):
    from policies.action_expert import ExpertPolicy

    cfg = ExpertConfig(**TINY, keypoint_feat=16, keypoint_width=16, keypoint_skip=True)
    ep = ArrayEpisode(tmp_path / "ep0.h5")
    w = episode_windows(ep, cfg, workspace=((0.2, -0.4, 0.05), (0.8, 0.4, 0.5)), waypoint_noise=0.02,
                        noise_variants=1)
    # The grasp (gripper closes at frame 6) is the target of the frames up to it; none follows after.
    assert w.target.shape == (24, 3)
    np.testing.assert_allclose(w.target[0].numpy(), ep.action[6, :3], atol=1e-6)
    assert torch.isnan(w.target[7:12]).all() and torch.equal(w.target[:12].nan_to_num(), w.target[12:].nan_to_num())
    res = train(_cfg(out_dir=str(tmp_path / "k"), stage="finetune", steps=5, distractor_copies=0.5), w, cfg,
                progress="none")
    assert np.isfinite(res.losses).all()
    with pytest.raises(ValueError, match="probability"):
        _cfg(distractor_copies=1.5)
    model = ActionExpert.load(res.checkpoint).eval()
    b = w.batch(torch.arange(3))
    # With the aux term the loss is larger than the diffusion loss alone (the head is untrained).
    with torch.no_grad():
        torch.manual_seed(0)
        with_aux = float(model.compute_loss(b, 0.0, keypoint_weight=1.0))
        torch.manual_seed(0)
        assert with_aux > float(model.compute_loss(b, 0.0, keypoint_weight=0.0))
    # Relative frame: arm, guidance and cloud moved together move the keypoint with them, exactly.
    d = torch.tensor([0.03, -0.02, 0.0])
    ex0, ex1 = {}, {}
    model.sample(b["state"], b["guide"], b["cloud"], steps=2, extras=ex0)
    moved = {k: v.clone() for k, v in b.items()}
    for k in ("state", "guide"):
        moved[k][..., :3] += d
    model.sample(moved["state"], moved["guide"], b["cloud"] + d, steps=2, extras=ex1)
    torch.testing.assert_close(ex1["keypoint"], ex0["keypoint"] + d)
    # The runtime policy hands it on for the 3D view.
    pol = ExpertPolicy(model, jit=False)
    state = np.r_[ep.ee_pose[0], 1.0]
    guide = np.c_[ep.ee_pose[:4], np.ones(4)]
    chunk = pol.act(state, w.clouds[0].numpy(), guide)
    assert chunk.valid and chunk.extra["keypoint"].shape == (3,)


def test_keypoint_skip_adds_the_gated_keypoint_to_the_predicted_positions():
    from policies.normalize import MinMaxNormalizer

    cfg = ExpertConfig(**TINY, keypoint_feat=16, keypoint_width=16, keypoint_skip=True)
    norm = MinMaxNormalizer(np.full(10, 0.1), np.full(10, 0.5))
    m = ActionExpert(cfg, norm)
    cond = torch.zeros(2, cfg.cond_dim)
    pred = torch.zeros(2, cfg.horizon, 10)
    kp = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]])
    # Fresh: the gate is nearly shut, the network's own prediction stands.
    fresh = norm.unnormalize(m._keypoint_skip(pred, cond, kp))
    assert (fresh[0, :, :3] - 0.1 - kp[0]).abs().max() > 0.25
    with torch.no_grad():
        m.keypoint_gate.bias.fill_(30.0)  # gate open: positions = network's (centre) + keypoint
    out = norm.unnormalize(m._keypoint_skip(pred, cond, kp))
    torch.testing.assert_close(out[..., :3], 0.1 + kp[:, None].expand(-1, cfg.horizon, -1))
    torch.testing.assert_close(out[..., 3:], torch.full((2, cfg.horizon, 7), 0.1))  # rotation, gripper untouched
    # A sample without a cloud gets nothing added, whatever the gate says.
    no_cloud = norm.unnormalize(m._keypoint_skip(pred, cond, kp, torch.tensor([False, True])))
    torch.testing.assert_close(no_cloud[0, :, :3], torch.full((cfg.horizon, 3), 0.1))
    with pytest.raises(ValueError, match="keypoint head"):
        ActionExpert(ExpertConfig(**TINY, keypoint_skip=True), norm)
