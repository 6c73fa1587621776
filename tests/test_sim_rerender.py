"""Sim episodes keep each tick's simulator state, and `main.py sim-rerender` rebuilds one image per tick."""
import h5py
import numpy as np
import pytest

from app.cli import main as cli_main
from app.episodes import run_episode
from app.recording import RecordingService
from app.session import DeviceSession
from recorder.episode import EpisodeReader, EpisodeWriter
from robots.sim.rerender import RerenderError, rerender_episode


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One short scripted sim-xarm6 episode (2 s: the arm is moving when it ends)."""
    out = tmp_path_factory.mktemp("live")
    with DeviceSession("sim-xarm6", "sim", "scripted", 20.0, task="pick_cube", seed=4) as s:
        rec = RecordingService(out, robot="sim-xarm6", camera=s.camera)
        res = run_episode(s, rec, "pick_cube", seed=4, max_seconds=2.0)
    return res.path


def test_episode_records_the_sim_state_of_every_tick(recorded):
    with EpisodeReader(recorded) as r:
        n = len(r.time)
        qpos = np.asarray(r.extras["sim_qpos"])
        assert qpos.shape[0] == n and qpos.shape[1] > r.joint_pos.shape[1] and np.isfinite(qpos).all()
        assert np.asarray(r.extras["sim_mocap_pos"]).shape == (n, 6)  # bin + button
        # The state is the same snapshot as the recorded joints (the arm's joints lead the qpos vector).
        assert np.allclose(qpos[:, :6], r.joint_pos, atol=1e-9)


def test_rerender_gives_every_tick_its_own_image_of_the_recorded_scene(recorded, tmp_path):
    assert cli_main(["sim-rerender", str(recorded), "--out", str(tmp_path)]) == 0
    out = tmp_path / recorded.name
    with EpisodeReader(recorded) as live, EpisodeReader(out) as rr:
        n = len(live.time)
        qpos = np.asarray(rr.extras["sim_qpos"])
        images = [rr.rgb(i) for i in range(n)]
        distinct_states = len({q.tobytes() for q in qpos})
        distinct_images = len({im.tobytes() for im in images})
        live_distinct = len(np.unique(rr.extras["frame_index_live"]))
        # Identical states render identical images; a state change of a hair may stay within a pixel.
        assert 0.9 * distinct_states <= distinct_images <= distinct_states and distinct_images > live_distinct
        assert np.array_equal(rr.extras["frame_index"], np.arange(n))
        # Same model, camera and renderer as the live camera: where a live frame caught the same
        # state (the still arm after the reset) the images agree to the pixel; elsewhere they show
        # the same scene a few ticks apart.
        diffs = [np.abs(live.rgb(i).astype(int) - images[i].astype(int)).mean() for i in range(n)]
        assert min(diffs) < 0.5 and np.median(diffs) < 8
        d_live, d_rr = live.depth(0).astype(float), rr.depth(0).astype(float)
        assert np.median(np.abs(d_live - d_rr)) <= 1  # mm
        # Everything but the images is the recording's.
        assert np.array_equal(live.ee_pose, rr.ee_pose) and np.array_equal(live.action, rr.action)
        assert rr.meta["outcome"] == live.meta["outcome"]


def test_episode_without_sim_state_is_refused_with_one_line(tmp_path):
    cam = {"K": np.eye(3), "width": 8, "height": 6, "T_base_camera": np.eye(4), "depth_scale": 0.001,
           "model": "sim:scene_cam", "serial": ""}
    w = EpisodeWriter(tmp_path / "old.h5", {"robot": "sim-xarm6", "task": "pick_cube", "fps": 20.0}, cam)
    for i in range(3):
        w.append(0.05 * i, np.zeros((6, 8, 3), np.uint8), np.zeros((6, 8), np.uint16), np.r_[0.3, 0, 0.3, 0, 0, 0, 1],
                 np.zeros(6), 1.0, np.r_[0.3, 0, 0.3, 0, 0, 0, 1, 1.0], {"frame_index": float(i)}, block=True)
    path = w.finalize("success", propose=False)
    with pytest.raises(RerenderError, match=r"old\.h5: no /extras/sim_qpos"):
        rerender_episode(path, tmp_path / "copy.h5")
    assert not (tmp_path / "copy.h5").exists()
    with h5py.File(path) as f:  # the source is untouched
        assert "rendered_from" not in f["obs/rgb"].attrs


def test_sim_franka_episode_keeps_its_state_and_rerenders_to_the_live_images(tmp_path):
    """The FR3 is driven through the real franky client; its lab adds the simulator state to each reading
    (robots/sim/franka_arm.py), so sim-franka episodes re-render too (franky-sim's scene, rebuilt offline)."""
    with DeviceSession("sim-franka", "sim", "scripted", 20.0, task="pick_cube", seed=4) as s:
        rec = RecordingService(tmp_path / "live", robot="sim-franka", camera=s.camera)
        live_path = run_episode(s, rec, "pick_cube", seed=4, max_seconds=1.5).path
    out = tmp_path / "rr" / live_path.name
    assert cli_main(["sim-rerender", str(live_path), "--out", str(out.parent)]) == 0
    with EpisodeReader(live_path) as live, EpisodeReader(out) as rr:
        n = len(live.time)
        qpos = np.asarray(rr.extras["sim_qpos"])
        assert qpos.shape[0] == n and np.isfinite(qpos).all()
        assert np.array_equal(rr.extras["frame_index"], np.arange(n))
        # Same scene, camera and renderer as the live camera: where it caught the recorded state the
        # images agree to the pixel; elsewhere they show the same scene a few ticks apart.
        diffs = [np.abs(live.rgb(i).astype(int) - rr.rgb(i).astype(int)).mean() for i in range(n)]
        assert min(diffs) < 0.5 and np.median(diffs) < 8
