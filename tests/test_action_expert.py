"""The action expert model and its runtime policy (policies/action_expert.py)."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from policies.action_expert import ActionChunk, ActionExpert, ExpertConfig, ExpertPolicy
from policies.datasets import windows_from_trajectory
from policies.normalize import MinMaxNormalizer
from policies.train import TrainConfig, train
from policies.waypoints import Waypoint, WaypointTrajectory

TINY = dict(horizon=8, n_action_steps=4, unet_dims=(16, 32), pointnet_dims=(16, 32), state_feat=32,
            guide_feat=32, cloud_feat=16, step_embed=32, n_points=64)
DOWN = Rotation.from_euler("x", np.pi).as_quat()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _tiny_model(seed=0) -> ActionExpert:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = np.c_[rng.uniform((0.3, -0.3, 0.0), (0.7, 0.3, 0.4), (64, 3)), rng.uniform(-1, 1, (64, 6)), rng.random(64)]
    return ActionExpert(ExpertConfig(**TINY), MinMaxNormalizer.fit(data)).eval()


def _inputs(cfg):
    state = np.r_[0.5, 0.0, 0.2, DOWN, 1.0]
    guide = np.tile(np.r_[0.55, 0.05, 0.15, DOWN, 1.0], (cfg.n_guide, 1))
    cloud = np.random.default_rng(1).uniform((0.3, -0.3, 0.0), (0.7, 0.3, 0.4), (cfg.n_points, 3))
    return state, cloud, guide


def _demo_windows(cfg):
    wps = [Waypoint(np.r_[0.4, 0, 0.3, DOWN], 1.0), Waypoint(np.r_[0.55, 0.1, 0.1, DOWN], 0.0),
           Waypoint(np.r_[0.5, -0.1, 0.25, DOWN], 0.0)]
    tr = WaypointTrajectory(wps, speed=0.2)
    t = np.arange(0, tr.duration + 0.2, 0.05)
    a, g = tr.sample(t), tr.gripper(t)
    return windows_from_trajectory(t, np.r_[a[:1], a[:-1]], np.r_[g[:1], g[:-1]], np.c_[a, g], tr, cfg)


def test_overfit_a_demo_ddim10_lands_within_millimetres(tmp_path):
    cfg = ExpertConfig(**TINY)
    w = _demo_windows(cfg)
    res = train(TrainConfig(out_dir=str(tmp_path), steps=300, batch_size=len(w), lr=1e-2, goal_noise=0.0,
                            warmup_steps=10, log_every=10 ** 9, ckpt_every=10 ** 9), w, cfg, progress="none")
    assert np.mean(res.losses[:10]) > 20 * np.mean(res.losses[-10:])  # the loss really fell
    model = ActionExpert.load(res.checkpoint)
    b = w.batch(torch.arange(len(w)))
    pred = model.sample(b["state"], b["guide"], steps=10, generator=torch.Generator().manual_seed(0))
    err_mm = (pred[..., :3] - b["action"][..., :3]).norm(dim=-1) * 1000
    assert err_mm.median() < 8.0, f"median {err_mm.median():.1f} mm"
    assert torch.quantile(err_mm, 0.9) < 25.0
    # Gripper commands are recovered on the right side of 0.5 almost everywhere.
    assert ((pred[..., 9] > 0.5) == (b["action"][..., 9] > 0.5)).float().mean() > 0.9


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    model = _tiny_model()
    path = model.save(tmp_path / "m.pt")
    state, cloud, guide = _inputs(model.config)
    a = ExpertPolicy(model, seed=3, jit=False).act(state, cloud, guide)
    loaded = ActionExpert.load(path)
    assert loaded.config == model.config
    b = ExpertPolicy(path, seed=3, jit=False).act(state, cloud, guide)
    assert a.valid and b.valid
    np.testing.assert_array_equal(a.poses, b.poses)
    np.testing.assert_array_equal(a.gripper, b.gripper)
    # The checkpoint is plain data: loadable with torch's safe loader, no pickled classes.
    ck = torch.load(path, weights_only=True)
    assert set(ck) >= {"config", "state_dict", "normalizer", "format", "version"}


def test_traced_unet_matches_eager_and_policy_outputs_are_proper_poses():
    model = _tiny_model()
    state, cloud, guide = _inputs(model.config)
    eager = ExpertPolicy(model, seed=0, jit=False).act(state, cloud, guide)
    traced = ExpertPolicy(model, seed=0, jit=True).act(state, cloud, guide)
    np.testing.assert_allclose(eager.poses, traced.poses, atol=1e-5)
    assert isinstance(eager, ActionChunk) and eager.poses.shape == (8, 7) and eager.gripper.shape == (8,)
    np.testing.assert_allclose(np.linalg.norm(eager.poses[:, 3:], axis=1), 1.0, atol=1e-9)
    assert eager.n_execute == 4 and eager.latency_s > 0


def test_cloud_conditioning_and_mask_token():
    model = _tiny_model()
    with torch.no_grad():
        model.cloud_mask_token.normal_()
    state, cloud, guide = _inputs(model.config)
    pol = ExpertPolicy(model, seed=0, jit=False)
    no_cloud = pol.act(state, None, guide).poses
    pol.reset()
    with_cloud = pol.act(state, cloud, guide).poses
    pol.reset()
    other_cloud = pol.act(state, cloud[::-1] * 0.5, guide).poses
    assert not np.allclose(no_cloud, with_cloud)
    assert not np.allclose(with_cloud, other_cloud)
    # A batch entry flagged has_cloud=False uses the mask token, exactly like passing no cloud.
    s, g, c = (torch.rand(2, 1, 10), torch.rand(2, 4, 10), torch.rand(2, 64, 3))
    enc_masked = model.encode(s, g, c, torch.tensor([False, True]))
    np.testing.assert_allclose(enc_masked[0].detach(), model.encode(s[:1], g[:1], None)[0].detach(), atol=1e-6)
    np.testing.assert_allclose(enc_masked[1].detach(), model.encode(s[1:], g[1:], c[1:])[0].detach(), atol=1e-6)
    # Cloud size differing from n_points is FPS'd to size rather than refused.
    assert pol.act(state, np.random.default_rng(0).random((500, 3)), guide).valid


def test_nan_output_is_flagged_not_returned():
    model = _tiny_model()
    with torch.no_grad():
        model.unet.final[-1].weight.fill_(float("nan"))
    state, cloud, guide = _inputs(model.config)
    chunk = ExpertPolicy(model, jit=False).act(state, cloud, guide)
    assert chunk.valid is False and chunk.reason == "nan"
    assert np.isnan(chunk.poses).all()


def test_bad_inputs_are_flagged_or_refused_with_one_line_messages():
    model = _tiny_model()
    pol = ExpertPolicy(model, jit=False)
    state, cloud, guide = _inputs(model.config)
    bad_state = state.copy()
    bad_state[1] = np.inf
    chunk = pol.act(bad_state, cloud, guide)
    assert not chunk.valid and chunk.reason.startswith("bad_input")
    bad_cloud = cloud.copy()
    bad_cloud[3, 0] = np.nan
    assert pol.act(state, bad_cloud, guide).reason.startswith("bad_input")
    with pytest.raises(ValueError, match="with_gripper=True") as err:
        pol.act(state, cloud, guide[:, :7])
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="state must be"):
        pol.act(state[:5], cloud, guide)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        ActionExpert.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt") as err:
        ActionExpert.load(junk)
    assert "\n" not in str(err.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not an action-expert checkpoint"):
        ActionExpert.load(other)
    with pytest.raises(ValueError, match="unknown action-expert config keys"):
        ExpertConfig.from_dict({"horizon": 8, "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        ActionExpert(ExpertConfig(horizon=10, unet_dims=(16, 32, 64)))


def test_history_uses_previous_states():
    cfg = ExpertConfig(**{**TINY, "n_obs": 2})
    rng = np.random.default_rng(0)
    model = ActionExpert(cfg, MinMaxNormalizer.fit(rng.random((32, 10)))).eval()
    state, cloud, guide = _inputs(cfg)
    pol = ExpertPolicy(model, seed=0, jit=False)
    first = pol.act(state, cloud, guide).poses
    pol._gen.manual_seed(0)  # noqa: SLF001 — same noise, so only the history differs
    second = pol.act(state, cloud, guide).poses  # history now [state, state] as on the first call
    np.testing.assert_allclose(first, second, atol=1e-6)
    moved = state.copy()
    moved[0] += 0.05
    pol._gen.manual_seed(0)  # noqa: SLF001
    third = pol.act(moved, cloud, guide).poses
    pol.reset()
    fresh = pol.act(moved, cloud, guide).poses  # history [moved, moved]
    assert not np.allclose(third, fresh)


def test_relative_frame_moves_the_actions_with_the_scene():
    """Relative model: the same scene, state and guidance shifted by d give the same chunk shifted by
    d (positions are taken from the arm's position); an absolute model does not."""
    d = torch.tensor([0.07, -0.05, 0.03])
    for relative in (True, False):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        data = np.c_[rng.uniform(-0.2, 0.2, (64, 3)), rng.uniform(-1, 1, (64, 6)), rng.random(64)]
        model = ActionExpert(ExpertConfig(**TINY, relative=relative), MinMaxNormalizer.fit(data)).eval()
        state, cloud, guide = (torch.as_tensor(x, dtype=torch.float32)[None] for x in _inputs(model.config))
        from policies.geometry import pose7_to_9
        state = torch.as_tensor(np.r_[pose7_to_9(state[0, :7].numpy()), 1.0], dtype=torch.float32)[None, None]
        guide = torch.as_tensor(np.c_[pose7_to_9(guide[0, :, :7].numpy()), guide[0, :, 7:]], dtype=torch.float32)[None]
        shifted = [x.clone() for x in (state, guide, cloud)]
        for x in shifted:
            x[..., :3] += d
        a = model.sample(state, guide, cloud, steps=4, generator=torch.Generator().manual_seed(3))
        b = model.sample(*shifted, steps=4, generator=torch.Generator().manual_seed(3))
        moved = torch.allclose(b[..., :3], a[..., :3] + d, atol=1e-4) and torch.allclose(b[..., 3:], a[..., 3:], atol=1e-4)
        assert moved == relative


def test_checkpoints_without_the_frame_key_are_absolute():
    assert ExpertConfig.from_dict({k: v for k, v in ExpertConfig().to_dict().items() if k != "relative"}).relative is False
    assert ExpertConfig().relative is True
