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
both its torchcodec and PyAV backends), h264 where the PyAV build lacks SVT-AV1. Depth is not
exported: LeRobot's depth videos (12-bit HEVC of log-quantised depth, ``DepthEncoderConfig``) are
not yet written here.

Crash safety: everything is written into ``OUT.tmp-<pid>`` and renamed to OUT at the end, so a
failed or interrupted export leaves no half-written dataset under OUT.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .export import MIN_QUALITY, ExportError, verified_segments

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder (lerobot DEFAULT_CHUNK_SIZE)
DATA_FILE_MB = 100  # lerobot DEFAULT_DATA_FILE_SIZE_IN_MB
VIDEO_FILE_MB = 200  # lerobot DEFAULT_VIDEO_FILE_SIZE_IN_MB
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
RGB_KEY = "observation.images.rgb"
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


def pixel_histogram(frames: np.ndarray) -> np.ndarray:
    """(3, 256) counts of each grey level per channel of (n, H, W, 3) uint8 frames."""
    flat = frames.reshape(-1, 3)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)])


def _image_stats(hist: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats in [0, 1], shaped (3, 1, 1) like lerobot's image stats, from a
    ``pixel_histogram`` (exact for uint8, and episodes add up without keeping frames)."""
    levels = np.arange(256) / 255.0
    total = hist.sum(1, keepdims=True)
    mean = (hist * levels).sum(1) / total[:, 0]
    std = np.sqrt(np.maximum((hist * levels ** 2).sum(1) / total[:, 0] - mean ** 2, 0))
    cdf = np.cumsum(hist, 1) / total
    present = hist > 0
    s = {"min": levels[present.argmax(1)], "max": levels[255 - present[:, ::-1].argmax(1)], "mean": mean, "std": std}
    for q in QUANTILES:
        s[f"q{int(q * 100):02d}"] = levels[(cdf >= q).argmax(1)]
    s = {k: v.reshape(3, 1, 1) for k, v in s.items()}
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


@dataclass
class _Video:
    """One mp4 of a camera key: episodes encoded back to back, pts counting frames in this file."""
    path: Path
    vcodec: str
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
        opts = SVTAV1 if self.vcodec == "libsvtav1" else H264
        options = {k: str(v) for k, v in opts.items() if k != "fast_decode"}
        if self.vcodec == "libsvtav1":
            options["svtav1-params"] = f"fast-decode={opts['fast_decode']}"
        self._stream = self._container.add_stream(self.vcodec, self.fps, options=options)
        self._stream.pix_fmt = "yuv420p"
        self._stream.width, self._stream.height = self.width, self.height

    def add(self, rgb: np.ndarray, keyframe: bool = False) -> None:
        import av
        if self._container is None:
            self.open()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
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

    def info(self) -> dict:
        """info.json ``features[key]["info"]`` as lerobot get_video_info writes it."""
        import av
        with av.open(str(self.path)) as c:
            s = c.streams.video[0]
            info = {"video.height": s.height, "video.width": s.width, "video.codec": s.codec.canonical_name,
                    "video.pix_fmt": s.pix_fmt, "video.fps": int(s.base_rate), "video.channels": 3,
                    "has_audio": bool(c.streams.audio)}
        opts = SVTAV1 if self.vcodec == "libsvtav1" else H264
        info.update({f"video.{k}": v for k, v in opts.items()})
        info.update({"video.video_backend": "pyav", "video.extra_options": {}, "is_depth_map": False})
        return info


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


def _episode_task(meta: dict) -> str:
    return str(meta.get("instruction") or "").strip() or str(meta.get("task") or "").strip() or "task"


def export_lerobot(episodes: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                   min_quality: float = MIN_QUALITY, annotator: str | None = None, vcodec: str | None = None,
                   only_success: bool = False, progress: bool = True) -> LeRobotExport:
    """Write ``episodes`` as a LeRobotDataset v3.0 folder at ``out`` (must not exist); return counts."""
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
            fps = float(r.meta.get("fps") or 0)
            cam = (r.camera.height, r.camera.width) if r.camera is not None else None
            heads.append((p, r.n_frames, fps, r.joint_pos.shape[1], cam, _episode_task(r.meta), r.meta.get("robot")))
    if not heads:
        raise ExportError("no episodes to export" + (" (none successful)" if only_success else ""))
    fps_f = heads[0][2]
    fps = int(round(fps_f))
    for p, _, f, dof, cam, _, _ in heads:
        if fps <= 0 or abs(f - fps) > 1e-6:
            raise ExportError(f"{p.name}: fps {f:g}; LeRobot needs one integer fps for all episodes ({fps_f:g} first)")
        if dof != heads[0][3]:
            raise ExportError(f"{p.name}: {dof} joints, the first episode has {heads[0][3]}; export one robot at a time")
        if cam != heads[0][4]:
            raise ExportError(f"{p.name}: camera {cam}, the first episode has {heads[0][4]}; one image size per dataset")
    dof, cam, robot = heads[0][3], heads[0][4], heads[0][6]
    if cam is not None and (cam[0] % 2 or cam[1] % 2):
        raise ExportError(f"{heads[0][0].name}: image {cam[1]}x{cam[0]} has an odd side; yuv420p video needs even sides")
    segs = {p: verified_segments(p, min_quality, annotator) for p, *_ in heads}
    with_language = any(segs.values())
    codec = pick_vcodec(vcodec) if cam is not None else None

    state_names = [f"joint_{i + 1}" for i in range(dof)] + ["gripper"]
    features: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": [dof + 1], "names": state_names},
        "observation.ee_pose": {"dtype": "float32", "shape": [7], "names": EE_NAMES},
        "action": {"dtype": "float32", "shape": [8], "names": ACTION_NAMES},
    }
    if cam is not None:
        features[RGB_KEY] = {"dtype": "video", "shape": [cam[0], cam[1], 3], "names": ["height", "width", "channels"]}
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

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    result = LeRobotExport(vcodec=codec)
    tasks: dict[str, int] = {}
    ep_rows: list[dict] = []
    all_vec: dict[str, list[np.ndarray]] = {k: [] for k in features if features[k]["dtype"] not in ("video", "language")}
    img_hist = np.zeros((3, 256), dtype=np.int64)
    img_frames = 0
    d_chunk = d_file = v_chunk = v_file = 0
    data = video = None
    total_frames = sum(h[1] for h in heads)
    try:
        bar = tqdm(total=total_frames, unit="frame", desc="lerobot export", disable=not progress)
        for ep_index, (p, n, _, _, _, task, _) in enumerate(heads):
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
                if cam is not None:
                    if video is None:
                        video = _Video(tmp / VIDEO_PATH.format(video_key=RGB_KEY, chunk_index=v_chunk, file_index=v_file),
                                       codec, fps, cam[1], cam[0])
                    start = video.frames
                    pick = set(np.linspace(0, n - 1, min(n, STATS_IMAGE_FRAMES)).round().astype(int).tolist())
                    step = max(1, max(cam) // STATS_IMAGE_SIDE)  # lerobot also shrinks images for stats
                    hist = np.zeros((3, 256), dtype=np.int64)
                    for i in range(n):
                        rgb = r.rgb(i)
                        video.add(rgb, keyframe=(i == 0))
                        if i in pick:
                            hist += pixel_histogram(rgb[::step, ::step])
                        bar.update(1)
                    stats[RGB_KEY] = _image_stats(hist, len(pick))
                    img_hist += hist
                    img_frames += len(pick)
                    ep.update({f"videos/{RGB_KEY}/chunk_index": v_chunk, f"videos/{RGB_KEY}/file_index": v_file,
                               f"videos/{RGB_KEY}/from_timestamp": start / fps,
                               f"videos/{RGB_KEY}/to_timestamp": (start + n) / fps})
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
            if video is not None and video.size_mb >= VIDEO_FILE_MB:
                video.close()
                video = None
                v_chunk, v_file = _next_file(v_chunk, v_file)
        bar.close()
        if data is not None:
            data.close()
        video_info = None
        if video is not None:
            video.close()
        if cam is not None:
            first = _Video(tmp / VIDEO_PATH.format(video_key=RGB_KEY, chunk_index=0, file_index=0), codec, fps, cam[1], cam[0])
            video_info = first.info()
            features[RGB_KEY]["info"] = video_info

        meta = tmp / "meta"
        ep_table = pa.Table.from_pylist(ep_rows)
        (tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(ep_table, tmp / EPISODES_PATH.format(chunk_index=0, file_index=0), compression="snappy")
        _write_tasks(meta / "tasks.parquet", tasks)
        stats_all = {k: _stats(np.concatenate(v)) for k, v in all_vec.items()}
        if img_frames:
            stats_all[RGB_KEY] = _image_stats(img_hist, img_frames)
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
        if video is not None:
            try:
                video.close()
            except Exception:
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
