"""Episode files: a crash-safe writer fed by a bounded queue, and a validating random-access reader.

Crash safety comes from HDF5's single-writer/multiple-reader (SWMR) mode: once every dataset exists
the file is switched to SWMR, whose ordered metadata writes keep the file readable at any instant,
and the writer thread flushes at least every ``flush_interval`` seconds. A ``<file>.recording``
marker (JSON with the writer's pid) sits beside the file until ``finalize``/``discard``; a marker
whose process is gone is how recorder/recovery.py finds partial episodes after a SIGKILL.

What is on disk under the episode's name is recoverable at every instant of the lifecycle:

- until the datasets exist and SWMR is on, the file is built as ``<file>.creating`` (an HDF5 file
  open for writing without SWMR cannot be opened by anyone after a crash) and renamed into place;
  it holds no frame before that, so a crash there loses nothing but the empty shell;
- ``finalize`` never opens the recorded file for writing: the writer thread closes it cleanly
  (a clean partial), the finishing data (late extras, keyframes, proposals, outcome) goes into a
  copy ``<file>.finalizing``, which is fsynced and ``os.replace``d over the partial. Opening the
  partial ``r+`` instead costs ~50 ms whatever the size, the copy ~1.5 s per GB on ext4 (none on
  XFS/btrfs, which share extents: recorder/durable.copy_file), but a kill during an ``r+`` save leaves
  a file whose consistency flags say "open for write" and whose metadata may be half flushed
  (bench/finalize.py; issue 12);
- the marker carries the operator's outcome and notes while finalizing, so a crash during the
  save still keeps the verdict (recovery applies it).

Only the writer thread touches the HDF5 file while recording. h5py holds the GIL inside HDF5 calls,
so the default compression is the cheapest one that keeps files small (bench/recorder.py): the
control thread then waits at most a few milliseconds per written frame.

Size (~730 lines): the writer and the reader of one file format, whose crash-safety rules
(marker phases, SWMR order, finalize copy) they must agree on; the RGB codec is recorder/video.py.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import queue
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from importlib import metadata as _metadata
from pathlib import Path

import h5py
import numpy as np

from recorder.durable import copy_file, fsync_path
from recorder.schema import (
    AUTO_MIGRATE_TO,
    DEFAULT_COMPRESSION,
    OUTCOMES,
    RGB_STREAM,
    SCHEMA,
    SCHEMA_VERSION,
    EpisodeError,
    attr_str,
    compression_options,
    frame_fields,
    migrate_file,
    resolve_compression,
    rgb_is_video,
    schema_version_of,
    validate,
)
from recorder.video import DEFAULT_CRF, DEFAULT_RGB_CODEC, KEYFRAME, PACKET_CHUNK, RGB_CODECS, VideoDecoder, VideoEncoder

log = logging.getLogger(__name__)

__all__ = ["EpisodeWriter", "EpisodeReader", "EpisodeError", "CameraInfo", "marker_path", "read_marker"]

MARKER_SUFFIX = ".recording"
CREATING_SUFFIX = ".creating"  # the file before it holds any frame (see the module docstring)
FINALIZING_SUFFIX = ".finalizing"  # the complete episode being built by finalize
_STOP = object()
_ABORT = object()
_SMALL_FIELDS = ("/time", "/obs/ee_pose", "/obs/joint_pos", "/obs/gripper", "/action")
_RGB_INDEX = "/obs/rgb/index"


def _app_version() -> str:
    try:
        return _metadata.version("actstudio")
    except _metadata.PackageNotFoundError:
        return "0.1.0"


def marker_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + MARKER_SUFFIX)


def creating_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + CREATING_SUFFIX)


def finalizing_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + FINALIZING_SUFFIX)


def process_start_ticks(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot), to tell a live writer from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after its closing parenthesis.
    return int(stat.rsplit(")", 1)[1].split()[19])


def read_marker(path: str | os.PathLike) -> dict | None:
    try:
        return json.loads(marker_path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(path: Path, **extra) -> None:
    """(Re)write the marker atomically; ``extra`` (phase, outcome, notes) is for recovery."""
    pid = os.getpid()
    info = {"pid": pid, "start_ticks": process_start_ticks(pid), "host": socket.gethostname(),
            "started_at": _now_iso(), **extra}
    tmp = marker_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, marker_path(path))


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


def _root_attrs(meta: dict) -> dict:
    missing = [k for k in ("robot", "task") if not meta.get(k)]
    if missing:
        raise ValueError(f"episode meta needs {', '.join(missing)}")
    fps = float(meta.get("fps", 30.0))
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"episode meta fps must be > 0, got {meta.get('fps')!r}")
    attrs = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "robot": str(meta["robot"]),
        "task": str(meta["task"]),
        "instruction": str(meta.get("instruction", "")),
        "fps": fps,
        "started_at": str(meta.get("started_at") or _now_iso()),
        "operator": str(meta.get("operator", "")),
        "outcome": "unknown",
        "app_version": str(meta.get("app_version") or _app_version()),
        "notes": "",
        "state": "recording",
        "recovered": 0,
        "dropped_frames": 0,
    }
    for key, value in meta.items():  # extra scalar metadata (seed, input device, ...) is kept as is
        if key not in attrs and isinstance(value, (str, int, float, bool)):
            attrs[key] = value
    return attrs


def _camera_attrs(cam: dict) -> dict:
    try:
        K = np.asarray(cam["K"], dtype=np.float64)
        T = np.asarray(cam.get("T_base_camera", np.eye(4)), dtype=np.float64)
        width, height = int(cam["width"]), int(cam["height"])
        depth_scale = float(cam["depth_scale"])
    except KeyError as exc:
        raise ValueError(f"camera meta needs {exc.args[0]}") from None
    if K.shape != (3, 3) or T.shape != (4, 4):
        raise ValueError(f"camera meta K must be 3x3 and T_base_camera 4x4, got {K.shape} and {T.shape}")
    if width <= 0 or height <= 0 or depth_scale <= 0:
        raise ValueError("camera meta width, height and depth_scale must be > 0")
    return {"K": K, "T_base_camera": T, "width": width, "height": height, "depth_scale": depth_scale,
            "model": str(cam.get("model", "")), "serial": str(cam.get("serial", ""))}


def _extra_kind(value) -> tuple[str, tuple]:
    if isinstance(value, (str, bytes)):
        return "str", ()
    arr = np.asarray(value, dtype=np.float64)
    return "num", arr.shape


class EpisodeWriter:
    """Record one episode. ``append`` is called from the control thread and never blocks on I/O.

    ``lag`` is the number of frames waiting for the writer thread; ``dropped`` counts frames refused
    because the queue was full (also stored as the file's ``dropped_frames`` attribute). A crash
    loses at most the current lag (queue: 0.5 s of frames by default) plus ``flush_interval``
    seconds of written-but-unflushed frames: under 1 s.

    RGB is encoded as H.264 on the writer thread (``rgb_codec``, schema v2, recorder/video.py);
    ``rgb_codec=None`` keeps raw RGB frames compressed losslessly with ``compression`` (a schema v1
    file, as earlier versions wrote). Depth is always lossless (``compression``).
    """

    def __init__(self, path: str | os.PathLike, meta: dict, camera_meta: dict | None, *,
                 compression: str = DEFAULT_COMPRESSION, queue_frames: int | None = None,
                 flush_interval: float = 0.25, rgb_codec: str | None = DEFAULT_RGB_CODEC,
                 rgb_gop: int | None = None, rgb_crf: int = DEFAULT_CRF):
        self.path = Path(path)
        if self.path.exists() or creating_path(self.path).exists() or marker_path(self.path).exists():
            raise FileExistsError(f"{self.path}: already exists; refusing to overwrite an episode")
        self._attrs = _root_attrs(meta)
        self._cam = _camera_attrs(camera_meta) if camera_meta else None
        self._comp = compression
        compression_options(compression, np.dtype("uint8"))  # unknown names fail here, not in the thread
        self._attrs["compression"] = compression
        if rgb_codec is not None and rgb_codec not in RGB_CODECS:
            raise ValueError(f"unknown RGB codec {rgb_codec!r}; use one of {', '.join(RGB_CODECS)} or None (lossless)")
        self._video = bool(self._cam) and rgb_codec is not None
        self._encoder: VideoEncoder | None = None
        if self._video:
            self._encoder = VideoEncoder(self._cam["width"], self._cam["height"], self._attrs["fps"],
                                         codec=rgb_codec, gop=rgb_gop, crf=rgb_crf)  # bad settings fail here
            self._attrs["rgb_codec"] = rgb_codec
        elif self._cam:
            self._attrs["schema_version"] = 1  # raw RGB frames: the v1 layout
        self._version = int(self._attrs["schema_version"])
        self._packets: list[bytes] = []  # encoded since the last flush
        self._stream_len = 0  # bytes of packets handed out (written or pending)
        self.flush_interval = float(flush_interval)
        fps = self._attrs["fps"]
        # Half a second of frames absorbs a disk hiccup; a longer queue would let a crash lose more
        # than a second (queue + unflushed frames) when the writer falls behind. Beyond it frames are
        # dropped and counted instead.
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames or max(8, int(round(0.5 * fps))))
        # Flush by frame count too, so a writer catching up on a backlog never holds more than
        # flush_interval seconds of frames unflushed.
        self._flush_frames = max(1, int(round(fps * self.flush_interval)))
        self.appended = 0
        self.dropped = 0
        self.written = 0  # frames handed to HDF5
        self.flushed = 0  # frames durable on disk
        self.cpu_time = 0.0  # writer thread CPU seconds (bench/recorder.py)
        self.error: EpisodeError | None = None
        self._dof: int | None = None
        self._t0: float | None = None
        self._done = False

        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_marker(self.path, phase="created")
        try:
            self._f = h5py.File(creating_path(self.path), "w", libver="latest")
            self._f.attrs.update(self._attrs)
            if self._cam:
                g = self._f.create_group("camera")
                g.attrs.update({k: v for k, v in self._cam.items() if k != "depth_scale"})
        except Exception:
            self._remove_files()
            raise
        self._ds: dict[str, h5py.Dataset] = {}
        self._pending: dict[str, list] = {name: [] for name in _SMALL_FIELDS}
        self._extras: dict[str, tuple[str, tuple]] = {}
        self._pending_extras: dict[str, list] = {}
        self._late_extras: dict[str, dict[int, object]] = {}
        self._thread = threading.Thread(target=self._run, name=f"episode-writer {self.path.name}", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- control-thread side
    @property
    def capacity(self) -> int:
        """Frames the queue holds before ``append`` starts dropping."""
        return self._queue.maxsize

    @property
    def lag(self) -> int:
        return self._queue.qsize()

    def append(self, t: float, rgb: np.ndarray | None, depth: np.ndarray | None, ee_pose, joint_pos,
               gripper: float, action, extras: dict | None = None, *, block: bool = False) -> bool:
        """Queue one frame; False (and ``dropped`` += 1) when the writer is too far behind.

        ``block=True`` waits for room instead: for offline writers (demos generated faster than
        real time, tests), never for the control thread.
        """
        if self._done:
            raise RuntimeError(f"{self.path.name}: episode already finalized or discarded")
        if self.error is not None:
            raise self.error
        item = self._check_frame(t, rgb, depth, ee_pose, joint_pos, gripper, action, extras)
        try:
            self._queue.put(item, block=block)
        except queue.Full:
            self.dropped += 1
            return False
        self.appended += 1
        return True

    def _check_frame(self, t, rgb, depth, ee_pose, joint_pos, gripper, action, extras):
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"{self.path.name}: time {t} is not finite")
        if self._t0 is None:
            self._t0 = t
        ee_pose = np.asarray(ee_pose, dtype=np.float64).reshape(-1)
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        joint_pos = np.asarray(joint_pos, dtype=np.float64).reshape(-1)
        if ee_pose.shape != (7,) or action.shape != (8,):
            raise ValueError(f"{self.path.name}: ee_pose must be (7,) and action (8,), got {ee_pose.shape} and {action.shape}")
        if self._dof is None:
            if joint_pos.size == 0:
                raise ValueError(f"{self.path.name}: joint_pos is empty")
            self._dof = joint_pos.size
        elif joint_pos.size != self._dof:
            raise ValueError(f"{self.path.name}: joint_pos has {joint_pos.size} values, episode has {self._dof}")
        if self._cam:
            shape = (self._cam["height"], self._cam["width"])
            if rgb is None or depth is None:
                raise ValueError(f"{self.path.name}: rgb and depth are required (episode has a camera)")
            if rgb.shape != (*shape, 3) or rgb.dtype != np.uint8:
                raise ValueError(f"{self.path.name}: rgb {rgb.shape} {rgb.dtype}, expected {(*shape, 3)} uint8")
            if depth.shape != shape or depth.dtype != np.uint16:
                raise ValueError(f"{self.path.name}: depth {depth.shape} {depth.dtype}, expected {shape} uint16")
            # Copies: camera drivers may hand out views of buffers they reuse for the next frame.
            rgb, depth = rgb.copy(), depth.copy()
        else:
            rgb = depth = None
        return (t - self._t0, rgb, depth, ee_pose, joint_pos, np.float32(gripper), action, dict(extras or {}))

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        cpu0 = time.thread_time()
        last_flush = time.monotonic()
        aborted = False
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self.flush_interval / 2)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is _ABORT:
                    aborted = True
                    break
                if item is not None:
                    self._write(item)
                # The first frame is flushed at once so even a very short crashed take leaves a file.
                unflushed = self.written - self.flushed
                due = (time.monotonic() - last_flush >= self.flush_interval or self.flushed == 0
                       or unflushed >= self._flush_frames)
                if due and self.written > self.flushed:
                    self._flush()
                    last_flush = time.monotonic()
            if not aborted and self._ds:
                self._flush()
        except Exception as exc:  # disk full, permissions, ...: surfaced to the caller via append/finalize
            self.error = EpisodeError(self.path, "writer", f"{type(exc).__name__}: {exc}")
        finally:
            try:
                self._f.close()
            except Exception as exc:
                self.error = self.error or EpisodeError(self.path, "writer", f"close failed: {exc}")
            self.cpu_time = time.thread_time() - cpu0

    def _create(self, item) -> None:
        f = self._f
        t, rgb, depth, ee_pose, joint_pos, gripper, action, extras = item
        sizes = {"DoF": self._dof}
        if self._cam:
            sizes.update(H=self._cam["height"], W=self._cam["width"])
            self._comp = resolve_compression(self._comp, depth)
            f.attrs["compression"] = self._comp
        if self._video:
            g = f.create_group("obs/rgb")
            g.attrs.update(self._encoder.attrs)
            # Packets are compressed already; chunks unfiltered, so a chunk rewritten as a flush adds
            # bytes to it keeps its place in the file (the bytes already there stay as they were).
            self._ds[RGB_STREAM] = f.create_dataset(RGB_STREAM, shape=(0,), maxshape=(None,), dtype=np.uint8,
                                                    chunks=(PACKET_CHUNK,))
        for spec in frame_fields(self._version):
            if spec.image and not self._cam:
                continue
            trailing = tuple(sizes[d] if isinstance(d, str) else d for d in spec.trailing)
            fill = {"fillvalue": np.nan} if spec.dtype.kind == "f" else {}
            if spec.path == _RGB_INDEX:  # rows a crash left unwritten read as -1 (recorder/recovery.py)
                self._pending[_RGB_INDEX] = []
                self._ds[spec.path] = f.create_dataset(spec.path, shape=(0, 4), maxshape=(None, 4), dtype=np.int64,
                                                       chunks=(spec.chunk_frames, 4), fillvalue=-1)
                continue
            # Images get a Fletcher-32 checksum: a chunk that fails to shrink is stored raw, and
            # without it a damaged raw chunk would be read back as silently wrong pixels.
            comp = {**compression_options(self._comp, spec.dtype), "fletcher32": True} if spec.image else {}
            self._ds[spec.path] = f.create_dataset(
                spec.path, shape=(0, *trailing), maxshape=(None, *trailing), dtype=spec.dtype,
                chunks=(spec.chunk_frames, *trailing), **fill, **comp)
        if self._cam:
            self._ds["/obs/depth"].attrs["depth_scale"] = self._cam["depth_scale"]
        for name, value in extras.items():
            self._create_extra(name, value)
        # From here on no object may be created in the file until it is closed (SWMR rule).
        f.swmr_mode = True
        # SWMR keeps the file readable after a crash, so now (and not before) it may carry the
        # episode's name. The open handle follows the rename.
        os.replace(creating_path(self.path), self.path)
        _write_marker(self.path, phase="recording")

    def _create_extra(self, name: str, value) -> None:
        kind, shape = _extra_kind(value)
        if kind == "str":
            dtype, fill = h5py.string_dtype("utf-8"), {}
        else:
            dtype, fill = np.float64, {"fillvalue": np.nan}
        self._extras[name] = (kind, shape)
        self._pending_extras[name] = []
        self._ds[f"/extras/{name}"] = self._f.create_dataset(
            f"/extras/{name}", shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
            chunks=(256, *shape), **fill)

    def _write(self, item) -> None:
        if not self._ds:
            self._create(item)
        t, rgb, depth, ee_pose, joint_pos, gripper, action, extras = item
        n = self.written
        if self._video:
            data, key = self._encoder.encode(rgb)
            self._packets.append(data)
            self._pending[_RGB_INDEX].append((self._stream_len, len(data), KEYFRAME if key else 0, zlib.crc32(data)))
            self._stream_len += len(data)
            images = (("/obs/depth", depth),)
        else:
            images = (("/obs/rgb", rgb), ("/obs/depth", depth)) if self._cam else ()
        for name, img in images:
            ds = self._ds[name]
            ds.resize(n + 1, axis=0)
            ds[n] = img
        for name, value in zip(_SMALL_FIELDS, (t, ee_pose, joint_pos, gripper, action)):
            self._pending[name].append(value)
        for name, (kind, shape) in self._extras.items():
            value = extras.get(name)
            if value is None:
                value = "" if kind == "str" else np.full(shape, np.nan)
            elif kind == "num" and np.shape(value) != shape:
                self._late_extras.setdefault(name + "__mismatch", {})[n] = value
                value = np.full(shape, np.nan)
            self._pending_extras[name].append(value)
        for name in extras.keys() - self._extras.keys():
            self._late_extras.setdefault(name, {})[n] = extras[name]
        self.written = n + 1

    def _flush(self) -> None:
        n = self.written
        if self._packets:  # packet bytes before the index rows that point at them
            ds = self._ds[RGB_STREAM]
            start = ds.shape[0]
            blob = np.frombuffer(b"".join(self._packets), np.uint8)
            ds.resize(start + blob.size, axis=0)
            ds[start:] = blob
            self._packets.clear()
        # Small per-frame fields go in one block per flush (per-frame h5py calls cost more than the
        # data); /time is written last, so on disk it is never ahead of the images it indexes.
        index = (_RGB_INDEX,) if self._video else ()
        for name in (*index, *self._pending_extras, *reversed(_SMALL_FIELDS)):
            rows = self._pending[name] if name in self._pending else self._pending_extras[name]
            if not rows:
                continue
            ds = self._ds[name if name.startswith("/") else f"/extras/{name}"]
            start = ds.shape[0]
            ds.resize(n, axis=0)
            if ds.dtype.kind == "O":
                ds[start:n] = rows
            else:
                ds[start:n] = np.stack([np.asarray(r) for r in rows])
            rows.clear()
        self._f.flush()
        self.flushed = n

    # ---------------------------------------------------------------- end of episode
    def finalize(self, outcome: str, notes: str = "", *, propose: bool = True) -> Path:
        """Write the outcome, close the file, remove the recording marker; returns the path.

        With ``propose`` the episode also gets its keyframes and auto segment proposals
        (recorder/proposals.py) while it is still private to this writer.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} must be one of {'|'.join(OUTCOMES)}")
        self._stop(_STOP)
        if self.error is not None:
            raise self.error  # the marker stays: recovery keeps whatever reached the disk
        if self.written == 0:
            self._remove_files()
            raise EpisodeError(self.path, "frames", "no frames were recorded; nothing saved")
        # From here the partial on disk is complete and closed. Recovery keeps the verdict if we die.
        _write_marker(self.path, phase="finalizing", outcome=outcome, notes=str(notes))
        tmp = finalizing_path(self.path)
        try:
            copy_file(self.path, tmp)
            with h5py.File(tmp, "r+") as f:
                for name, values in self._late_extras.items():
                    self._write_late_extra(f, name, values)
                if propose:
                    try:
                        from recorder.proposals import write_into_open_file

                        write_into_open_file(f)
                    except Exception as exc:  # proposals are a convenience: never lose the take over them
                        log.warning("%s: no segment proposals: %s", self.path.name, exc)
                        notes = (notes + "\n" if notes else "") + f"no segment proposals: {exc}"
                f.attrs.update({"outcome": outcome, "notes": str(notes), "state": "complete",
                                "dropped_frames": int(self.dropped), "ended_at": _now_iso()})
            fsync_path(tmp)
            os.replace(tmp, self.path)
            fsync_path(self.path.parent)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            # The marker stays: recovery turns the intact partial into an episode with this outcome.
            raise EpisodeError(self.path, "finalize", f"{type(exc).__name__}: {exc}") from None
        marker_path(self.path).unlink(missing_ok=True)
        return self.path

    def _write_late_extra(self, f: h5py.File, name: str, values: dict[int, object]) -> None:
        """Extras first seen after recording started (SWMR cannot add datasets mid-recording)."""
        n = self.written
        sample = next(iter(values.values()))
        kind, shape = _extra_kind(sample)
        if kind == "str" or any(_extra_kind(v) != (kind, shape) for v in values.values()):
            data = np.array([""] * n, dtype=object)
            for i, v in values.items():
                data[i] = v if isinstance(v, str) else json.dumps(np.asarray(v).tolist())
            f.create_dataset(f"extras/{name}", data=data, dtype=h5py.string_dtype("utf-8"))
        else:
            data = np.full((n, *shape), np.nan)
            for i, v in values.items():
                data[i] = v
            f.create_dataset(f"extras/{name}", data=data)

    def discard(self) -> None:
        """Stop recording and delete the episode and its marker."""
        self._stop(_ABORT)
        self._remove_files()

    def _stop(self, token) -> None:
        if self._done:
            raise RuntimeError(f"{self.path.name}: episode already finalized or discarded")
        self._done = True
        if token is _ABORT:
            while True:  # the abort must not wait behind a backlog it is about to throw away
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
        self._queue.put(token)
        self._thread.join()

    def _remove_files(self) -> None:
        for p in (self.path, creating_path(self.path), finalizing_path(self.path), marker_path(self.path)):
            p.unlink(missing_ok=True)

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.finalize("unknown", notes=f"recording aborted: {exc}" if exc else "")


# ================================================================================================
# Reader
# ================================================================================================


@dataclass(frozen=True)
class CameraInfo:
    K: np.ndarray
    T_base_camera: np.ndarray
    depth_scale: float
    width: int
    height: int
    model: str
    serial: str


def _py(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else value.item()
    return value


def _column(ds: h5py.Dataset) -> list:
    if ds.dtype.kind in "OS":
        return [_py(v) for v in ds.asstr()[()]] if h5py.check_string_dtype(ds.dtype) else [_py(v) for v in ds[()]]
    return [_py(v) for v in ds[()]]


def open_h5(path: Path) -> h5py.File:
    """Open an episode file read-only, turning every failure into a one-line EpisodeError."""
    if not path.exists():
        raise EpisodeError(path, "file", "not found")
    size = path.stat().st_size
    try:
        # 8 MiB per dataset holds several compressed 640x480 chunks, so scrubbing back and forth
        # around the cursor decodes each frame once.
        return h5py.File(path, "r", rdcc_nbytes=8 << 20, rdcc_nslots=1021)
    except OSError as exc:
        text = str(exc)
        if "truncated file" in text:
            raise EpisodeError(path, "file", f"truncated ({size} bytes; HDF5 expects more)") from None
        if "signature" in text or size < 8:
            raise EpisodeError(path, "file", "not an HDF5 file") from None
        if "already open for write" in text or "SWMR" in text:
            raise EpisodeError(path, "file", "still being recorded, or the recorder crashed (recovered on next start)") from None
        raise EpisodeError(path, "file", f"cannot open ({text})") from None


class EpisodeReader:
    """A validated episode, kept open for random frame access (close() or use as a context manager).

    Per-frame vectors are loaded at open; images are read one frame at a time (v2 RGB decoded from
    its H.264 stream with a small decoded-GOP cache, recorder/video.py). v1 files (raw RGB) are
    read as they are; only v0 files are migrated in place first (a lossless change; atomically;
    ``migrated_from`` tells from which). v1 -> v2 re-encodes RGB lossily, so it happens only on
    request (``main.py migrate``), never behind the user's back.
    """

    def __init__(self, path: str | os.PathLike, *, migrate: bool = True):
        self.path = Path(path)
        self.migrated_from: int | None = None
        self._f = open_h5(self.path)
        try:
            version = schema_version_of(self._f, self.path)
            if version < AUTO_MIGRATE_TO:
                if not migrate:
                    raise EpisodeError(self.path, "schema_version", f"{version} is older than {AUTO_MIGRATE_TO}; open with migrate=True")
                self._f.close()
                self.migrated_from = migrate_file(self.path, to=AUTO_MIGRATE_TO)
                self._f = open_h5(self.path)
                version = AUTO_MIGRATE_TO
            self.schema_version = version
            self.n_frames = validate(self._f, self.path)
            self._load()
        except EpisodeError:
            self._f.close()
            raise
        except Exception as exc:  # any other h5py failure on damaged metadata
            self._f.close()
            raise EpisodeError(self.path, "file", f"unreadable ({type(exc).__name__}: {exc})") from None

    def _load(self) -> None:
        f = self._f
        self.meta: dict = {k: _py(v) for k, v in f.attrs.items()}
        self.time = f["time"][()]
        self.ee_pose = f["obs/ee_pose"][()]
        self.joint_pos = f["obs/joint_pos"][()]
        self.gripper = f["obs/gripper"][()]
        self.action = f["action"][()]
        self.has_images = "obs/rgb" in f
        if self.has_images:
            cam = f["camera"].attrs
            self.camera: CameraInfo | None = CameraInfo(
                K=np.asarray(cam["K"], dtype=float), T_base_camera=np.asarray(cam["T_base_camera"], dtype=float),
                depth_scale=float(f["obs/depth"].attrs["depth_scale"]), width=int(cam["width"]),
                height=int(cam["height"]), model=attr_str(cam["model"]), serial=attr_str(cam["serial"]))
            self._depth = f["obs/depth"]
            self._rgb = VideoDecoder(f["obs/rgb"], self.n_frames) if rgb_is_video(f) else f["obs/rgb"]
        else:
            self.camera = None
        self.extras: dict[str, np.ndarray | list] = {}
        for name, ds in f.get("extras", {}).items():
            self.extras[name] = _column(ds) if ds.dtype.kind in "OS" else ds[()]

    @property
    def outcome(self) -> str:
        return str(self.meta["outcome"])

    @property
    def duration(self) -> float:
        return float(self.time[-1] - self.time[0]) if self.n_frames > 1 else 0.0

    def _frame(self, ds: h5py.Dataset | VideoDecoder, name: str, i: int) -> np.ndarray:
        if not self.has_images:
            raise EpisodeError(self.path, name, "episode was recorded without a camera")
        i = int(i)
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(f"{self.path.name}: frame {i} outside 0..{self.n_frames - 1}")
        try:
            if isinstance(ds, VideoDecoder):
                return ds.frame(i % self.n_frames)
            return ds[i % self.n_frames]
        except Exception as exc:
            raise EpisodeError(self.path, f"{name}[{i}]", f"cannot decode ({exc})") from None

    def rgb(self, i: int) -> np.ndarray:
        return self._frame(self._rgb if self.has_images else None, "/obs/rgb", i)

    def depth(self, i: int) -> np.ndarray:
        return self._frame(self._depth if self.has_images else None, "/obs/depth", i)

    @property
    def keyframes(self) -> list[dict]:
        """``[{"index": frame, "kind": str}, ...]`` from /keyframes (empty if none yet)."""
        g = self._f.get("keyframes")
        if not isinstance(g, h5py.Group) or "index" not in g:
            return []
        index = _column(g["index"])
        kind = _column(g["kind"]) if "kind" in g else [""] * len(index)
        return [{"index": int(i), "kind": str(k)} for i, k in zip(index, kind)]

    @property
    def annotations(self) -> dict[str, list[dict]]:
        """Raw segments per annotator: ``{annotator: [{"start":…, "end":…, "primitive":…, …}]}``."""
        out: dict[str, list[dict]] = {}
        if "annotations/_store" in self._f:
            from recorder.annotations import load_annotations

            return {name: [seg.to_dict() for seg in doc.segments]
                    for name, doc in load_annotations(self.path).items()}
        g = self._f.get("annotations")
        if not isinstance(g, h5py.Group):
            return out
        for annotator, group in g.items():
            if not isinstance(group, h5py.Group):
                continue
            columns = {k: _column(ds) for k, ds in group.items() if isinstance(ds, h5py.Dataset) and ds.ndim == 1}
            n = min((len(c) for c in columns.values()), default=0)
            out[annotator] = [{k: c[j] for k, c in columns.items()} for j in range(n)]
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "EpisodeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EpisodeReader({self.path.name!r}, {self.n_frames} frames, {self.meta.get('task')}, {self.outcome})"
