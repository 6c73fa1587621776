"""The episode file contract (DESIGN.md "Episode file"): names, dtypes, validation and migration.

Everything that decides whether an HDF5 file *is* an ActStudio episode lives here, so the writer,
the reader, the dataset index and the recovery code cannot disagree about it.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc/Zstd filters episodes are compressed with)
import numpy as np

SCHEMA = "actstudio.episode"
SCHEMA_VERSION = 2
# Versions EpisodeReader reads as they are. v1 (RGB as compressed raw frames) is not upgraded on
# open: v1 -> v2 re-encodes RGB lossily, which only `main.py migrate` does, on request.
READABLE_VERSIONS = (1, 2)
# Migrations EpisodeReader may run by itself on open: lossless ones only (v0 -> v1).
AUTO_MIGRATE_TO = 1
OUTCOMES = ("success", "failure", "unknown")
STATES = ("recording", "complete")

# Root attributes every v1 episode carries: name -> kind ("str" | "num" | "int").
ROOT_ATTRS: dict[str, str] = {
    "schema": "str",
    "schema_version": "int",
    "robot": "str",
    "task": "str",
    "instruction": "str",
    "fps": "num",
    "started_at": "str",
    "operator": "str",
    "outcome": "str",
    "app_version": "str",
}
# Written by this implementation but not required of every file (older writers, other tools).
OPTIONAL_ROOT_ATTRS: dict[str, str] = {
    "notes": "str",
    "state": "str",
    "recovered": "int",
    "dropped_frames": "int",
    "ended_at": "str",
    "compression": "str",  # lossless compression of depth (and of raw RGB in v1)
    "rgb_codec": "str",  # v2: the RGB stream's codec
}
CAMERA_ATTRS = ("K", "width", "height", "T_base_camera", "model", "serial")


@dataclass(frozen=True)
class FrameField:
    """One per-frame dataset: first axis is time; ``trailing`` may name symbolic sizes H, W, DoF."""

    path: str
    dtype: np.dtype
    trailing: tuple
    chunk_frames: int  # images: one frame per chunk (random access); vectors: blocks of frames
    image: bool = False


# v2: RGB is an H.264 stream (recorder/video.py): /obs/rgb is a group whose per-frame dataset is
# the packet index (offset, size, flags, crc32; fill -1 marks rows never written); the packet bytes
# live in /obs/rgb/packets (1-D uint8, see RGB_STREAM). Depth stays lossless, one chunk per frame.
FRAME_FIELDS: tuple[FrameField, ...] = (
    FrameField("/time", np.dtype("float64"), (), 1024),
    FrameField("/obs/rgb/index", np.dtype("int64"), (4,), 256, image=True),
    FrameField("/obs/depth", np.dtype("uint16"), ("H", "W"), 1, image=True),
    FrameField("/obs/ee_pose", np.dtype("float64"), (7,), 256),
    FrameField("/obs/joint_pos", np.dtype("float64"), ("DoF",), 256),
    FrameField("/obs/gripper", np.dtype("float32"), (), 256),
    FrameField("/action", np.dtype("float64"), (8,), 256),
)
RGB_STREAM = "/obs/rgb/packets"
# v1 (and v0): RGB as raw frames, one compressed chunk per frame. Still written on request
# (EpisodeWriter(rgb_codec=None): lossless RGB) and read natively.
V1_FRAME_FIELDS: tuple[FrameField, ...] = (
    FRAME_FIELDS[0],
    FrameField("/obs/rgb", np.dtype("uint8"), ("H", "W", 3), 1, image=True),
    *FRAME_FIELDS[2:],
)
FIELDS_BY_PATH = {f.path: f for f in FRAME_FIELDS}


def frame_fields(version: int) -> tuple[FrameField, ...]:
    """The per-frame datasets of a file of schema ``version``."""
    return FRAME_FIELDS if version >= 2 else V1_FRAME_FIELDS


def rgb_is_video(f: h5py.File) -> bool:
    return isinstance(f.get("obs/rgb"), h5py.Group)


def compression_options(name: str, dtype: np.dtype) -> dict:
    """h5py create_dataset keyword arguments for a compression option name (see bench/recorder.py)."""
    itemsize_shuffle = dtype.itemsize > 1
    if name == "none":
        return {}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": itemsize_shuffle}
    if name.startswith("gzip"):
        level = int(name[4:] or 4)
        return {"compression": "gzip", "compression_opts": level, "shuffle": itemsize_shuffle}
    if name.endswith("-auto"):  # resolved per episode by resolve_compression; the byte-shuffle variant until then
        return compression_options(name[: -len("-auto")], dtype)
    if name.startswith("blosc-"):  # blosc-<codec>-<level>[-bit], e.g. blosc-zstd-1, blosc-lz4-5, blosc-zstd-3-bit
        codec, _, level = name[6:].partition("-")
        level, _, shuffle = level.partition("-")
        if codec not in ("lz4", "lz4hc", "zstd", "zlib", "blosclz") or shuffle not in ("", "bit"):
            raise ValueError(f"unknown blosc codec {codec!r} in {name!r}")
        # Bit-shuffle: sensor noise lives in the low bits of depth; bytes of whole bit planes compress
        # where byte-shuffled noise does not (~20 % smaller depth at the same CPU, bench/recorder.py).
        mode = hdf5plugin.Blosc.BITSHUFFLE if shuffle == "bit" else hdf5plugin.Blosc.SHUFFLE
        return dict(hdf5plugin.Blosc(cname=codec, clevel=int(level or 5), shuffle=mode))
    if name.startswith("zstd"):
        return {**hdf5plugin.Zstd(clevel=int(name[4:] or 1)), "shuffle": itemsize_shuffle}
    raise ValueError(f"unknown compression {name!r}; use none, lzf, gzip<1-9>, blosc-<lz4|zstd>-<1-9>, zstd<1-22>")


COMPRESSIONS = ("none", "lzf", "gzip1", "blosc-lz4-5", "blosc-zstd-1", "blosc-zstd-3-bit", "blosc-zstd-3-auto", "zstd1")
# Chosen from bench/recorder.py: ~3 ms per 640x480 RGB-D frame on one core, ~0.6 of raw size,
# ~2 ms random read. gzip costs 5x the CPU for ~10 % smaller files. v1's default (RGB and depth).
V1_COMPRESSION = "blosc-zstd-1"
# v2: the lossless compression of depth (and of RGB in files written with rgb_codec=None): byte- or
# bit-shuffle, whichever makes the first depth frame smaller. Sensor noise in the low bits spoils
# byte-shuffled depth (bit-shuffle: 180 vs 232 KB/frame on the bench's noisy camera-like depth),
# while smooth noiseless depth (the sim's renders) compresses better byte-shuffled (24 vs 40 KB).
# Level 3: ~2 % (noisy) to 15 % (sim) smaller than level 1 for ~0.5 ms more per frame (docs/episodes.md).
DEFAULT_COMPRESSION = "blosc-zstd-3-auto"


def resolve_compression(name: str, sample: np.ndarray) -> str:
    """The concrete option for ``<option>-auto``: byte- or bit-shuffle, whichever stores ``sample``
    (one frame) in fewer bytes (~2 ms, once per episode); other names are returned as they are."""
    if not name.endswith("-auto"):
        return name
    import io

    base = name[: -len("-auto")]
    sizes = {}
    for cand in (base, base + "-bit"):
        with h5py.File(io.BytesIO(), "w") as f:
            ds = f.create_dataset("x", data=sample[None], chunks=(1, *sample.shape),
                                  **compression_options(cand, sample.dtype))
            f.flush()
            sizes[cand] = ds.id.get_storage_size()
    return min(sizes, key=sizes.get)


class EpisodeError(Exception):
    """A file that is not a usable episode; ``str()`` is one line: ``<file>: <field>: <problem>``."""

    def __init__(self, path: str | os.PathLike, field: str, msg: str):
        self.path = Path(path)
        self.field = field
        self.msg = " ".join(str(msg).split())  # one line, whatever the underlying library said
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path.name}: {self.field}: {self.msg}" if self.field else f"{self.path.name}: {self.msg}"


def attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return attr_str(value.item())
    return str(value)


def _attr_kind_ok(value, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, (str, bytes))
    if isinstance(value, np.ndarray):
        if value.shape != ():
            return False
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return kind == "int"
    if kind == "int":
        return isinstance(value, (int, np.integer))
    return isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value)


def schema_version_of(f: h5py.File, path) -> int:
    """The file's schema version, or EpisodeError if it is not an ActStudio episode at all."""
    schema = f.attrs.get("schema")
    if schema is None:
        raise EpisodeError(path, "schema", "attribute missing; not an ActStudio episode")
    if attr_str(schema) != SCHEMA:
        raise EpisodeError(path, "schema", f"{attr_str(schema)!r} is not {SCHEMA!r}; not an ActStudio episode")
    version = f.attrs.get("schema_version")
    if version is None or not _attr_kind_ok(version, "int"):
        raise EpisodeError(path, "schema_version", f"missing or not an integer ({version!r})")
    version = int(version)
    if version > SCHEMA_VERSION:
        raise EpisodeError(path, "schema_version",
                           f"{version} is newer than this ActStudio (max {SCHEMA_VERSION}); update ActStudio")
    if version < min(MIGRATIONS, default=SCHEMA_VERSION):
        raise EpisodeError(path, "schema_version", f"{version} is older than any known layout")
    return version


def _dataset(f: h5py.File, path, name: str) -> h5py.Dataset:
    obj = f.get(name)
    if obj is None:
        raise EpisodeError(path, name, "missing")
    if not isinstance(obj, h5py.Dataset):
        raise EpisodeError(path, name, "is a group, expected a dataset")
    return obj


def validate(f: h5py.File, path) -> int:
    """Check a v1 or v2 episode (READABLE_VERSIONS); return its frame count or raise EpisodeError naming the field.

    Cheap enough to run on every open (no image data is decoded except the last frame, which catches
    files cut short inside the data).
    """
    version = schema_version_of(f, path)
    if version not in READABLE_VERSIONS:
        raise EpisodeError(path, "schema_version", f"{version} needs migration to {SCHEMA_VERSION}")
    for name, kind in {**ROOT_ATTRS, **OPTIONAL_ROOT_ATTRS}.items():
        if name not in f.attrs:
            if name in ROOT_ATTRS:
                raise EpisodeError(path, f"/@{name}", "attribute missing")
            continue
        if not _attr_kind_ok(f.attrs[name], kind):
            raise EpisodeError(path, f"/@{name}", f"{f.attrs[name]!r} is not a {kind}")
    outcome = attr_str(f.attrs["outcome"])
    if outcome not in OUTCOMES:
        raise EpisodeError(path, "/@outcome", f"{outcome!r}, expected one of {'|'.join(OUTCOMES)}")
    if float(f.attrs["fps"]) <= 0:
        raise EpisodeError(path, "/@fps", f"{f.attrs['fps']} must be > 0")

    has_images = "obs/rgb" in f or "obs/depth" in f or "camera" in f
    sizes: dict = {}
    if has_images:
        cam = f.get("camera")
        if not isinstance(cam, h5py.Group):
            raise EpisodeError(path, "/camera", "missing (episode has images)")
        for name in CAMERA_ATTRS:
            if name not in cam.attrs:
                raise EpisodeError(path, f"/camera@{name}", "attribute missing")
        for name, shape in (("K", (3, 3)), ("T_base_camera", (4, 4))):
            value = np.asarray(cam.attrs[name])
            if value.shape != shape or not np.issubdtype(value.dtype, np.floating):
                raise EpisodeError(path, f"/camera@{name}", f"shape {value.shape} {value.dtype}, expected {shape} float")
        for name in ("width", "height"):
            if not _attr_kind_ok(cam.attrs[name], "int") or int(cam.attrs[name]) <= 0:
                raise EpisodeError(path, f"/camera@{name}", f"{cam.attrs[name]!r} is not a positive integer")
        sizes = {"H": int(cam.attrs["height"]), "W": int(cam.attrs["width"])}

    if has_images and version >= 2:
        _validate_rgb_group(f, path)
    n_frames = None
    for spec in frame_fields(version):
        if spec.image and not has_images:
            continue
        ds = _dataset(f, path, spec.path)
        if ds.dtype != spec.dtype:
            raise EpisodeError(path, spec.path, f"dtype {ds.dtype}, expected {spec.dtype}")
        if ds.ndim != 1 + len(spec.trailing):
            raise EpisodeError(path, spec.path, f"{ds.ndim} dimensions {ds.shape}, expected {1 + len(spec.trailing)}")
        for axis, want in enumerate(spec.trailing, start=1):
            if isinstance(want, str):
                if want not in sizes:
                    sizes[want] = ds.shape[axis]
                want_n = sizes[want]
                label = f"{want}={want_n}"
            else:
                want_n, label = want, str(want)
            if ds.shape[axis] != want_n:
                raise EpisodeError(path, spec.path, f"shape {ds.shape}, axis {axis} should be {label}")
        if n_frames is None:
            n_frames = ds.shape[0]
        elif ds.shape[0] != n_frames:
            raise EpisodeError(path, spec.path, f"{ds.shape[0]} frames, /time has {n_frames}")
    if sizes.get("DoF", 1) < 1:
        raise EpisodeError(path, "/obs/joint_pos", "zero joints")
    if has_images:
        scale = f["obs/depth"].attrs.get("depth_scale")
        if scale is None or not _attr_kind_ok(scale, "num") or float(scale) <= 0:
            raise EpisodeError(path, "/obs/depth@depth_scale", f"{scale!r}, expected a positive number")

    t = f["time"][()]
    if not np.all(np.isfinite(t)):
        raise EpisodeError(path, "/time", f"non-finite value at frame {int(np.argmin(np.isfinite(t)))}")
    if n_frames > 1 and np.any(np.diff(t) < 0):
        raise EpisodeError(path, "/time", f"goes backwards at frame {int(np.argmax(np.diff(t) < 0)) + 1}")

    extras = f.get("extras")
    if extras is not None:
        if not isinstance(extras, h5py.Group):
            raise EpisodeError(path, "/extras", "is a dataset, expected a group")
        for name, ds in extras.items():
            if not isinstance(ds, h5py.Dataset) or ds.ndim < 1 or ds.shape[0] != n_frames:
                shape = getattr(ds, "shape", "group")
                raise EpisodeError(path, f"/extras/{name}", f"shape {shape}, expected {n_frames} frames first")
    _validate_keyframes(f, path, n_frames)
    _validate_annotations(f, path)

    if n_frames and has_images:
        if version >= 2:
            _validate_rgb_index(f, path, n_frames)
        for name in ("obs/rgb", "obs/depth"):
            try:
                if name == "obs/rgb" and version >= 2:
                    from recorder.video import VideoDecoder

                    VideoDecoder(f[name], n_frames).frame(n_frames - 1)
                else:
                    f[name][n_frames - 1]
            except Exception as exc:  # h5py raises OSError/ValueError/RuntimeError for damaged chunks
                raise EpisodeError(path, f"/{name}", f"last frame unreadable ({exc})") from None
    return int(n_frames)


RGB_GROUP_ATTRS = {"codec": "str", "width": "int", "height": "int", "gop": "int"}


def _validate_rgb_group(f: h5py.File, path) -> None:
    g = f.get("obs/rgb")
    if not isinstance(g, h5py.Group):
        raise EpisodeError(path, "/obs/rgb", "is not a group (schema v2 stores RGB as a video stream)")
    for name, kind in RGB_GROUP_ATTRS.items():
        if name not in g.attrs or not _attr_kind_ok(g.attrs[name], kind):
            raise EpisodeError(path, f"/obs/rgb@{name}", f"missing or not a {kind}")
    from recorder.video import RGB_CODECS

    if attr_str(g.attrs["codec"]) not in RGB_CODECS:
        raise EpisodeError(path, "/obs/rgb@codec", f"{attr_str(g.attrs['codec'])!r} is not one of {', '.join(RGB_CODECS)}")
    cam = f["camera"].attrs
    if (int(g.attrs["width"]), int(g.attrs["height"])) != (int(cam["width"]), int(cam["height"])):
        raise EpisodeError(path, "/obs/rgb@width", "video size differs from the camera's width x height")
    ds = _dataset(f, path, RGB_STREAM)
    if ds.dtype != np.uint8 or ds.ndim != 1:
        raise EpisodeError(path, RGB_STREAM, f"{ds.dtype} {ds.shape}, expected a 1-D uint8 byte stream")


def _validate_rgb_index(f: h5py.File, path, n_frames: int) -> None:
    """Every packet lies inside the stream, and the first is a keyframe (bytes are CRC-checked when read)."""
    index = f["obs/rgb/index"][()]
    total = f[RGB_STREAM].shape[0]
    off, size, flags = index[:, 0], index[:, 1], index[:, 2]
    bad = (off < 0) | (size <= 0) | (off + size > total)
    if bad.any():
        raise EpisodeError(path, "/obs/rgb/index", f"frame {int(np.argmax(bad))}: packet outside the stream "
                                                     f"({int(off[bad][0])}+{int(size[bad][0])} of {total} bytes)")
    if not flags[0] & 1:
        raise EpisodeError(path, "/obs/rgb/index", "the first frame is not a keyframe")


def _validate_keyframes(f: h5py.File, path, n_frames: int) -> None:
    kf = f.get("keyframes")
    if kf is None:
        return
    if not isinstance(kf, h5py.Group):
        raise EpisodeError(path, "/keyframes", "is a dataset, expected a group")
    if "index" not in kf:
        return  # layout owned by recorder/keyframes.py; only the index is ours to bound-check
    index = kf["index"][()]
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise EpisodeError(path, "/keyframes/index", f"shape {index.shape} {index.dtype}, expected (K,) integer")
    if index.size and (index.min() < 0 or index.max() >= n_frames):
        raise EpisodeError(path, "/keyframes/index", f"frame {int(index.max())} outside 0..{n_frames - 1}")
    if "kind" in kf and kf["kind"].shape != index.shape:
        raise EpisodeError(path, "/keyframes/kind", f"{kf['kind'].shape[0]} entries, index has {index.size}")


def _validate_annotations(f: h5py.File, path) -> None:
    ann = f.get("annotations")
    if ann is None:
        return
    if not isinstance(ann, h5py.Group):
        raise EpisodeError(path, "/annotations", "is a dataset, expected a group")
    for annotator, group in ann.items():
        if not isinstance(group, h5py.Group):
            continue  # the annotations module may keep bookkeeping datasets beside annotator groups
        lengths = {k: ds.shape[0] for k, ds in group.items() if isinstance(ds, h5py.Dataset) and ds.ndim >= 1}
        if len(set(lengths.values())) > 1:
            raise EpisodeError(path, f"/annotations/{annotator}", f"segment fields differ in length {lengths}")


# ------------------------------------------------------------------------------------------------
# Migration: MIGRATIONS[n] upgrades an open (r+) file from version n to n + 1 in place.
# ------------------------------------------------------------------------------------------------


def _v0_to_v1(f: h5py.File) -> None:
    """v0 (pre-release recorder): gripper stored as float64, no app_version attribute."""
    g = f["obs/gripper"]
    if g.dtype != np.float32:
        values = g[()].astype(np.float32)
        chunks = g.chunks
        del f["obs/gripper"]
        f.create_dataset("obs/gripper", data=values, maxshape=(None,), chunks=chunks or (256,))
    if "app_version" not in f.attrs:
        f.attrs["app_version"] = "unknown (migrated from v0)"


MIGRATIONS: dict[int, Callable[[h5py.File], None]] = {0: _v0_to_v1}


def _v1_to_v2(src: h5py.File, dst_path: Path, progress: Callable[[int], None] | None) -> None:
    """v1 -> v2 into a new file: everything copied as it is except /obs/rgb, which is re-encoded as
    H.264 (lossy: recorder/video.py). A new file, not an in-place edit: HDF5 does not give back the
    space of a deleted dataset, and the raw RGB is most of a v1 file."""
    from recorder.video import write_video

    with h5py.File(dst_path, "w", libver="latest") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            if name != "obs":
                src.copy(src[name], dst, name=name)
        obs = dst.create_group("obs")
        for key, value in src["obs"].attrs.items():
            obs.attrs[key] = value
        for name in src["obs"]:
            if name != "rgb":
                src.copy(src["obs"][name], obs, name=name)
        if "rgb" in src["obs"]:
            rgb = src["obs/rgb"]
            n = rgb.shape[0]
            g = obs.create_group("rgb")
            for key, value in rgb.attrs.items():
                g.attrs[key] = value
            write_video(g, (rgb[i] for i in range(n)), n, float(src.attrs["fps"]), width=rgb.shape[2],
                        height=rgb.shape[1], progress=progress)
        dst.attrs["rgb_codec"] = "h264"
        dst.attrs["schema_version"] = 2
        dst.attrs["migrated_from"] = 1
        validate(dst, dst_path)


def migrate_file(path: str | os.PathLike, *, to: int = SCHEMA_VERSION,
                 progress: Callable[[int], None] | None = None) -> int:
    """Upgrade an episode on disk to version ``to``; return the version it had.

    Works on a copy that replaces the original only once it validates (fsynced, then one
    ``os.replace``), so a crash or a failing migration leaves the old file untouched.
    ``progress(k)`` is called as RGB frames are re-encoded (v1 -> v2).
    """
    from recorder.durable import fsync_path

    path = Path(path)
    with h5py.File(path, "r") as f:
        version = schema_version_of(f, path)
    if version >= to:
        return version
    original = version
    tmp = path.with_name(path.name + ".migrating")
    tmp2 = path.with_name(path.name + ".migrating2")
    try:
        shutil.copy2(path, tmp)
        with h5py.File(tmp, "r+") as f:
            while version < min(to, 1):  # in-place steps up to v1
                step = MIGRATIONS.get(version)
                if step is None:
                    raise EpisodeError(path, "schema_version", f"no migration from {version}")
                try:
                    step(f)
                except EpisodeError:
                    raise
                except Exception as exc:
                    raise EpisodeError(path, "schema_version", f"migration {version}->{version + 1} failed: {exc}") from None
                version += 1
                f.attrs["schema_version"] = version
            if version == to:
                validate(f, path)
        if version < to:  # v1 -> v2: a rebuild
            with h5py.File(tmp, "r") as f:
                try:
                    _v1_to_v2(f, tmp2, progress)
                except EpisodeError:
                    raise
                except Exception as exc:
                    raise EpisodeError(path, "schema_version", f"migration 1->2 failed: {type(exc).__name__}: {exc}") from None
            os.replace(tmp2, tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as exc:
        raise EpisodeError(path, "schema_version", f"cannot migrate in place ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
        tmp2.unlink(missing_ok=True)
    return original
