"""RealSense driver: real SDK round trips (software_device + recorder → .db3 → pipeline playback)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.base import Camera, DeviceDisconnected, DeviceError
from robots.factory import make_camera
from robots.realsense import (ClockMapper, RealSenseCamera, SoftwareRGBDDevice, load_extrinsics,
                              write_rgbd_recording)

W, H, FPS = 64, 48, 30
K = np.array([[50.0, 0.0, 31.5], [0.0, 51.0, 23.5], [0.0, 0.0, 1.0]])
DEPTH_SCALE = 0.0005


def pattern(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame i: every pixel distinct, so any shift, swap or lossy codec shows."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = (i * 23) % 256
    rgb[..., 1] = np.arange(W, dtype=np.uint8)[None, :] * 3
    rgb[..., 2] = np.arange(H, dtype=np.uint8)[:, None] * 5
    depth = (np.arange(W * H, dtype=np.uint32).reshape(H, W) * 7 + i * 1000 + 1).astype(np.uint16)
    return rgb, depth


def frames(n: int, skip: tuple[int, ...] = ()):
    for i in range(n):
        if i not in skip:
            yield (*pattern(i), i, 1000.0 + i * 1000.0 / FPS)


def drain(cam: RealSenseCamera) -> list:
    out = []
    with pytest.raises(DeviceDisconnected, match="end of recording"):
        while True:
            out.append(cam.wait_frame(timeout=5.0))
    return out


def test_db3_round_trip_returns_written_frames_and_intrinsics(tmp_path):
    path = write_rgbd_recording(tmp_path / "rec.db3", frames(10), K=K, depth_scale=DEPTH_SCALE, fps=FPS)
    cam = RealSenseCamera(playback=path, realtime=False)
    assert isinstance(cam, Camera)
    with cam:
        got = drain(cam)
    assert [f.index for f in got] == list(range(10))
    for i, f in enumerate(got):
        rgb, depth = pattern(i)
        np.testing.assert_array_equal(f.rgb, rgb)
        np.testing.assert_array_equal(f.depth, depth)
        np.testing.assert_allclose(f.K, K)
        assert f.depth_scale == pytest.approx(DEPTH_SCALE, rel=1e-6)
        assert f.hw_stamp == pytest.approx(1.0 + i / FPS, abs=1e-6)
    stamps = np.array([f.stamp for f in got])

    assert (cam.width, cam.height, cam.fps) == (W, H, FPS)
    assert cam.dropped_frames == 0 and cam.ended and cam.depth_registered
    assert not cam.calibrated and np.array_equal(got[0].T_base_camera, np.eye(4))


def test_frames_skipped_when_recording_are_counted_as_dropped(tmp_path):
    path = write_rgbd_recording(tmp_path / "gaps.db3", frames(12, skip=(3, 4, 8)), K=K, fps=FPS)
    with RealSenseCamera(playback=path, realtime=False) as cam:
        got = drain(cam)
    assert [f.index for f in got] == [0, 1, 2, 5, 6, 7, 9, 10, 11]
    assert cam.dropped_frames == 3
    np.testing.assert_array_equal(got[3].rgb, pattern(5)[0])


def test_depth_from_another_viewpoint_is_aligned_to_colour(tmp_path):
    # Depth camera at half resolution, 5 cm to the right of the colour camera; a near square
    # (0.5 m) in front of a far wall (2 m). Alignment must land the square where the colour
    # camera sees it: shifted by fx * 0.05 / 0.5 = 5 px compared with the unshifted geometry.
    Kd = np.array([[25.0, 0.0, 15.5], [0.0, 25.5, 11.5], [0.0, 0.0, 1.0]])
    depth = np.full((24, 32), 2000, np.uint16)
    depth[8:16, 12:20] = 500
    T_color_depth = np.eye(4)
    T_color_depth[0, 3] = 0.05
    rgb = np.zeros((H, W, 3), np.uint8)
    path = write_rgbd_recording(tmp_path / "offset.db3", [(rgb, depth, 0, 1000.0), (rgb, depth, 1, 1033.3)],
                                K=K, depth_K=Kd, depth_scale=0.001, T_color_depth=T_color_depth)
    with RealSenseCamera(playback=path, realtime=False) as cam:
        f = cam.wait_frame(5.0)
    assert not cam.depth_registered
    assert f.depth.shape == (H, W)
    near = np.argwhere(f.depth == 500)
    assert len(near) > 150  # ~16×16 colour pixels
    # Expected: square centre in the depth camera, lifted to 3-D, moved into the colour frame.
    uv_d = np.array([15.5, 11.5])  # centre of columns 12..19, rows 8..15
    p_d = np.array([(uv_d[0] - Kd[0, 2]) / Kd[0, 0], (uv_d[1] - Kd[1, 2]) / Kd[1, 1], 1.0]) * 0.5
    p_c = T_color_depth[:3, :3] @ p_d + T_color_depth[:3, 3]
    uv_c = (K @ (p_c / p_c[2]))[:2]
    centroid = near[:, ::-1].mean(axis=0)  # (u, v)
    np.testing.assert_allclose(centroid, uv_c, atol=1.0)
    assert set(np.unique(f.depth)) <= {0, 500, 2000}


def test_realtime_playback_keeps_newest_frame(tmp_path):
    path = write_rgbd_recording(tmp_path / "paced.db3", frames(8), K=K, fps=FPS, pace=True)
    with RealSenseCamera(playback=path, realtime=True) as cam:
        first = cam.wait_frame(5.0)
        assert cam.latest() is first  # nothing newer handed out yet, latest() is non-blocking
        seen = [first.index]
        with pytest.raises(DeviceDisconnected, match="end of recording"):
            while True:  # a pending newest frame is handed out before the end is reported
                seen.append(cam.wait_frame(2.0).index)
    assert seen == sorted(set(seen)) and seen[-1] == 7


def test_bad_inputs_give_one_line_errors(tmp_path):
    with pytest.raises(DeviceError, match=r"RealSense 12345 not found|no RealSense camera connected.*12345"):
        RealSenseCamera(serial="12345", T_base_camera=np.eye(4)).start()
    with pytest.raises(DeviceError, match="recording not found"):
        RealSenseCamera(playback=tmp_path / "missing.db3")
    with pytest.raises(DeviceError, match=r"must be \.bag or \.db3"):
        RealSenseCamera(playback=tmp_path / "video.mp4")
    junk = tmp_path / "junk.db3"
    junk.write_bytes(b"not a database" * 100)
    cam = RealSenseCamera(playback=junk)
    with pytest.raises(DeviceError, match="junk.db3: unreadable RealSense recording") as err:
        cam.start()
    assert "\n" not in str(err.value)
    with pytest.raises(DeviceError, match="records only .db3"):
        write_rgbd_recording(tmp_path / "new.bag", frames(1), K=K)


def test_extrinsics_file_places_camera_and_rejects_non_rigid(tmp_path):
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    T[:3, 3] = [0.4, -0.1, 0.9]
    good = tmp_path / "cal.json"
    good.write_text(json.dumps({"T_base_camera": T.tolist()}))
    path = write_rgbd_recording(tmp_path / "rec.db3", frames(2), K=K)
    with RealSenseCamera(playback=path, realtime=False, calibration=good) as cam:
        np.testing.assert_allclose(cam.wait_frame(5.0).T_base_camera, T)
    assert cam.calibrated
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps((2 * T).tolist()))
    with pytest.raises(DeviceError, match="bad.json: T_base_camera is not a rigid transform"):
        load_extrinsics(bad)
    (tmp_path / "short.json").write_text("[[1, 0], [0, 1]]")
    with pytest.raises(DeviceError, match=r"short.json: .*4x4"):
        load_extrinsics(tmp_path / "short.json")


def test_factory_builds_playback_camera(tmp_path):
    path = write_rgbd_recording(tmp_path / "rec.db3", frames(1), K=K)
    cam = make_camera(f"bag:{path}")
    assert isinstance(cam, RealSenseCamera) and cam.name == f"bag:{path}"


@settings(max_examples=60, deadline=None)
@given(period=st.floats(0.005, 0.1), latencies=st.lists(st.floats(0.0, 0.05), min_size=2, max_size=200),
       offset=st.floats(-1e4, 1e4))
def test_clock_mapper_is_monotonic_and_never_ahead_of_arrival(period, latencies, offset):
    mapper = ClockMapper(window_s=0.5)
    stamps = []
    for i, lat in enumerate(latencies):
        hw = 100.0 + i * period
        arrival = hw + offset + lat
        stamps.append(mapper.map(hw, arrival))
        assert stamps[-1] <= arrival + 1e-9
        # Never earlier than the true capture time on the host clock.
        assert stamps[-1] >= hw + offset - 1e-9



# ------------------------------------------------------------------------------------------
# Frame ownership, unplug and reconnect (the SDK's software device as a live camera)
# ------------------------------------------------------------------------------------------


def test_held_frames_own_their_pixels_and_do_not_starve_the_sdk_pool(tmp_path):
    # A consumer holding many frames (the episode writer's queue, the GUI) must not hold SDK
    # frames: with numpy views the SDK's pool ran dry after 32 held frames and the rest of this
    # 50-frame recording was silently lost.
    path = write_rgbd_recording(tmp_path / "long.db3", frames(50), K=K, fps=FPS)
    with RealSenseCamera(playback=path, realtime=False) as cam:
        held = drain(cam)
    assert [f.index for f in held] == list(range(50))
    for f in held:  # read after the pipeline was stopped and every SDK frame released
        assert f.rgb.base is None and f.depth.base is None  # own memory, not an SDK buffer
        np.testing.assert_array_equal(f.rgb, pattern(f.index)[0])
        np.testing.assert_array_equal(f.depth, pattern(f.index)[1])


class Feeder:
    """Pushes pattern frames into a SoftwareRGBDDevice at ~30 Hz, like a camera's USB stream."""

    def __init__(self, dev):
        import threading

        self.dev, self.n, self.stop_evt = dev, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import time

        while not self.stop_evt.is_set():
            rgb, depth = pattern(self.n)
            # Stamps from 0 like a device that just started (the syncer needs ~base/period frames
            # to start pairing depth with colour when the first stamp is far from 0).
            if self.dev.push(rgb, depth, self.n, self.n * 1000.0 / FPS):
                self.n += 1
            time.sleep(1.0 / FPS)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_evt.set()
        self.thread.join(2.0)


def wait_until(pred, timeout: float) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_unplugged_camera_is_lost_not_repeated_and_reconnects():
    dev = SoftwareRGBDDevice(K, (W, H), depth_scale=DEPTH_SCALE, fps=FPS, serial="sw-1")
    cam = RealSenseCamera(serial="sw-1", open_live=dev.open_stream, frame_timeout_s=0.3,
                          T_base_camera=np.eye(4))
    with cam, Feeder(dev) as feed:
        first = cam.wait_frame(5.0)
        np.testing.assert_array_equal(first.rgb, pattern(first.index)[0])
        assert cam.connected and cam.latest() is not None and cam.depth_scale == pytest.approx(DEPTH_SCALE)
        dev.unplug()
        assert wait_until(lambda: not cam.connected, 3.0)
        # The last image is not handed out again as if it were current.
        assert cam.latest() is None
        with pytest.raises(DeviceDisconnected, match="camera lost"):
            cam.wait_frame(0.5)
        seen_before = cam.frames_seen
        feed.n = 0  # a replugged camera restarts its frame counter
        dev.replug()
        back = cam.wait_frame(5.0) if wait_until(lambda: cam.connected and cam.latest() is not None, 5.0) else None
        assert back is not None and cam.reconnects == 1 and cam.frames_seen > seen_before
        np.testing.assert_array_equal(back.rgb, pattern(back.index)[0])
        # The counter restart is not counted as dropped frames.
        assert cam.dropped_frames < 5


def test_take_is_marked_and_stopped_when_the_camera_is_unplugged(tmp_path):
    from test_teleop import Expert, KinematicArm

    from app.recording import RecordingService
    from app.teleop import ControlLoop
    from recorder.episode import EpisodeReader

    dev = SoftwareRGBDDevice(K, (W, H), depth_scale=DEPTH_SCALE, fps=FPS, serial="sw-2")
    cam = RealSenseCamera(serial="sw-2", open_live=dev.open_stream, frame_timeout_s=0.3,
                          T_base_camera=np.eye(4))
    rec = RecordingService(tmp_path, robot="franka", camera=cam)
    lost = []
    rec.on_camera_lost.append(lambda: lost.append(rec.status().frames))
    loop = ControlLoop(KinematicArm(), Expert(), camera=cam, rate_hz=20.0, stall_timeout=0.5)
    loop.add_listener(rec)
    with cam, Feeder(dev), loop:
        cam.wait_frame(5.0)
        rec.start("pick_cube", "test", fps=20.0)
        assert wait_until(lambda: rec.status().frames >= 10, 5.0)
        dev.unplug()
        assert wait_until(lambda: rec.camera_lost, 3.0)
        written = rec.status().frames
        assert wait_until(lambda: loop.ticks > 0, 1.0)
        ticks = loop.ticks
        assert wait_until(lambda: loop.ticks >= ticks + 6, 3.0)  # the loop goes on ...
        assert rec.status().frames == written  # ... but nothing more is written
        path = rec.stop("unknown")
    assert len(lost) == 1  # fired once, on the control thread
    r = EpisodeReader(path)
    assert "camera lost at t=" in r.meta["notes"]
    idx, rep = np.asarray(r.extras["frame_index"]), np.asarray(r.extras["frame_repeated"])
    assert r.n_frames == written
    # Rows not marked as repeats carry each camera frame once; repeats are the detection window only.
    fresh = idx[rep == 0]
    assert len(np.unique(fresh)) == len(fresh)
    assert rep.sum() <= 0.3 * 20 + 3
    for i in range(r.n_frames):
        rgb, depth = pattern(int(idx[i]))
        # Depth is lossless and names the frame exactly; RGB is H.264 (schema v2): within codec error.
        np.testing.assert_array_equal(r.depth(i), depth)
        assert np.abs(r.rgb(i).astype(int) - rgb).mean() < 4, i
