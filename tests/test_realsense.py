"""RealSense driver: real SDK round trips (software_device + recorder → .db3 → pipeline playback)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.base import Camera, DeviceDisconnected, DeviceError
from robots.factory import make_camera
from robots.realsense import ClockMapper, RealSenseCamera, load_extrinsics, write_rgbd_recording

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

