"""Keypoint predictor (policies/keypoints.py): learning on synthetic marked clusters, real sim episodes
as data, PredictedSource → WaypointTrajectory, checkpoint round trip and bad checkpoints, CLI."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.keypoints import (INITIAL_STATE, KeypointConfig, KeypointData, KeypointError, KeypointPredictor,
                                KeypointTrainConfig, PredictedSource, build_dataset, evaluate, episode_steps,
                                save_checkpoint, split_by_episode, train_keypoints)
from policies.runtime import timed_trajectory
from policies.waypoints import WaypointTrajectory

REPO = Path(__file__).resolve().parents[1]
PICK = REPO / "data" / "pick_cube_50"
LO, HI = np.array([0.25, -0.35, 0.02]), np.array([0.75, 0.35, 0.50])
TEXTS = [INITIAL_STATE, "go to the red marker", "go above the blue marker"]


class FakeText:
    """Fixed orthogonal text features: the sentence model is an edge this test need not load."""

    def __init__(self, texts):
        self.texts = list(texts)
        self.features = torch.eye(len(texts), 384)

    def pair(self, a, b):
        return torch.cat([self.features[torch.as_tensor(a)], self.features[torch.as_tensor(b)]], dim=-1)


def synthetic(n: int, seed: int, n_points: int = 256) -> KeypointData:
    """Grey clutter plus a red and a blue 3 cm cluster at random places; the instruction says which
    one, and the blue target sits 8 cm above its cluster (a keypoint in free air, like a lift's end)."""
    rng = np.random.default_rng(seed)
    clouds, text, target, grip = [], [], [], []
    for i in range(n):
        xyz = rng.uniform(LO, [0.75, 0.35, 0.15], size=(n_points, 3))
        rgb = np.full((n_points, 3), 0.5) + rng.normal(0, 0.03, (n_points, 3))
        red, blue = rng.uniform(LO + 0.05, [0.7, 0.3, 0.1], size=(2, 3))
        k = 20
        xyz[:k] = red + rng.normal(0, 0.01, (k, 3))
        rgb[:k] = [0.9, 0.1, 0.1]
        xyz[k:2 * k] = blue + rng.normal(0, 0.01, (k, 3))
        rgb[k:2 * k] = [0.1, 0.1, 0.9]
        which = i % 2
        clouds.append(np.concatenate([xyz, np.clip(rgb, 0, 1)], 1))
        text.append(1 + which)
        target.append(red if which == 0 else blue + [0, 0, 0.08])
        grip.append(float(which))
    m = len(clouds)
    return KeypointData(np.asarray(clouds, np.float32), np.asarray(text), np.zeros(m, int), np.asarray(target, np.float32),
                        np.asarray(grip, np.float32), np.zeros(m, np.float32), np.arange(m) // 2, np.asarray(text) - 1,
                        np.zeros(m, bool), np.zeros(m, bool), TEXTS, [f"s{i}" for i in range(m // 2)],
                        {"toy": [{"primitive": "move", "instruction": TEXTS[1]},
                                 {"primitive": "lift", "instruction": TEXTS[2]}]})


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = KeypointConfig(n_points=256, width=32)
    train = synthetic(96, 0)
    res = train_keypoints(train, cfg, KeypointTrainConfig(steps=250, batch_size=16, lr=3e-3, augment=False,
                                                           log_every=1000), FakeText(TEXTS))
    return res.model, cfg


def test_training_on_marked_clusters_learns_the_keypoint(toy_model):
    model, cfg = toy_model
    text = FakeText(TEXTS)
    test = synthetic(40, 1)
    untrained = evaluate(type(model)(cfg), test, text)
    ev = evaluate(model, test, text)
    # Untrained: about the size of the box; trained: within a few cm of both the on-cluster target
    # and the one 8 cm above its cluster, with the gripper state right.
    assert untrained["all"]["median_cm"] > 10
    assert ev["all"]["median_cm"] < 4.0, ev["all"]
    assert ev["per_step"][1]["median_cm"] < 5.0  # the free-air target
    assert ev["gripper_accuracy"] >= 0.9


def test_checkpoint_round_trip_and_predicted_source(toy_model, tmp_path):
    model, cfg = toy_model
    text = FakeText(TEXTS)
    data = synthetic(4, 2)
    path = save_checkpoint(tmp_path / "kp.pt", model, TEXTS, text.features, data.plans, {"note": 1})
    blob = torch.load(path, weights_only=True)  # loadable without unpickling code
    assert blob["kind"] == "actstudio.keypoints"
    pred = KeypointPredictor.load(path)
    cloud = data.clouds[0]
    with torch.no_grad():
        ref = model(torch.as_tensor(cloud)[None], text.pair([1], [0]))["keypoint"][0].numpy()
    xyz, conf = pred.predict(cloud, TEXTS[1])
    assert np.allclose(xyz, ref, atol=2e-3)  # fp16 storage
    assert 0.0 <= conf <= 1.0
    src = PredictedSource(pred, "toy")
    wps = src.waypoints(cloud)
    assert [w.label for w in wps] == ["move", "lift"]
    assert wps[1].gripper != wps[0].gripper and wps[1].dwell >= 0.6  # a gripper change gets time to act
    for w in wps:  # top-down tool: its z axis points down
        from scipy.spatial.transform import Rotation

        assert Rotation.from_quat(w.pose[3:]).apply([0, 0, 1])[2] < -0.99
    traj = timed_trajectory(np.r_[0.3, 0.0, 0.3, 1.0, 0, 0, 0], wps)
    assert isinstance(traj, WaypointTrajectory) and traj.duration > 0
    assert np.allclose(traj.sample(traj.t_end)[:3], wps[-1].pose[:3], atol=1e-6)
    with pytest.raises(KeypointError, match="no plan for task 'stack'"):
        PredictedSource(pred, "stack")
    with pytest.raises(KeypointError, match=r"\(N, 6\)"):
        pred.predict(cloud[:, :3], TEXTS[1])


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(KeypointError, match="no such keypoint checkpoint"):
        KeypointPredictor.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(KeypointError, match="not a readable checkpoint"):
        KeypointPredictor.load(junk)
    other = tmp_path / "other.pt"
    torch.save({"kind": "actstudio.expert", "state_dict": {}}, other)
    with pytest.raises(KeypointError, match="not a keypoint checkpoint"):
        KeypointPredictor.load(other)
    broken = tmp_path / "broken.pt"
    torch.save({"kind": "actstudio.keypoints", "version": 1, "config": {"width": 32}, "state_dict": {},
                "texts": [], "text_features": torch.zeros(0, 384)}, broken)
    with pytest.raises(KeypointError, match="damaged keypoint checkpoint"):
        KeypointPredictor.load(broken)


def _episodes(n: int):
    from recorder.episode import EpisodeReader

    files = sorted(PICK.glob("*.h5"))
    out = []
    for f in files:
        ep = EpisodeReader(f)
        if ep.outcome == "success":
            out.append(ep)
        if len(out) == n:
            break
    return out


def test_step_targets_are_the_commanded_pose_not_the_reached_one():
    """A press the arm could not follow all the way (the FR3's impedance stops short of the command):
    the step's target is where it was told to go, so executing the prediction presses as deep as the
    demo did. Without recorded actions the measured pose is all there is."""
    from types import SimpleNamespace

    n = 30
    reached = np.tile([0.5, 0.0, 0.10, 1.0, 0.0, 0.0, 0.0], (n, 1))
    reached[10:20, 2] = 0.038  # stopped 2 mm above the command
    commanded = reached.copy()
    commanded[10:20, 2] = 0.036
    action = np.concatenate([commanded, np.zeros((n, 1))], axis=1)
    segs = [{"start": 0, "end": 10, "primitive": "move", "instruction": ""},
            {"start": 10, "end": 20, "primitive": "press", "instruction": ""},
            {"start": 20, "end": 30, "primitive": "move", "instruction": ""}]
    ep = SimpleNamespace(path=None, annotations={"auto": segs}, ee_pose=reached, gripper=np.zeros(n), action=action)
    press = episode_steps(ep)[1]
    assert press.primitive == "press" and press.target[2] == pytest.approx(0.036)
    ep.action = None
    assert episode_steps(ep)[1].target[2] == pytest.approx(0.038)


@pytest.mark.skipif(not PICK.is_dir(), reason="data/pick_cube_50 not present")
def test_real_episodes_give_steps_targets_and_a_task_plan(tmp_path):
    eps = _episodes(3)
    # Work on copies so the clouds cache lands in tmp_path, not beside the shared data.
    copies = []
    from recorder.episode import EpisodeReader

    for ep in eps:
        dst = tmp_path / ep.path.name
        shutil.copy(ep.path, dst)
        copies.append(EpisodeReader(dst))
    steps = episode_steps(copies[0])
    assert [s.primitive for s in steps][:3] == ["move", "grasp", "lift"]
    grasp, lift = steps[1], steps[2]
    assert grasp.gripper == 0.0 and steps[0].gripper == 1.0
    assert lift.target[2] - grasp.target[2] > 0.08  # the lift ends well above the grasp
    data = build_dataset(copies, n_points=256)
    assert data.clouds.shape[1:] == (256, 6)
    assert data.plans["pick_cube"][:3] == [
        {"primitive": "move", "instruction": "move the gripper in free space"},
        {"primitive": "grasp", "instruction": "align with and grasp the object"},
        {"primitive": "lift", "instruction": "lift the object upward while holding it"}]
    # The grasp target lies on the red cube: colour points near it are red.
    c = data.clouds[(data.step == 1) & ~data.from_start][0]
    t = data.target[(data.step == 1) & ~data.from_start][0]
    near = c[np.linalg.norm(c[:, :3] - t, axis=1) < 0.03]
    assert len(near) > 0 and np.mean(near[:, 3] > near[:, 4] + 0.2) > 0.5
    assert list(tmp_path.glob("*.kpclouds-*.npz"))  # cached for the next run
    train, test = split_by_episode(data, 0.34)
    assert set(train.episode.tolist()).isdisjoint(test.episode.tolist())


def test_bundled_predictor_reads_each_instruction_and_finds_its_objects_in_a_new_scene():
    """The bundled multi-task predictor on held-out layouts of the simulated xArm6: each task's
    instruction picks that task's plan, and the contact waypoints (grasp, release, press) land within
    3 cm of the oracle's."""
    from bench.waypoint_predictor import reset_and_look
    from robots.sim.lab import SimLab
    from robots.sim.tasks import TASKS

    pred = KeypointPredictor.load(REPO / "assets/checkpoints/keypoints_multitask.pt")
    assert pred.config.task_text and set(pred.task_instructions) == set(TASKS)
    lab = SimLab.start("xarm6", realtime=False, render_hz=5.0)
    try:
        cam = lab.camera()
        cam.start()
        for i, (name, task) in enumerate(TASKS.items()):
            frame = reset_and_look(lab, cam, name, 1000 + i)  # a frame rendered after the reset
            src = PredictedSource(pred, instruction=task.instruction)
            assert src.task == name
            wps = src.waypoints(frame)
            oracle = [w for w in lab.oracle_waypoints() if w.phase in ("grasp", "place", "press")]
            got = [w for w in wps if w.label in ("grasp", "place", "press")]
            assert [w.label for w in got] == [w.phase for w in oracle], name
            for g, o in zip(got, oracle):
                assert np.linalg.norm(g.pose[:3] - o.pose[:3]) < 0.03, (name, g.label, g.pose[:3], o.pose[:3])
    finally:
        lab.close()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from app.cli import main

    rc = main(["train", "keypoints", "--episodes", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("train keypoints:") and "\n" not in err


def test_rollout_config_and_ablation_variant_accept_predicted_waypoints():
    from app.rollout import RolloutConfig
    from bench.rollout_ablation import parse_variant

    cfg = RolloutConfig(policy="spline-ik", waypoints="predicted:assets/checkpoints/kp.pt")
    assert (cfg.waypoints, cfg.keypoints) == ("predicted", "assets/checkpoints/kp.pt")
    with pytest.raises(ValueError, match="keypoint checkpoint"):
        RolloutConfig(policy="spline-ik", waypoints="predicted")
    v = parse_variant("pred=spline-ik::predicted:runs/kp/keypoints.pt:0.01")
    assert v["waypoints"] == "predicted:runs/kp/keypoints.pt" and v["noise"] == 0.01


@pytest.mark.parametrize("yaw_deg", [-40.0, -12.0, 0.0, 25.0])
def test_square_yaw_measures_a_cube_top_within_a_few_degrees(yaw_deg):
    from policies.keypoints import square_yaw

    rng = np.random.default_rng(int(yaw_deg) + 50)
    uv = rng.uniform(-0.02, 0.02, size=(60, 2))  # a 4 cm cube's top face, sampled like the FPS cloud
    th = np.radians(yaw_deg)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    top = np.c_[uv @ R.T + [0.45, 0.1], np.full(60, 0.04)]
    clutter = np.c_[rng.uniform(0.6, 0.7, (40, 2)), rng.uniform(0.02, 0.1, 40)]  # another object, far away
    est = square_yaw(np.r_[top, clutter], np.array([0.452, 0.098, 0.022]))
    assert abs(np.degrees(est) - yaw_deg) < 4.0


# --------------------------------------------------------------------------------------------
# One predictor for several tasks: conditioned on the task instruction, plan chosen by it
# --------------------------------------------------------------------------------------------

STEP = "move the gripper to the object"
TASK_TEXTS = [INITIAL_STATE, STEP, "unused", "fetch the red one", "fetch the blue one"]


class FakeTaskText(FakeText):
    def pair(self, a, b, task=None):
        parts = [self.features[torch.as_tensor(a)], self.features[torch.as_tensor(b)]]
        if task is not None:
            parts.append(self.features[torch.as_tensor(task)])
        return torch.cat(parts, dim=-1)


def two_task(n: int, seed: int) -> KeypointData:
    """The same step text in two tasks; only the task instruction says which cluster is the target."""
    d = synthetic(n, seed)
    which = np.arange(n) % 2
    d.text = np.full(n, 1)
    d.task = 3 + which
    d.texts = TASK_TEXTS
    d.gripper = np.zeros(n, np.float32)
    d.plans = {"red": [{"primitive": "move", "instruction": STEP}], "blue": [{"primitive": "move", "instruction": STEP}]}
    d.task_instructions = {"red": TASK_TEXTS[3], "blue": TASK_TEXTS[4]}
    return d


def test_task_instruction_conditioning_tells_tasks_with_the_same_steps_apart(tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    text = FakeTaskText(TASK_TEXTS)
    train, test = two_task(96, 0), two_task(40, 1)
    tcfg = KeypointTrainConfig(steps=250, batch_size=16, lr=3e-3, augment=False, log_every=1000)
    errs = {}
    for task_text in (False, True):
        cfg = KeypointConfig(n_points=256, width=32, task_text=task_text)
        model = train_keypoints(train, cfg, tcfg, text).model
        errs[task_text] = evaluate(model, test, text)["all"]["median_cm"]
    # Without the task text the step is ambiguous (it can at best pick one cluster or the middle).
    assert errs[True] < 4.0 and errs[False] > 2 * errs[True], errs

    path = save_checkpoint(tmp_path / "kp.pt", model, TASK_TEXTS, text.features, train.plans, {},
                           train.task_instructions)
    pred = KeypointPredictor.load(path)
    assert pred.config.task_text and pred.task_instructions == train.task_instructions
    assert pred.resolve("fetch the blue one") == ("blue", pytest.approx(1.0, abs=1e-3))
    cloud = test.clouds[1]  # an odd sample: blue is the target
    src = PredictedSource(pred, instruction="fetch the blue one")
    assert src.task == "blue"
    (wp,) = [w for w in src.waypoints(cloud) if w.label == "move"][-1:]
    assert np.linalg.norm(wp.pose[:3] - test.target[1]) < 0.05
    red = PredictedSource(pred, task="blue", instruction="fetch the red one")  # the instruction wins
    assert red.task == "red" and red.asked_task == "blue"
    with pytest.raises(KeypointError, match="no trained task matches"):
        pred.resolve(INITIAL_STATE)  # orthogonal to both task texts here
    with pytest.raises(KeypointError, match="conditioned on the task instruction"):
        pred.predict(cloud, STEP)


def test_old_two_text_checkpoints_still_load_and_predict(toy_model, tmp_path):
    model, _ = toy_model
    path = save_checkpoint(tmp_path / "old.pt", model, TEXTS, FakeText(TEXTS).features, {"toy": []})
    blob = torch.load(path, weights_only=True)
    blob["config"].pop("task_text")
    blob.pop("task_instructions")
    torch.save(blob, path)
    pred = KeypointPredictor.load(path)
    assert not pred.config.task_text
    xyz, _ = pred.predict(synthetic(2, 3).clouds[0], TEXTS[1])
    assert np.isfinite(xyz).all()
    with pytest.raises(KeypointError, match="stores no task instructions"):
        pred.resolve("pick up the red cube")


def test_sentence_model_places_paraphrases_with_their_task():
    """The real MiniLM features (policies.text): paraphrases of the sim tasks' instructions are nearest
    their own task and above MIN_TASK_SIMILARITY; an unrelated request is below it."""
    from policies.keypoints import MIN_TASK_SIMILARITY
    from policies.text import TextEncoder
    from robots.sim.tasks import TASKS

    enc = TextEncoder()
    names = list(TASKS)
    ref = torch.as_tensor(enc.encode([TASKS[t].instruction for t in names]))
    asks = {"pick_cube": "grab the red cube", "place_in_bin": "put the red cube into the bin",
            "stack_cubes": "put the red cube on top of the green one", "press_button": "push the button"}
    q = torch.as_tensor(enc.encode(list(asks.values())))
    sims = torch.nn.functional.cosine_similarity(q[:, None], ref[None], dim=-1)
    for i, task in enumerate(asks):
        assert names[int(sims[i].argmax())] == task, (task, sims[i])
        assert float(sims[i].max()) >= MIN_TASK_SIMILARITY
    other = torch.as_tensor(enc.encode(["open the door"]))
    assert float(torch.nn.functional.cosine_similarity(other, ref).max()) < MIN_TASK_SIMILARITY


def test_augmentation_moves_cloud_and_target_together_also_vertically():
    from policies.keypoints import _augment

    gen = torch.Generator().manual_seed(0)
    cloud = torch.rand(8, 64, 6)
    target = torch.rand(8, 3)
    cfg = KeypointTrainConfig(shift=0.0, rotate=0.0, jitter=0.0, lift=0.03)
    c, t, _ = _augment(cloud, target, torch.zeros(8), cfg, torch.tensor([0.5, 0.0, 0.2]), gen)
    dz = t[:, 2] - target[:, 2]
    assert dz.abs().max() <= 0.03 and dz.abs().max() > 0.005  # a table a few cm higher or lower
    torch.testing.assert_close(c[..., 2] - cloud[..., 2], dz[:, None].expand(8, 64))
    torch.testing.assert_close(c[..., :2], cloud[..., :2])
