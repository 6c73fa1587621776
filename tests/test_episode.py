"""Episode writer/reader: round trip of every field, drop accounting, bad files, migration."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from recorder.episode import EpisodeReader, EpisodeWriter, marker_path
from recorder.schema import SCHEMA_VERSION, EpisodeError

H, W = 24, 32
CAM = dict(K=[[500.0, 0, 16], [0, 500.0, 12], [0, 0, 1]], width=W, height=H, depth_scale=0.00025,
           T_base_camera=np.arange(16.0).reshape(4, 4), model="D435", serial="123")
META = dict(robot="xarm6", task="place_in_bin", instruction="put the cube in the bin", fps=20,
            operator="ada", seed=7)


_YY, _XX = np.mgrid[0:H, 0:W]


def frame(i, dof=6):
    rng = np.random.default_rng(i)
    # Camera-like RGB (smooth, moving, a little noise): H.264 keeps it close; pure noise it would not.
    rgb = np.stack([_XX * 6 + 2 * i, _YY * 8 + 20, 150 - _XX * 2 - i], -1) + rng.integers(0, 4, (H, W, 3))
    return dict(
        rgb=np.clip(rgb, 0, 255).astype(np.uint8),
        depth=rng.integers(0, 65536, (H, W), dtype=np.uint16),
        ee_pose=rng.normal(size=7), joint_pos=rng.normal(size=dof), gripper=float(rng.random()),
        action=rng.normal(size=8))


def record(path, n=40, **kw):
    w = EpisodeWriter(path, META, CAM, **kw)
    for i in range(n):
        f = frame(i)
        w.append(100.0 + i * 0.05, f["rgb"], f["depth"], f["ee_pose"], f["joint_pos"], f["gripper"], f["action"],
                 {"expert_phase": ["approach", "grasp", "lift"][i % 3], "force": [i, -i, 0.5]}, block=True)
    return w


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("rgb_codec", [None, "h264"])
def test_round_trip_every_field(tmp_path, rgb_codec):
    """rgb_codec None: the v1 layout, RGB lossless; h264 (the default): schema v2, RGB close."""
    path = tmp_path / "ep_000.h5"
    w = record(path, rgb_codec=rgb_codec)
    assert marker_path(path).exists()
    # propose=False: this test checks that raw groups written by other tools read back as they are.
    assert w.finalize("success", notes="clean grasp", propose=False) == path
    assert not marker_path(path).exists() and w.dropped == 0 and w.appended == 40
    # The annotation engineer's groups, written afterwards with plain h5py, come back raw.
    with h5py.File(path, "r+") as f:
        f["keyframes/index"] = np.array([3, 17], dtype=np.int64)
        f["keyframes/kind"] = np.array(["gripper_close", "static"], dtype=h5py.string_dtype())
        g = f.create_group("annotations/ada")
        for k, v in dict(start=[0, 10], end=[9, 39]).items():
            g[k] = np.array(v, dtype=np.int64)
        for k, v in dict(primitive=["grasp", "lift"], instruction=["grasp it", "lift it"], object=["cube", "cube"],
                         source=["auto", "human"], updated_at=["t1", "t2"]).items():
            g[k] = np.array(v, dtype=h5py.string_dtype())
        g["quality"] = np.array([3, 2], dtype=np.int8)
        g["confidence"] = np.array([2, 1], dtype=np.int8)

    with EpisodeReader(path) as ep:
        assert ep.n_frames == 40
        np.testing.assert_allclose(ep.time, np.arange(40) * 0.05, atol=1e-12)
        for i in (0, 13, 39):
            f = frame(i)
            if rgb_codec is None:
                np.testing.assert_array_equal(ep.rgb(i), f["rgb"])
            else:
                assert ep.rgb(i).shape == (H, W, 3) and ep.rgb(i).dtype == np.uint8
                assert psnr(ep.rgb(i), f["rgb"]) > 30
            np.testing.assert_array_equal(ep.depth(i), f["depth"])  # depth is lossless either way
            np.testing.assert_array_equal(ep.ee_pose[i], f["ee_pose"])
            np.testing.assert_array_equal(ep.joint_pos[i], f["joint_pos"])
            np.testing.assert_array_equal(ep.action[i], f["action"])
            assert ep.gripper[i] == np.float32(f["gripper"]) and ep.gripper.dtype == np.float32
        np.testing.assert_array_equal(ep.rgb(-1), ep.rgb(39))
        assert ep.extras["expert_phase"][:4] == ["approach", "grasp", "lift", "approach"]
        np.testing.assert_array_equal(ep.extras["force"][5], [5, -5, 0.5])
        m = ep.meta
        assert (m["robot"], m["task"], m["instruction"], m["fps"], m["operator"], m["seed"]) == \
               ("xarm6", "place_in_bin", "put the cube in the bin", 20.0, "ada", 7)
        version = 1 if rgb_codec is None else 2
        assert (m["outcome"], m["notes"], m["schema_version"], m["recovered"]) == ("success", "clean grasp", version, 0)
        assert m["started_at"] and m["app_version"]
        np.testing.assert_array_equal(ep.camera.K, CAM["K"])
        np.testing.assert_array_equal(ep.camera.T_base_camera, CAM["T_base_camera"])
        assert (ep.camera.width, ep.camera.height, ep.camera.depth_scale, ep.camera.model, ep.camera.serial) == \
               (W, H, 0.00025, "D435", "123")
        assert ep.keyframes == [{"index": 3, "kind": "gripper_close"}, {"index": 17, "kind": "static"}]
        segs = ep.annotations["ada"]
        assert segs[1] == dict(start=10, end=39, primitive="lift", instruction="lift it", object="cube",
                               source="human", updated_at="t2", quality=2, confidence=1)
        with pytest.raises(IndexError):
            ep.rgb(40)


def test_episode_without_camera_and_late_extras(tmp_path):
    w = EpisodeWriter(tmp_path / "blind.h5", dict(robot="franka", task="t", fps=10), None)
    for i in range(5):
        w.append(i / 10, None, None, np.zeros(7), np.zeros(7), 1.0, np.zeros(8),
                 {"late_note": f"n{i}"} if i >= 3 else None, block=True)
    w.finalize("failure")
    with EpisodeReader(tmp_path / "blind.h5") as ep:
        assert ep.n_frames == 5 and ep.camera is None and ep.outcome == "failure"
        assert ep.extras["late_note"] == ["", "", "", "n3", "n4"]
        with pytest.raises(EpisodeError, match="without a camera"):
            ep.rgb(0)


def test_full_queue_counts_drops_never_blocks(tmp_path):
    big = dict(K=np.eye(3), width=640, height=480, depth_scale=0.001)
    w = EpisodeWriter(tmp_path / "d.h5", META, big, queue_frames=2, compression="gzip6")
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth = np.zeros((480, 640), np.uint16)
    results = [w.append(i * 0.01, rgb, depth, np.zeros(7), np.zeros(6), 0.0, np.zeros(8)) for i in range(30)]
    assert w.dropped > 0 and w.dropped == results.count(False) and w.appended + w.dropped == 30
    w.finalize("unknown")
    with EpisodeReader(tmp_path / "d.h5") as ep:
        assert ep.n_frames == w.appended and ep.meta["dropped_frames"] == w.dropped


def test_writer_rejects_bad_input_without_losing_the_episode(tmp_path):
    path = tmp_path / "e.h5"
    w = record(path, n=3)
    f = frame(0)
    with pytest.raises(ValueError, match=r"rgb \(24, 31, 3\)"):
        w.append(1.0, f["rgb"][:, :31], f["depth"], f["ee_pose"], f["joint_pos"], 0, f["action"])
    with pytest.raises(ValueError, match="joint_pos has 7 values"):
        w.append(1.0, f["rgb"], f["depth"], f["ee_pose"], np.zeros(7), 0, f["action"])
    with pytest.raises(ValueError, match="outcome"):
        w.finalize("great")
    with pytest.raises(FileExistsError):
        EpisodeWriter(path, META, CAM)
    with pytest.raises(ValueError, match="needs robot"):
        EpisodeWriter(tmp_path / "x.h5", {"task": "t"}, CAM)
    w.finalize("success")
    assert EpisodeReader(path).n_frames == 3


def test_discard_deletes(tmp_path):
    w = record(tmp_path / "gone.h5", n=5)
    w.discard()
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# Bad files: one line naming file and field, never a traceback
# ------------------------------------------------------------------------------------------------


def _damage(path, how):
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif how == "empty":
        path.write_bytes(b"")
    else:
        with h5py.File(path, "r+") as f:
            if how == "missing":
                del f["obs/ee_pose"]
            elif how == "dtype":
                d = f["obs/depth"][()]
                del f["obs/depth"]
                f["obs/depth"] = d.astype(np.float32)
                f["obs/depth"].attrs["depth_scale"] = 0.001
            elif how == "future":
                f.attrs["schema_version"] = 99
            elif how == "foreign":
                f.attrs["schema"] = "lerobot"
            elif how == "length":
                f["action"].resize(10, axis=0)
            elif how == "outcome":
                f.attrs["outcome"] = "maybe"


BAD = {
    "truncated": "ep.h5: file: truncated",
    "random": "ep.h5: file: not an HDF5 file",
    "empty": "ep.h5: file: not an HDF5 file",
    "missing": "ep.h5: /obs/ee_pose: missing",
    "dtype": "ep.h5: /obs/depth: dtype float32, expected uint16",
    "future": f"ep.h5: schema_version: 99 is newer than this ActStudio (max {SCHEMA_VERSION}); update ActStudio",
    "foreign": "ep.h5: schema: 'lerobot' is not 'actstudio.episode'",
    "length": "ep.h5: /action: 10 frames, /time has 12",
    "outcome": "ep.h5: /@outcome: 'maybe'",
}


@pytest.mark.parametrize("how", sorted(BAD))
def test_bad_file_gives_one_line_message(tmp_path, how):
    path = tmp_path / "ep.h5"
    record(path, n=12).finalize("success")
    _damage(path, how)
    with pytest.raises(EpisodeError) as err:
        EpisodeReader(path)
    msg = str(err.value)
    assert msg.startswith(BAD[how]) and "\n" not in msg, msg


def test_damaged_chunk_reported_on_frame_read(tmp_path):
    path = tmp_path / "ep.h5"
    record(path, n=12, rgb_codec=None).finalize("success")
    with h5py.File(path, "r") as f:
        offset = f["obs/rgb"].id.get_chunk_info_by_coord((5, 0, 0, 0)).byte_offset
    with open(path, "r+b") as fh:  # scribble over the compressed chunk of frame 5
        fh.seek(offset)
        fh.write(b"\xff" * 64)
    with EpisodeReader(path) as ep:
        ep.rgb(4)
        with pytest.raises(EpisodeError, match=r"ep.h5: /obs/rgb\[5\]: cannot decode"):
            ep.rgb(5)


# ------------------------------------------------------------------------------------------------
# Migration
# ------------------------------------------------------------------------------------------------


def test_damaged_video_packet_reported_on_frame_read(tmp_path):
    """A scribbled H.264 packet fails its CRC-32: an error, never silently wrong pixels."""
    path = tmp_path / "ep.h5"
    record(path, n=12).finalize("success")  # 20 fps: GOP 7, frames 0-6 and 7-11
    with h5py.File(path, "r") as f:
        off, size = f["obs/rgb/index"][5, :2]
        ds = f["obs/rgb/packets"]
        k = int(off) + int(size) // 2  # the middle of frame 5's packet, in the stream's chunks
        offset = ds.id.get_chunk_info_by_coord((k - k % ds.chunks[0],)).byte_offset + k % ds.chunks[0]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 8)
    with EpisodeReader(path) as ep:
        ep.rgb(4)
        ep.rgb(11)  # another GOP: still fine
        with pytest.raises(EpisodeError, match=r"ep.h5: /obs/rgb\[5\]: cannot decode .*CRC"):
            ep.rgb(5)


def make_v0(path):
    """v0 fixture: the pre-release layout (gripper float64, no app_version)."""
    record(path, n=10, rgb_codec=None).finalize("success")
    with h5py.File(path, "r+") as f:
        g = f["obs/gripper"][()].astype(np.float64)
        del f["obs/gripper"]
        f["obs/gripper"] = g
        del f.attrs["app_version"]
        f.attrs["schema_version"] = 0
    return g


def test_v0_file_is_migrated_on_open(tmp_path):
    path = tmp_path / "old.h5"
    g = make_v0(path)
    with pytest.raises(EpisodeError, match="0 is older"):
        EpisodeReader(path, migrate=False)
    with EpisodeReader(path) as ep:
        assert ep.migrated_from == 0 and ep.meta["schema_version"] == 1
        assert ep.gripper.dtype == np.float32
        np.testing.assert_array_equal(ep.gripper, g.astype(np.float32))
        assert "migrated" in ep.meta["app_version"]
        np.testing.assert_array_equal(ep.rgb(3), frame(3)["rgb"])
    assert not list(tmp_path.glob("*.migrating"))
    with EpisodeReader(path) as ep:  # second open: v1 is read as it is (v1 -> v2 is lossy: on request only)
        assert ep.migrated_from is None and ep.schema_version == 1


def test_v1_is_read_natively_and_migrate_converts_it_to_v2(tmp_path):
    from recorder.annotations import load_annotations
    from recorder.schema import migrate_file

    path = tmp_path / "v1.h5"
    record(path, n=25, rgb_codec=None).finalize("success", notes="kept")
    before = path.read_bytes()
    with EpisodeReader(path) as ep:
        assert ep.schema_version == 1 and ep.migrated_from is None
        np.testing.assert_array_equal(ep.rgb(7), frame(7)["rgb"])
        auto = load_annotations(path)["auto"].segments
    assert path.read_bytes() == before  # opening never rewrites a v1 file
    ticks = []
    assert migrate_file(path, progress=ticks.append) == 1
    assert sum(ticks) == 25 and not list(tmp_path.glob("*.migrating*"))
    with EpisodeReader(path) as ep:
        assert ep.schema_version == 2 and ep.meta["migrated_from"] == 1 and ep.meta["notes"] == "kept"
        assert ep.meta["rgb_codec"] == "h264" and ep.n_frames == 25
        for i in (0, 12, 24):
            f = frame(i)
            assert psnr(ep.rgb(i), f["rgb"]) > 30
            np.testing.assert_array_equal(ep.depth(i), f["depth"])
            np.testing.assert_array_equal(ep.action[i], f["action"])
        assert ep.extras["expert_phase"][3] == "approach"
        assert ep.camera.serial == "123" and ep.camera.depth_scale == 0.00025
    assert load_annotations(path)["auto"].segments == auto
    assert migrate_file(path) == 2  # already current: nothing to do


def test_a_failing_migration_leaves_the_v1_file(tmp_path, monkeypatch):
    import recorder.video
    from recorder.schema import migrate_file

    path = tmp_path / "v1.h5"
    record(path, n=5, rgb_codec=None).finalize("success")
    before = path.read_bytes()

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder.video, "write_video", broken)
    with pytest.raises(EpisodeError, match="v1.h5: schema_version: migration 1->2 failed"):
        migrate_file(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["v1.h5"]


def test_migrate_command(tmp_path, capsys):
    from app.cli import main

    record(tmp_path / "a.h5", n=6, rgb_codec=None).finalize("success")
    record(tmp_path / "b.h5", n=6).finalize("success")  # already v2
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert main(["migrate", str(tmp_path), "--no-progress"]) == 1  # junk.h5 fails, the others are done
    out = capsys.readouterr().out
    assert "a.h5: v1 -> v2" in out and "b.h5: already v2" in out and "junk.h5: file: not an HDF5 file" in out
    with EpisodeReader(tmp_path / "a.h5") as ep:
        assert ep.schema_version == 2
    assert main(["migrate", str(tmp_path / "a.h5"), "--no-progress"]) == 0


def test_finalize_adds_keyframes_and_auto_proposals(tmp_path):
    """Every recorded take reaches the Annotate view proposed, with the annotation store allocated
    (so the first human save is an in-place slot write, not a copy of the file)."""
    from recorder.annotations import STORE_PATH, load_annotations, save_annotations

    from synthetic_pick_place import pick_place

    demo = pick_place(seed=3)
    path = tmp_path / "ep.h5"
    w = EpisodeWriter(path, {**META, "fps": demo.fps}, None)
    for i in range(len(demo.ee_pose)):
        w.append(i / demo.fps, None, None, demo.ee_pose[i], np.zeros(6), demo.gripper[i],
                 np.r_[demo.ee_pose[i], demo.gripper[i]], block=True)
    w.finalize("success")
    with EpisodeReader(path) as ep:
        kinds = [k["kind"] for k in ep.keyframes]
        assert "gripper_close" in kinds and "gripper_open" in kinds
        assert STORE_PATH.strip("/") in ep._f
        auto = ep.annotations["auto"]
    prims = [s["primitive"] for s in auto]
    assert "grasp" in prims and "lift" in prims and all(s["source"] == "auto" for s in auto)
    docs = load_annotations(path)
    size = path.stat().st_size
    human, _ = docs["auto"].accept_all()
    human = type(human)("ada", human.n_frames, human.segments)
    save_annotations(path, human)
    assert path.stat().st_size == size  # slot write in place: no rebuild
    assert set(load_annotations(path)) == {"auto", "ada"}


def test_depth_compression_auto_picks_the_smaller_shuffle(tmp_path):
    """blosc-zstd-3-auto: bit-shuffle for noisy sensor depth, byte-shuffle for smooth rendered depth;
    the episode records which (root attribute ``compression``) and reads back losslessly."""
    from recorder.schema import DEFAULT_COMPRESSION, resolve_compression

    yy, xx = np.mgrid[0:96, 0:128]
    smooth = (800 + 1.7 * yy + 0.4 * xx).astype(np.uint16)  # a tilted table, as a renderer sees it
    noisy = (smooth + np.random.default_rng(0).normal(0, 2, smooth.shape)).astype(np.uint16)
    assert DEFAULT_COMPRESSION.endswith("-auto")
    assert resolve_compression(DEFAULT_COMPRESSION, noisy).endswith("-bit")
    assert not resolve_compression(DEFAULT_COMPRESSION, smooth).endswith("-bit")
    assert resolve_compression("gzip1", noisy) == "gzip1"
    cam = dict(K=np.eye(3), width=128, height=96, depth_scale=0.001)
    w = EpisodeWriter(tmp_path / "n.h5", META, cam)
    for i in range(3):
        w.append(i / 20, np.zeros((96, 128, 3), np.uint8), noisy + i, np.zeros(7), np.zeros(6), 0.0, np.zeros(8))
    w.finalize("success", propose=False)
    with EpisodeReader(tmp_path / "n.h5") as ep:
        assert ep.meta["compression"] == "blosc-zstd-3-bit"
        np.testing.assert_array_equal(ep.depth(2), noisy + 2)


def test_migrate_takes_a_v0_file_to_v2(tmp_path):
    from recorder.schema import migrate_file

    path = tmp_path / "v0.h5"
    g = make_v0(path)
    assert migrate_file(path) == 0
    with EpisodeReader(path) as ep:
        assert ep.schema_version == 2 and ep.gripper.dtype == np.float32
        np.testing.assert_array_equal(ep.gripper, g.astype(np.float32))
        assert psnr(ep.rgb(3), frame(3)["rgb"]) > 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v0.h5"]
