"""Rollouts: the policy runtime (chunk execution, gated guidance, stops) and the rollout runner end to
end on the simulated xArm6 with a tiny action expert trained in the test."""
import json
import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from app.rollout import RolloutConfig, RolloutRunner
from policies.action_expert import ActionExpert, ExpertConfig, ExpertPolicy
from policies.datasets import windows_from_trajectory
from policies.runtime import GatedClock, PolicyRuntime, SplineSource, timed_trajectory
from policies.train import TrainConfig, train
from policies.waypoints import Waypoint, WaypointTrajectory
from robots.base import ArmState, Workspace
from robots.sim.tasks import Waypoint as TaskWaypoint

TINY = dict(horizon=8, n_action_steps=4, unet_dims=(16, 32), pointnet_dims=(16, 32), state_feat=32,
            guide_feat=32, cloud_feat=16, step_embed=32, n_points=64)
DOWN = Rotation.from_euler("x", np.pi).as_quat()
XARM_BOX = Workspace(lo=(0.15, -0.45, 0.005), hi=(0.65, 0.45, 0.60))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _tiny_checkpoint(path, centre, steps=3, relative=True):
    """A few real training steps on a short top-down trajectory around ``centre``. With
    ``relative=False`` (base-frame positions) the normaliser maps every output within ~3 cm of
    ``centre``, tool down, wherever the arm is (the xArm6 home pose is (0.30, 0, 0.30))."""
    cfg = ExpertConfig(**TINY, relative=relative)
    c = np.asarray(centre, dtype=float)
    wps = [Waypoint(np.r_[c, DOWN], 1.0), Waypoint(np.r_[c + (0.02, 0.02, -0.02), DOWN], 0.0),
           Waypoint(np.r_[c + (0.01, -0.02, 0.01), DOWN], 0.0)]
    tr = WaypointTrajectory(wps, speed=0.05)
    t = np.arange(0, tr.duration + 0.2, 0.05)
    a, g = tr.sample(t), tr.gripper(t)
    w = windows_from_trajectory(t, np.r_[a[:1], a[:-1]], np.r_[g[:1], g[:-1]], np.c_[a, g], tr, cfg)
    res = train(TrainConfig(out_dir=str(path), steps=steps, batch_size=64, warmup_steps=1, log_every=10 ** 9,
                            ckpt_every=10 ** 9), w, cfg, progress="none")
    return res.checkpoint


@pytest.fixture(scope="module")
def ckpt_inside(tmp_path_factory):
    torch.set_num_threads(1)
    return _tiny_checkpoint(tmp_path_factory.mktemp("ck_in"), (0.30, 0.0, 0.30))


@pytest.fixture(scope="module")
def ckpt_outside(tmp_path_factory):
    torch.set_num_threads(1)
    # Every pose the normaliser can produce lies above the xArm6 box's 0.60 m ceiling.
    return _tiny_checkpoint(tmp_path_factory.mktemp("ck_out"), (0.30, 0.0, 0.80), relative=False)


def _state(xyz, grip=1.0):
    return ArmState(stamp=time.monotonic(), ee_pose=np.r_[xyz, DOWN], joint_pos=np.zeros(6), gripper=grip)


def _task_wps():
    return [TaskWaypoint(np.r_[0.45, 0.0, 0.15, DOWN], 1.0, "move"),
            TaskWaypoint(np.r_[0.45, 0.0, 0.03, DOWN], 1.0, "lower"),
            TaskWaypoint(np.r_[0.45, 0.0, 0.03, DOWN], 0.0, "grasp", dwell=0.8),
            TaskWaypoint(np.r_[0.45, 0.0, 0.17, DOWN], 0.0, "lift")]


# ------------------------------------------------------------------ pure runtime tests


def test_timed_trajectory_passes_waypoints_with_expert_timing():
    tr = timed_trajectory(np.r_[0.3, 0.0, 0.3, DOWN], _task_wps())
    assert tr.t_start == 0.0 and tr.duration > 2.0
    np.testing.assert_allclose(tr.sample(0.0)[:3], [0.3, 0.0, 0.3], atol=1e-9)
    np.testing.assert_allclose(tr.sample(tr.t_end)[:3], [0.45, 0.0, 0.17], atol=1e-9)
    # The gripper closes at the grasp waypoint and stays closed for the lift.
    assert tr.gripper(0.0) == 1.0 and tr.gripper(tr.t_end) == 0.0
    noisy = timed_trajectory(np.r_[0.3, 0.0, 0.3, DOWN], _task_wps(), position_noise=0.02,
                             rng=np.random.default_rng(1))
    assert 0.005 < np.linalg.norm(noisy.sample(noisy.t_end)[:3] - tr.sample(tr.t_end)[:3]) < 0.1


def test_gated_clock_waits_for_a_lagging_arm_and_never_falls_behind_it():
    tr = timed_trajectory(np.r_[0.3, 0.0, 0.3, DOWN], _task_wps())
    clock = GatedClock(tr, lag_tol=0.06, slack_s=0.5, clock_tol=0.06)
    start = np.r_[0.3, 0.0, 0.3, DOWN]
    clock.update(start, 0.0)
    for k in range(1, 40):  # the arm never moves: the clock stops slack_s ahead of it
        clock.update(start, k * 0.05)
    held = clock.t
    assert 0.3 < held < 2.0
    clock.update(start, 40 * 0.05)
    assert clock.t == held  # stopped
    # An arm that follows the trajectory keeps it running at the loop's pace.
    for k in range(41, 61):
        clock.update(tr.sample(clock.t), k * 0.05)
    assert clock.t == pytest.approx(held + 20 * 0.05, abs=0.02)
    # An arm further along the path than the clock (a policy cutting a corner) pulls the clock with it.
    ahead = clock.t + 1.0
    clock.update(tr.sample(ahead), 61 * 0.05)
    # (in a dwell the clock goes to the dwell's start: the same pose)
    assert clock.t > ahead - 1.0 + 0.2 and np.linalg.norm(tr.sample(clock.t)[:3] - tr.sample(ahead)[:3]) < 0.006
    # An arm far off the path does not move the clock.
    t_before = clock.t
    clock.update(tr.sample(clock.t) + np.r_[0.0, 0.1, 0.0, 0, 0, 0, 0], 62 * 0.05)
    assert clock.t == pytest.approx(t_before, abs=0.02)


def test_gated_clock_runs_on_for_an_arm_at_rest_near_it_but_not_for_a_moving_one():
    """Imprecise waypoints: the expert grasps the real cube 3 cm from the waypoint and holds still there.
    The clock must go on (through the dwell, to the lift); an arm still moving there must not move it."""
    tr = timed_trajectory(np.r_[0.3, 0.0, 0.3, DOWN], _task_wps())
    grasp = next(w for w in tr.waypoints if w.dwell > 0)
    near = grasp.pose + np.r_[0.03, 0.0, 0.0, 0, 0, 0, 0]
    rest, moving = GatedClock(tr), GatedClock(tr)
    for clock in (rest, moving):
        clock.t = grasp.t  # the guidance has arrived at the grasp
    for k in range(60):
        rest.update(near, k * 0.05)
        wobble = np.r_[0.0, 0.008 * (-1) ** k, 0.0, 0, 0, 0, 0]  # 16 cm/s back and forth
        moving.update(near + wobble, k * 0.05)
    assert rest.t > grasp.t + grasp.dwell + 0.3  # through the dwell, into the lift (then > lag_tol away)
    assert moving.t < grasp.t + 0.5


def test_spline_source_follows_the_trajectory_to_the_end():
    tr = timed_trajectory(np.r_[0.3, 0.0, 0.3, DOWN], _task_wps())
    src = SplineSource(tr)
    pose = tr.sample(0.0)
    t = 0.0
    while not src.done(t) and t < 30:
        pose, grip, info = src.next_target(_state(pose[:3]), None, t)
        t += 0.05
    assert src.done(t) and grip == 0.0
    np.testing.assert_allclose(pose[:3], [0.45, 0.0, 0.17], atol=1e-6)


def test_runtime_executes_chunks_by_time_and_replans(ckpt_inside):
    pol = ExpertPolicy(ckpt_inside, ddim_steps=2, jit=False)
    rt = PolicyRuntime(pol, timed_trajectory(np.r_[0.4, 0.0, 0.2, DOWN], _task_wps()), 20.0,
                       workspace=XARM_BOX, use_cloud=False, threaded=False)
    seen = []
    for k in range(10):
        pose, grip, info = rt.next_target(_state([0.4, 0.0, 0.2]), None, k * 0.05)
        seen.append(info["chunk_index"])
        assert grip in (0.0, 1.0) and np.all(np.isfinite(pose))
    # n_action_steps 4, replan 2 ticks early: indices 0,1 then a new chunk every 2 ticks.
    assert seen == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert rt.chunks == 5 and len(rt.latencies) == 5 and rt.latest_chunk.poses.shape == (8, 7)
    assert rt.latest_chunk.guidance.shape == (pol.config.n_guide, 8)


def test_runtime_without_guidance_conditions_on_the_current_pose(ckpt_inside):
    pol = ExpertPolicy(ckpt_inside, ddim_steps=2, jit=False)
    rt = PolicyRuntime(pol, None, 20.0, use_cloud=False, threaded=False)
    rt.next_target(_state([0.42, 0.01, 0.22], grip=0.0), None, 0.0)
    g = rt.latest_chunk.guidance
    np.testing.assert_allclose(g[:, :3], np.tile([0.42, 0.01, 0.22], (pol.config.n_guide, 1)))
    assert np.all(g[:, 7] == 0.0)


def test_runtime_nan_output_stops_and_holds_the_measured_pose(ckpt_inside):
    model = ActionExpert.load(ckpt_inside)
    with torch.no_grad():
        model.unet.final[-1].weight.fill_(float("nan"))
    rt = PolicyRuntime(ExpertPolicy(model, ddim_steps=2, jit=False), None, 20.0, use_cloud=False, threaded=False)
    here = [0.41, 0.02, 0.21]
    for k in range(5):
        pose, grip, info = rt.next_target(_state(here), None, k * 0.05)
        np.testing.assert_allclose(pose[:3], here)
        assert info["policy_stopped"] == "nan"
    assert rt.stopped == "nan" and rt.chunks == 1  # never asks the broken network again


def test_runtime_out_of_workspace_stops(ckpt_outside):
    rt = PolicyRuntime(ExpertPolicy(ckpt_outside, ddim_steps=2, jit=False), None, 20.0, workspace=XARM_BOX,
                       use_cloud=False, threaded=False)
    pose, _, info = rt.next_target(_state([0.4, 0.0, 0.3]), None, 0.0)
    assert rt.stopped == "out_of_workspace" and "outside the workspace" in rt.stop_detail
    np.testing.assert_allclose(pose[:3], [0.4, 0.0, 0.3])


def test_rollout_config_rejects_bad_combinations():
    with pytest.raises(ValueError, match="checkpoint"):
        RolloutConfig(policy="expert")
    with pytest.raises(ValueError, match="spline-ik"):
        RolloutConfig(policy="spline-ik", waypoints="none")
    with pytest.raises(ValueError, match="waypoints must be"):
        RolloutConfig(checkpoint="x.pt", waypoints="vlm")


# ------------------------------------------------------------------ end to end on the simulated xArm6


@pytest.fixture(scope="module")
def session(sim_session):
    return sim_session("sim-xarm6", "sim", "none", 20.0, task="pick_cube", seed=1000)


def _episodes(run):
    from recorder.episode import EpisodeReader

    return [EpisodeReader(p) for p in sorted((run / "episodes").glob("*.h5"))]


def test_rollout_two_trials_end_to_end_writes_report_and_episodes(session, ckpt_inside, tmp_path):
    run = tmp_path / "eval"
    cfg = RolloutConfig(task="pick_cube", checkpoint=str(ckpt_inside), trials=2, max_seconds=4,
                        ddim_steps=2, out_dir=str(run))
    updates = []
    runner = RolloutRunner(session, cfg, on_update=lambda: updates.append(1))
    trials = runner.run()
    assert [t.seed for t in trials] == [1000, 1001]
    # An untrained network does not pick the cube: each trial ends by timeout or a stop (its random
    # chunks may jump further than the safety filter's 10 cm or leave the box).
    assert all(t.outcome == "failure" and t.reason in ("timeout", "out_of_workspace", "safety_stop")
               for t in trials), trials
    assert any(t.chunks >= 1 and np.isfinite(t.latency_p50_ms) for t in trials), trials
    doc = json.loads((run / "report.json").read_text())
    assert doc["summary"]["pick_cube"]["trials"] == 2 and doc["latency"]["n"] >= 2
    assert (run / "trials.csv").read_text().count("\n") == 3 and (run / "report.png").stat().st_size > 5000
    eps = _episodes(run)
    assert len(eps) == 2 and all(e.n_frames > 10 for e in eps)
    assert {str(e.path) for e in eps} == {t.episode for t in trials}
    snap = runner.snapshot()
    assert snap.phase == "done" and len(snap.trials) == 2 and snap.chunk is not None and snap.chunk.shape == (8, 7)
    # What the Evaluate tab's 3D view draws, each field in its own slot (not shifted by one).
    assert snap.guidance.shape == (4, 8) and snap.cloud.ndim == 2 and snap.cloud.shape[1] == 3
    assert snap.plan.ndim == 2 and snap.plan.shape[1] == 3 and snap.keypoint is None  # this model has no head
    assert isinstance(snap.message, str) and isinstance(snap.report_dir, str) and snap.report_dir
    snap.chunk[:] = np.nan  # a copy: the runner's state is untouched
    assert np.isfinite(runner.snapshot().chunk).all()
    assert len(updates) > 5


def test_rollout_spline_ik_baseline_runs_the_oracle_spline_to_its_end(session, tmp_path):
    run = tmp_path / "spline"
    cfg = RolloutConfig(task="pick_cube", policy="spline-ik", trials=1, max_seconds=15, out_dir=str(run))
    trials = RolloutRunner(session, cfg).run()
    # The outcome is the sim predicate's (the baseline picks about a third of the layouts, see the
    # bundled checkpoint's report); the plan itself must have been executed to the lift pose.
    assert trials[0].reason in ("success", "plan_finished"), trials[0]
    ee = np.asarray(_episodes(run)[0].ee_pose)[:, :3]
    lift = [w for w in session.lab.oracle_waypoints() if w.phase == "lift"][0].pose[:3]
    assert ee[:, 2].min() < 0.04  # went down to the cube
    assert np.linalg.norm(ee[-1] - lift) < 0.04  # a real-time servo trails its target by a few cm
    assert json.loads((run / "report.json").read_text())["summary"]["pick_cube"]["trials"] == 1


def test_scene_variation_holds_for_the_run_only(session, tmp_path):
    """table-2cm: the trial's scene has the lowered table and the arm a lowered workspace floor; after
    the run both are back (the app's session and its arm outlive a rollout). A hardware session
    refuses a variation up front."""
    from types import SimpleNamespace

    floor = session.arm.limits.workspace.lo[2]
    seen = {}
    lab_reset = session.lab.reset

    def reset(task, seed, variation=None):
        info = lab_reset(task, seed, variation)
        seen.update(table=float(session.lab.object_poses()["table"][2]), floor=session.arm.limits.workspace.lo[2])
        return info

    session.lab.reset = reset
    try:
        cfg = RolloutConfig(task="press_button", policy="spline-ik", trials=1, max_seconds=1, variation="table-2cm",
                            out_dir=str(tmp_path / "var"))
        RolloutRunner(session, cfg).run()
    finally:
        del session.lab.reset
    assert seen == {"table": pytest.approx(-0.02), "floor": pytest.approx(floor - 0.02)}
    assert session.arm.limits.workspace.lo[2] == floor and session.lab.variation == "none"
    session.lab.reset("press_button", 1000)
    assert float(session.lab.object_poses()["table"][2]) == 0.0
    hw = SimpleNamespace(lab=None, camera=None, arm=session.arm)
    with pytest.raises(ValueError, match="only in the simulated lab"):
        RolloutRunner(hw, RolloutConfig(policy="spline-ik", waypoints="keyframes", demo="d.h5", variation="colour"))
    with pytest.raises(ValueError, match="unknown scene variation"):
        RolloutConfig(policy="spline-ik", variation="tilted")


def test_rollout_nan_mid_trial_stops_with_reason_and_the_arm_holds(session, ckpt_inside, tmp_path):
    """The network turns NaN after a few chunks of real motion: the trial stops with "nan" and the arm
    does not move on after the stop."""
    model = ActionExpert.load(ckpt_inside)
    pol = ExpertPolicy(model, ddim_steps=2, jit=False)
    real_act = pol.act
    calls = []

    def act(state, cloud, guidance):
        calls.append(1)
        if len(calls) == 4:
            with torch.no_grad():
                model.unet.final[-1].bias.fill_(float("nan"))
        return real_act(state, cloud, guidance)

    pol.act = act
    run = tmp_path / "nan"
    cfg = RolloutConfig(task="pick_cube", checkpoint="unused.pt", trials=1, max_seconds=6, ddim_steps=2,
                        out_dir=str(run))
    trials = RolloutRunner(session, cfg, policy=pol).run()
    assert trials[0].reason == "nan" and trials[0].outcome == "failure"
    ep = _episodes(run)[0]
    act_xyz = np.asarray(ep.action)[:, :3]
    ee = np.asarray(ep.ee_pose)[:, :3]
    # The commanded target after the stop is constant (the hold pose); the arm settles on it.
    tail = act_xyz[-2:]
    assert np.ptp(tail, axis=0).max() < 1e-9
    a = session.arm.state().ee_pose[:3]
    time.sleep(0.5)
    b = session.arm.state().ee_pose[:3]
    assert np.linalg.norm(b - a) < 1e-3
    assert np.linalg.norm(ee[-1] - tail[-1]) < 0.02


def test_rollout_out_of_workspace_prediction_stops_the_trial(session, ckpt_outside, tmp_path):
    run = tmp_path / "oow"
    cfg = RolloutConfig(task="pick_cube", checkpoint=str(ckpt_outside), trials=1, max_seconds=5, ddim_steps=2,
                        out_dir=str(run))
    trials = RolloutRunner(session, cfg).run()
    assert trials[0].reason == "out_of_workspace" and trials[0].duration_s < 5
    ee = np.asarray(_episodes(run)[0].ee_pose)[:, :3]
    assert np.ptp(ee, axis=0).max() < 0.003  # the arm never left its start pose


def test_oracle_sparse_waypoints_are_the_plans_gripper_changes(session):
    cfg = RolloutConfig(task="pick_cube", policy="spline-ik", waypoints="oracle-sparse", trials=1)
    full = session.lab.oracle_waypoints()
    sparse = RolloutRunner(session, cfg)._waypoints()
    assert [w.phase for w in full] == ["move", "lower", "grasp", "lift"]
    assert [w.label for w in sparse] == ["grasp", "lift"]
    # Read twice from the live physics: a cube left by an earlier trial may still settle by microns.
    np.testing.assert_allclose(sparse[0].pose, full[2].pose, atol=1e-4)
    assert sparse[0].dwell == full[2].dwell > 0


def test_rollout_names_the_failing_subtask_and_the_expert_corrects_it(session, tmp_path):
    """Imprecise waypoints (3 cm noise) make spline-ik close the gripper beside the cube: the report
    names the subtask and why; the failed trial becomes an expert correction episode (DAgger-style)."""
    from app.corrections import record_corrections
    from recorder.episode import EpisodeReader

    run = tmp_path / "noisy"
    cfg = RolloutConfig(task="pick_cube", policy="spline-ik", trials=1, seed=1001, waypoint_noise=0.03,
                        max_seconds=12, out_dir=str(run))
    t = RolloutRunner(session, cfg).run()[0]
    assert t.outcome == "failure" and t.failed_at in ("move", "grasp"), t
    assert t.diagnosis and ("closed" in t.diagnosis or "pushed" in t.diagnosis), t
    assert t.reached.split()[0] == "move" and t.failed_at not in t.completed.split()
    n = EpisodeReader(t.episode).n_frames
    assert 0 <= t.failed_frame < n
    # The proposals' segments of the trial, in episode frames, cover it from the first frame to the last.
    segs = [(lab, *map(int, span.split("-"))) for lab, span in (x.split(":") for x in t.segments.split())]
    assert segs[0][0] == "move" and segs[0][1] == 0 and segs[-1][2] == n, t.segments
    doc = json.loads((run / "report.json").read_text())
    rows = {s["subtask"]: s for s in doc["subtasks"]}
    assert list(rows) == ["move", "grasp", "lift"] and rows[t.failed_at]["failed_here"] == 1
    assert "failed_at" in (run / "trials.csv").read_text() and (run / "subtasks.csv").is_file()
    out = tmp_path / "corrections"
    done = record_corrections(session, run, out, max_seconds=20)
    assert len(done) == 1 and done[0].takeover_frame == t.failed_frame
    c = done[0]
    if c.path is not None:  # the expert picks from where the trial failed (a starved sim may make it fail too)
        r = EpisodeReader(c.path)
        assert r.outcome == "success" and r.n_frames > 20 and "took over" in r.meta["notes"]
        # Recorded from the takeover: the first frame is where the replayed trial had the arm, not home.
        trial_ee = np.asarray(EpisodeReader(t.episode).ee_pose)[t.failed_frame, :3]
        assert np.linalg.norm(np.asarray(r.ee_pose)[0, :3] - trial_ee) < 0.03
