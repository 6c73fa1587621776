"""Export episodes as a LeRobotDataset v3.0 folder (what ``lerobot`` 0.6.1 loads with
``LeRobotDataset(repo_id, root=OUT)``; tests/test_export_lerobot.py loads it in a separate venv).

Layout (lerobot/datasets/utils.py, dataset_metadata.py; checked against a dataset written by
``LeRobotDataset.create`` + ``save_episode`` of lerobot 0.6.1)::

    meta/info.json                               codebase_version "v3.0", fps, features, total_*, paths
    meta/stats.json                              per feature min/max/mean/std/count/q01…q99
    meta/tasks.parquet                           task (pandas index) → task_index
    meta/episodes/chunk-000/file-000.parquet     one row per episode: length, tasks, where its rows
                                                 and video frames are, per-episode stats
    data/chunk-XXX/file-XXX.parquet              one row per frame, one row group per episode
    videos/observation.images.rgb/chunk-XXX/file-XXX.mp4   episodes back to back in one stream

Per frame: ``observation.state`` = joint positions + gripper, ``observation.ee_pose`` = x y z qx qy
qz qw, ``action`` = our 8-d commanded action (target pose + gripper), ``timestamp`` = frame/fps
(LeRobot finds video frames by timestamp, so they are on the fps grid; the recorded clock is not
exported), ``frame_index``, ``episode_index``, ``index``, ``task_index`` (the episode's
instruction, else its task name).

Subtasks: the verified atomic-action segments (recorder.export.verified_segments, quality ≥
--min-quality) follow LeRobot 0.6.1's language schema (lerobot/datasets/language.py and the
steerable annotation pipeline's writer, lerobot/annotations/steerable_pipeline/writer.py): a
``language_persistent`` column whose value, the same on every frame of an episode, lists one row
``{role: "assistant", content: <instruction>, style: "subtask", timestamp: <segment start, s>,
camera: None, tool_calls: None}`` per segment (a subtask is active from its timestamp until the
next one), plus an empty ``language_events`` column; both declared in info.json with dtype
"language". A gap between two segments therefore reads as the earlier subtask still active.

RGB: libsvtav1 (AV1, yuv420p, GOP 2, CRF 30, preset 12 — LeRobot's own encoder defaults, decoded by
both its torchcodec and PyAV backends), h264 where the PyAV build lacks SVT-AV1.

Depth (``depth=True``, ``--depth``): ``observation.images.depth`` as LeRobot 0.6.1 stores depth
(lerobot/configs/video.py DepthEncoderConfig, lerobot/datasets/depth_utils.py): millimetres
log-quantised to 12 bits (depth_min 0.01 m, depth_max 10 m, shift 3.5 m), lossless HEVC gray12le,
``info.is_depth_map`` true; ``LeRobotDataset`` dequantises it to mm on read. The quantisation step
grows with depth (1.4 mm at 0.65 m, 1.8 mm at 2 m; the error is at most half a step); holes (0)
read back as 10 mm. Off by
default: not every decoder build has 12-bit HEVC, and lossless 12-bit HEVC is slow (two sim
episodes, 234 VGA frames: 2.2 s without depth, 6.2 s with; bench/lerobot_export.py).

Crash safety: everything is written into ``OUT.<pid>.partial`` and renamed to OUT at the end, so a
failed or interrupted export leaves no half-written dataset under OUT.

Size (~590 lines): one file format (LeRobot v3.0) end to end — features, parquet and video
writers, stats, subtasks — kept together so the format lives in one place beside its docstring.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .durable import remove_dead_temporaries
from .export import MIN_QUALITY, ExportError, verified_segments

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder (lerobot DEFAULT_CHUNK_SIZE)
DATA_FILE_MB = 100  # lerobot DEFAULT_DATA_FILE_SIZE_IN_MB
VIDEO_FILE_MB = 200  # lerobot DEFAULT_VIDEO_FILE_SIZE_IN_MB
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
RGB_KEY = "observation.images.rgb"
DEPTH_KEY = "observation.images.depth"
LANGUAGE_PERSISTENT = "language_persistent"
LANGUAGE_EVENTS = "language_events"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
EE_NAMES = ["x", "y", "z", "qx", "qy", "qz", "qw"]
ACTION_NAMES = EE_NAMES + ["gripper"]
STATS_IMAGE_FRAMES = 100  # frames sampled per episode for image stats (lerobot samples too)
STATS_IMAGE_SIDE = 150  # ... and shrinks them to about this size (auto_downsample_height_width)
# LeRobot's RGB encoder defaults (lerobot/configs/video.py VideoEncoderConfig).
SVTAV1 = {"g": 2, "crf": 30, "preset": 12, "fast_decode": 0}
H264 = {"g": 2, "crf": 23, "preset": "veryfast"}
# LeRobot's depth encoder defaults (DepthEncoderConfig): lossless 12-bit HEVC of log-quantised depth.
DEPTH_HEVC = {"g": 2, "crf": 30, "preset": None, "fast_decode": 0, "extra_options": {"x265-params": "lossless=1"}}
DEPTH_MIN_M, DEPTH_MAX_M, DEPTH_SHIFT_M, DEPTH_QMAX = 0.01, 10.0, 3.5, 4095


def pick_vcodec(requested: str | None = None) -> str:
    import av
    if requested:
        if requested not in av.codecs_available:
            raise ExportError(f"video codec {requested!r} is not in this PyAV build")
        return requested
    return "libsvtav1" if "libsvtav1" in av.codecs_available else "libx264"


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    """lerobot update_chunk_file_indices: CHUNKS_SIZE files per chunk folder."""
    return (chunk + 1, 0) if file + 1 >= CHUNKS_SIZE else (chunk, file + 1)


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """min/max/mean/std/count/qNN over frames (axis 0), as lerobot compute_episode_stats."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q in QUANTILES:
        out[f"q{int(q * 100):02d}"] = np.quantile(x, q, axis=0)
    return out


def pixel_histogram(frames: np.ndarray, levels: int = 256) -> np.ndarray:
    """(channels, levels) counts of each value per channel of (..., H, W, C) or (..., H, W) frames."""
    flat = frames.reshape(-1, frames.shape[-1]) if frames.ndim >= 3 and frames.shape[-1] in (3, 4) else frames.reshape(-1, 1)
    return np.stack([np.bincount(flat[:, c], minlength=levels)[:levels] for c in range(flat.shape[1])])


def _image_stats(hist: np.ndarray, n_frames: int, scale: float = 255.0) -> dict[str, np.ndarray]:
    """Per-channel stats shaped (C, 1, 1) like lerobot's image stats, from a ``pixel_histogram``
    (exact for integer pixels; episodes add up without keeping frames). RGB is divided by 255 (to
    [0, 1]), depth kept in mm (``scale=1``), as lerobot does."""
    levels = np.arange(hist.shape[1]) / scale
    total = hist.sum(1, keepdims=True)
    mean = (hist * levels).sum(1) / total[:, 0]
    std = np.sqrt(np.maximum((hist * levels ** 2).sum(1) / total[:, 0] - mean ** 2, 0))
    cdf = np.cumsum(hist, 1) / total
    present = hist > 0
    last = hist.shape[1] - 1
    s = {"min": levels[present.argmax(1)], "max": levels[last - present[:, ::-1].argmax(1)], "mean": mean, "std": std}
    for q in QUANTILES:
        s[f"q{int(q * 100):02d}"] = levels[(cdf >= q).argmax(1)]
    s = {k: v.reshape(-1, 1, 1) for k, v in s.items()}
    s["count"] = np.array([n_frames])
    return s


def _language_types(json_t=None):
    """Arrow types of the two language columns (lerobot/datasets/language.py); ``tool_calls`` holds
    JSON (arrow.json extension, as lerobot declares it) which pyarrow cannot build from Python
    objects, so columns are built with ``json_t=pa.string()`` and cast."""
    import pyarrow as pa
    if json_t is None:
        json_t = pa.json_() if hasattr(pa, "json_") else pa.string()
    persistent = pa.struct([pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string()),
                            pa.field("style", pa.string()), pa.field("timestamp", pa.float32(), nullable=False),
                            pa.field("camera", pa.string()), pa.field("tool_calls", pa.list_(json_t))])
    event = pa.struct([pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string()),
                       pa.field("style", pa.string()), pa.field("camera", pa.string()),
                       pa.field("tool_calls", pa.list_(json_t))])
    return pa.list_(persistent), pa.list_(event)


def subtask_rows(segments, fps: int) -> list[dict]:
    """LeRobot ``language_persistent`` rows (style "subtask") for verified segments, sorted by start."""
    rows = []
    for v in sorted(segments, key=lambda v: v.segment.start):
        s = v.segment
        text = s.instruction.strip() or (f"{s.primitive} {s.object}".strip())
        rows.append({"role": "assistant", "content": text, "style": "subtask",
                     "timestamp": float(np.float32(s.start / fps)), "camera": None, "tool_calls": None})
    return rows


def quantize_depth_mm(depth_mm: np.ndarray) -> np.ndarray:
    """LeRobot's 12-bit log depth code (lerobot/datasets/depth_utils.py quantize_depth, input in mm,
    default depth_min/depth_max/shift), float32 like it, so its dequantize_depth inverts ours.
    0 (no reading) maps to code 0, which reads back as depth_min (10 mm)."""
    d = depth_mm.astype(np.float32)
    lo, hi, shift = np.float32(DEPTH_MIN_M * 1000), np.float32(DEPTH_MAX_M * 1000), np.float32(DEPTH_SHIFT_M * 1000)
    log_min, log_max = np.log(float(lo + shift)), np.log(float(hi + shift))
    norm = (np.log(d + shift) - log_min) / (log_max - log_min)
    return np.rint(norm * DEPTH_QMAX).clip(0, DEPTH_QMAX).astype(np.uint16)


@dataclass(frozen=True)
class _Stream:
    """A camera video feature: its encoder and what info.json records about it."""
    key: str
    vcodec: str
    depth: bool = False

    @property
    def settings(self) -> dict:
        if self.depth:
            return DEPTH_HEVC
        return SVTAV1 if self.vcodec == "libsvtav1" else H264

    @property
    def pix_fmt(self) -> str:
        return "gray12le" if self.depth else "yuv420p"

    def codec_options(self) -> dict[str, str]:
        """PyAV options as lerobot's VideoEncoderConfig.get_codec_options builds them."""
        st = self.settings
        opts = {"g": str(st["g"]), "crf": str(st["crf"])}
        if st.get("preset") is not None:
            opts["preset"] = str(st["preset"])
        if self.vcodec == "libsvtav1":
            opts["svtav1-params"] = f"fast-decode={st['fast_decode']}"
        if self.depth:
            opts["x265-params"] = st["extra_options"]["x265-params"] + ":log-level=error"
        return opts

    def frame(self, image: np.ndarray):
        import av
        if self.depth:
            return av.VideoFrame.from_ndarray(quantize_depth_mm(image), format="gray12le")
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")

    def info(self, path: Path) -> dict:
        """info.json ``features[key]["info"]`` as lerobot's writer records it (get_video_info + encoder)."""
        import av
        info = {"is_depth_map": True, "depth_unit": "mm"} if self.depth else {}
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            info.update({"video.height": s.height, "video.width": s.width, "video.codec": s.codec.canonical_name,
                         "video.pix_fmt": s.pix_fmt, "video.fps": int(s.base_rate),
                         "video.channels": 1 if self.depth else 3, "has_audio": bool(c.streams.audio)})
        info.update({f"video.{k}": v for k, v in self.settings.items()})
        info["video.video_backend"] = "pyav"
        info.setdefault("video.extra_options", {})
        if self.depth:
            info.update({"video.depth_min": DEPTH_MIN_M, "video.depth_max": DEPTH_MAX_M,
                         "video.shift": DEPTH_SHIFT_M, "video.use_log": True})
        else:
            info["is_depth_map"] = False
        return info


@dataclass
class _Video:
    """One mp4 of a camera key: episodes encoded back to back, pts counting frames in this file."""
    path: Path
    stream: _Stream
    fps: int
    width: int
    height: int
    frames: int = 0
    _container: object = None
    _stream: object = None

    def open(self) -> None:
        import av
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config per file at its default level
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # faststart: the index at the front, as lerobot writes its files (seeks without reading to the end)
        self._container = av.open(str(self.path), "w", options={"movflags": "faststart"})
        self._stream = self._container.add_stream(self.stream.vcodec, self.fps, options=self.stream.codec_options())
        self._stream.pix_fmt = self.stream.pix_fmt
        self._stream.width, self._stream.height = self.width, self.height

    def add(self, image: np.ndarray, keyframe: bool = False) -> None:
        import av
        if self._container is None:
            self.open()
        frame = self.stream.frame(image)
        frame.pts = self.frames
        if keyframe:  # each episode starts on a keyframe, like lerobot's per-episode files concatenated
            frame.pict_type = av.video.frame.PictureType.I
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 2**20 if self.path.exists() else 0.0


@dataclass
class _Camera:
    """Everything one video key needs across episodes: current file, rollover, pixel histogram."""
    stream: _Stream
    root: Path
    fps: int
    hw: tuple[int, int]
    chunk: int = 0
    file: int = 0
    video: _Video | None = None
    hist: np.ndarray | None = None
    sampled: int = 0

    def current(self) -> _Video:
        if self.video is None:
            path = self.root / VIDEO_PATH.format(video_key=self.stream.key, chunk_index=self.chunk, file_index=self.file)
            self.video = _Video(path, self.stream, self.fps, self.hw[1], self.hw[0])
        return self.video

    def episode_meta(self, start: int, n: int) -> dict:
        k = self.stream.key
        return {f"videos/{k}/chunk_index": self.chunk, f"videos/{k}/file_index": self.file,
                f"videos/{k}/from_timestamp": start / self.fps, f"videos/{k}/to_timestamp": (start + n) / self.fps}

    def roll_over(self) -> None:
        if self.video is not None and self.video.size_mb >= VIDEO_FILE_MB:
            self.video.close()
            self.video = None
            self.chunk, self.file = _next_file(self.chunk, self.file)

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
            self.video = None


@dataclass
class _DataFile:
    """One data parquet file; one row group per episode (as lerobot writes)."""
    path: Path
    schema: object
    rows: int = 0
    _writer: object = None

    def write(self, table) -> None:
        import pyarrow.parquet as pq
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(str(self.path), self.schema, compression="snappy", use_dictionary=True)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 2**20 if self.path.exists() else 0.0


@dataclass
class LeRobotExport:
    episodes: int = 0
    frames: int = 0
    subtasks: int = 0
    tasks: list[str] = field(default_factory=list)
    vcodec: str | None = None


class _Head(NamedTuple):
    """What the dataset's layout needs from one episode, read before anything is written."""
    path: Path
    n_frames: int
    fps: float
    dof: int
    camera_hw: tuple[int, int] | None
    task: str
    robot: str | None


def _episode_task(meta: dict) -> str:
    return str(meta.get("instruction") or "").strip() or str(meta.get("task") or "").strip() or "task"


def export_lerobot(episodes: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                   min_quality: float = MIN_QUALITY, annotator: str | None = None, vcodec: str | None = None,
                   only_success: bool = False, depth: bool = False, progress: bool = True) -> LeRobotExport:
    """Write ``episodes`` as a LeRobotDataset v3.0 folder at ``out`` (must not exist); return counts.

    ``depth`` adds ``observation.images.depth`` as LeRobot depth video (12-bit log-quantised,
    lossless HEVC; ``LeRobotDataset`` returns it in mm)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from .episode import EpisodeReader

    out = Path(out)
    if out.exists():
        raise ExportError(f"{out}: already exists; choose a new output folder")
    episodes = [Path(p) for p in episodes]
    # Read what the dataset needs up front: a mismatch fails before anything is encoded.
    heads = []
    for p in episodes:
        with EpisodeReader(p) as r:
            if only_success and r.outcome != "success":
                continue
            cam = (r.camera.height, r.camera.width) if r.camera is not None else None
            heads.append(_Head(p, r.n_frames, float(r.meta.get("fps") or 0), r.joint_pos.shape[1], cam,
                               _episode_task(r.meta), r.meta.get("robot")))
            if depth and cam is None:
                raise ExportError(f"{p.name}: recorded without a camera; cannot export depth")
    if not heads:
        raise ExportError("no episodes to export" + (" (none successful)" if only_success else ""))
    first = heads[0]
    fps = int(round(first.fps))
    for h in heads:
        if fps <= 0 or abs(h.fps - fps) > 1e-6:
            raise ExportError(f"{h.path.name}: fps {h.fps:g}; LeRobot needs one integer fps for all episodes "
                              f"({first.fps:g} first)")
        if h.dof != first.dof:
            raise ExportError(f"{h.path.name}: {h.dof} joints, the first episode has {first.dof}; export one robot at a time")
        if h.camera_hw != first.camera_hw:
            raise ExportError(f"{h.path.name}: camera {h.camera_hw}, the first episode has {first.camera_hw}; "
                              "one image size per dataset")
    dof, cam, robot = first.dof, first.camera_hw, first.robot
    if cam is not None and (cam[0] % 2 or cam[1] % 2):
        raise ExportError(f"{first.path.name}: image {cam[1]}x{cam[0]} has an odd side; yuv420p video needs even sides")
    segs = {h.path: verified_segments(h.path, min_quality, annotator) for h in heads}
    with_language = any(segs.values())
    codec = pick_vcodec(vcodec) if cam is not None else None

    state_names = [f"joint_{i + 1}" for i in range(dof)] + ["gripper"]
    features: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": [dof + 1], "names": state_names},
        "observation.ee_pose": {"dtype": "float32", "shape": [7], "names": EE_NAMES},
        "action": {"dtype": "float32", "shape": [8], "names": ACTION_NAMES},
    }
    streams = []
    if cam is not None:
        features[RGB_KEY] = {"dtype": "video", "shape": [cam[0], cam[1], 3], "names": ["height", "width", "channels"]}
        streams.append(_Stream(RGB_KEY, codec))
    if depth:
        import av
        if "libx265" not in av.codecs_available:
            raise ExportError("this PyAV build has no libx265 (HEVC), which LeRobot depth video needs")
        features[DEPTH_KEY] = {"dtype": "video", "shape": [cam[0], cam[1], 1], "names": ["height", "width", "channels"]}
        streams.append(_Stream(DEPTH_KEY, "libx265", depth=True))
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        features[k] = {"dtype": "float32" if k == "timestamp" else "int64", "shape": [1], "names": None}
    persistent_t, events_t = _language_types()
    persistent_s, events_s = _language_types(pa.string())
    fields = [pa.field("observation.state", pa.list_(pa.float32(), dof + 1)),
              pa.field("observation.ee_pose", pa.list_(pa.float32(), 7)),
              pa.field("action", pa.list_(pa.float32(), 8)),
              pa.field("timestamp", pa.float32())] + [pa.field(k, pa.int64()) for k in
                                                     ("frame_index", "episode_index", "index", "task_index")]
    if with_language:
        features[LANGUAGE_PERSISTENT] = {"dtype": "language", "shape": [1], "names": None}
        features[LANGUAGE_EVENTS] = {"dtype": "language", "shape": [1], "names": None}
        fields += [pa.field(LANGUAGE_PERSISTENT, persistent_t), pa.field(LANGUAGE_EVENTS, events_t)]
    schema = pa.schema(fields)

    remove_dead_temporaries(out, ".partial")  # what killed earlier exports to OUT left
    tmp = out.with_name(f"{out.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    result = LeRobotExport(vcodec=codec)
    tasks: dict[str, int] = {}
    ep_rows: list[dict] = []
    all_vec: dict[str, list[np.ndarray]] = {k: [] for k in features if features[k]["dtype"] not in ("video", "language")}
    cams = [_Camera(st, tmp, fps, cam) for st in streams]
    d_chunk = d_file = 0
    data = None
    total_frames = sum(h.n_frames for h in heads)
    try:
        bar = tqdm(total=total_frames, unit="frame", desc="lerobot export", disable=not progress)
        for ep_index, head in enumerate(heads):
            p, task = head.path, head.task
            task_index = tasks.setdefault(task, len(tasks))
            with EpisodeReader(p) as r:
                n = r.n_frames
                cols = {
                    "observation.state": np.hstack([r.joint_pos, r.gripper[:, None]]).astype(np.float32),
                    "observation.ee_pose": r.ee_pose.astype(np.float32),
                    "action": r.action.astype(np.float32),
                    "timestamp": (np.arange(n) / fps).astype(np.float32),
                    "frame_index": np.arange(n, dtype=np.int64),
                    "episode_index": np.full(n, ep_index, dtype=np.int64),
                    "index": np.arange(result.frames, result.frames + n, dtype=np.int64),
                    "task_index": np.full(n, task_index, dtype=np.int64),
                }
                arrays = []
                for f in fields:
                    if f.name == LANGUAGE_PERSISTENT:
                        rows = subtask_rows(segs[p], fps)
                        arrays.append(pa.array([rows] * n, type=persistent_s).cast(persistent_t))
                        result.subtasks += len(rows)
                    elif f.name == LANGUAGE_EVENTS:
                        arrays.append(pa.array([[]] * n, type=events_s).cast(events_t))
                    elif isinstance(f.type, pa.FixedSizeListType):
                        v = cols[f.name]
                        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]))
                    else:
                        arrays.append(pa.array(cols[f.name], type=f.type))
                if data is None:
                    data = _DataFile(tmp / DATA_PATH.format(chunk_index=d_chunk, file_index=d_file), schema)
                ep = {"episode_index": ep_index, "tasks": [task], "length": n,
                      "data/chunk_index": d_chunk, "data/file_index": d_file,
                      "dataset_from_index": result.frames, "dataset_to_index": result.frames + n}
                data.write(pa.Table.from_arrays(arrays, schema=schema))
                stats = {k: _stats(cols[k]) for k in all_vec}
                if cams:
                    pick = set(np.linspace(0, n - 1, min(n, STATS_IMAGE_FRAMES)).round().astype(int).tolist())
                    step = max(1, max(cam) // STATS_IMAGE_SIDE)  # lerobot also shrinks images for stats
                    hists = {c.stream.key: None for c in cams}
                    starts = {c.stream.key: c.current().frames for c in cams}
                    mm = r.camera.depth_scale * 1000.0
                    for i in range(n):
                        for c in cams:
                            if c.stream.depth:
                                raw = r.depth(i)
                                image = raw if mm == 1.0 else np.rint(raw * mm).clip(0, 65535).astype(np.uint16)
                            else:
                                image = r.rgb(i)
                            c.current().add(image, keyframe=(i == 0))
                            if i in pick:
                                h = pixel_histogram(image[::step, ::step], 65536 if c.stream.depth else 256)
                                hists[c.stream.key] = h if hists[c.stream.key] is None else hists[c.stream.key] + h
                        bar.update(1)
                    for c in cams:
                        h = hists[c.stream.key]
                        stats[c.stream.key] = _image_stats(h, len(pick), 1.0 if c.stream.depth else 255.0)
                        c.hist = h if c.hist is None else c.hist + h
                        c.sampled += len(pick)
                        ep.update(c.episode_meta(starts[c.stream.key], n))
                else:
                    bar.update(n)
            for k in all_vec:
                all_vec[k].append(cols[k])
            for k, s in stats.items():
                for name, v in s.items():
                    ep[f"stats/{k}/{name}"] = v.tolist()
            ep.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            ep_rows.append(ep)
            result.frames += n
            result.episodes += 1
            # Roll over to the next file past lerobot's size limits (checked after whole episodes).
            if data.size_mb >= DATA_FILE_MB:
                data.close()
                data = None
                d_chunk, d_file = _next_file(d_chunk, d_file)
            for c in cams:
                c.roll_over()
        bar.close()
        if data is not None:
            data.close()
        for c in cams:
            c.close()
            features[c.stream.key]["info"] = c.stream.info(tmp / VIDEO_PATH.format(video_key=c.stream.key, chunk_index=0, file_index=0))

        meta = tmp / "meta"
        ep_table = pa.Table.from_pylist(ep_rows)
        (tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(ep_table, tmp / EPISODES_PATH.format(chunk_index=0, file_index=0), compression="snappy")
        _write_tasks(meta / "tasks.parquet", tasks)
        stats_all = {k: _stats(np.concatenate(v)) for k, v in all_vec.items()}
        for c in cams:
            stats_all[c.stream.key] = _image_stats(c.hist, c.sampled, 1.0 if c.stream.depth else 255.0)
        (meta / "stats.json").write_text(json.dumps({k: {n: v.tolist() for n, v in s.items()} for k, s in stats_all.items()}, indent=4))
        info = {
            "codebase_version": CODEBASE_VERSION, "fps": fps, "features": features,
            "total_episodes": result.episodes, "total_frames": result.frames, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB,
            "data_path": DATA_PATH, "video_path": VIDEO_PATH if cam is not None else None,
            "robot_type": robot, "splits": {"train": f"0:{result.episodes}"},
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4))
        os.replace(tmp, out)
    except BaseException:
        for c in cams:
            try:
                c.close()
            except Exception:  # noqa: BLE001, S110 - the folder is deleted next; the first error is what counts
                pass
        if data is not None:
            data.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.tasks = list(tasks)
    return result


def _write_tasks(path: Path, tasks: dict[str, int]) -> None:
    """meta/tasks.parquet as pandas writes it: column task_index, index "task" (lerobot reads it
    with pandas.read_parquet and looks tasks up by index)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()), "task": pa.array(list(tasks), pa.string())})
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, path)
