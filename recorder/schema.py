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
SCHEMA_VERSION = 1
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
    "compression": "str",
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


FRAME_FIELDS: tuple[FrameField, ...] = (
    FrameField("/time", np.dtype("float64"), (), 1024),
    FrameField("/obs/rgb", np.dtype("uint8"), ("H", "W", 3), 1, image=True),
    FrameField("/obs/depth", np.dtype("uint16"), ("H", "W"), 1, image=True),
    FrameField("/obs/ee_pose", np.dtype("float64"), (7,), 256),
    FrameField("/obs/joint_pos", np.dtype("float64"), ("DoF",), 256),
    FrameField("/obs/gripper", np.dtype("float32"), (), 256),
    FrameField("/action", np.dtype("float64"), (8,), 256),
)
FIELDS_BY_PATH = {f.path: f for f in FRAME_FIELDS}


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
    if name.startswith("blosc-"):  # blosc-<codec>-<level>, e.g. blosc-zstd-1, blosc-lz4-5
        codec, _, level = name[6:].partition("-")
        if codec not in ("lz4", "lz4hc", "zstd", "zlib", "blosclz"):
            raise ValueError(f"unknown blosc codec {codec!r} in {name!r}")
        return dict(hdf5plugin.Blosc(cname=codec, clevel=int(level or 5), shuffle=hdf5plugin.Blosc.SHUFFLE))
    if name.startswith("zstd"):
        return {**hdf5plugin.Zstd(clevel=int(name[4:] or 1)), "shuffle": itemsize_shuffle}
    raise ValueError(f"unknown compression {name!r}; use none, lzf, gzip<1-9>, blosc-<lz4|zstd>-<1-9>, zstd<1-22>")


COMPRESSIONS = ("none", "lzf", "gzip1", "blosc-lz4-5", "blosc-zstd-1", "zstd1")
# Chosen from bench/recorder.py: ~3 ms per 640x480 RGB-D frame on one core, ~0.6 of raw size,
# ~2 ms random read. gzip costs 5x the CPU for ~10 % smaller files.
DEFAULT_COMPRESSION = "blosc-zstd-1"


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
    """Check a current-version episode; return its frame count or raise EpisodeError naming the field.

    Cheap enough to run on every open (no image data is decoded except the last frame, which catches
    files cut short inside the data).
    """
    version = schema_version_of(f, path)
    if version != SCHEMA_VERSION:
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

    n_frames = None
    for spec in FRAME_FIELDS:
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
        for name in ("obs/rgb", "obs/depth"):
            try:
                f[name][n_frames - 1]
            except Exception as exc:  # h5py raises OSError/ValueError/RuntimeError for damaged chunks
                raise EpisodeError(path, f"/{name}", f"last frame unreadable ({exc})") from None
    return int(n_frames)


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


def migrate_file(path: str | os.PathLike) -> int:
    """Upgrade an episode on disk to SCHEMA_VERSION; return the version it had.

    Works on a copy that replaces the original only once it validates, so a crash or a failing
    migration leaves the old file untouched.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        version = schema_version_of(f, path)
    if version == SCHEMA_VERSION:
        return version
    original = version
    tmp = path.with_name(path.name + ".migrating")
    try:
        shutil.copy2(path, tmp)
        with h5py.File(tmp, "r+") as f:
            while version < SCHEMA_VERSION:
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
            validate(f, path)
        os.replace(tmp, path)
    except OSError as exc:
        raise EpisodeError(path, "schema_version", f"cannot migrate in place ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return original
