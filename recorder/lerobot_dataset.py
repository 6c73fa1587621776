"""Read a LeRobotDataset v3.x folder (any writer: ``lerobot`` itself, our exporter, other tools)
episode by episode, for the Annotate tab. Nothing here writes (recorder/lerobot_annotations.py does).

Layout (lerobot 0.6.1, lerobot/datasets/utils.py): ``meta/info.json`` (codebase_version "v3.x",
fps, features, data_path / video_path templates), ``meta/episodes/chunk-*/file-*.parquet`` (one row
per episode: length, ``data/chunk_index`` + ``data/file_index`` of its frame rows, and per camera
``videos/<key>/chunk_index``, ``file_index``, ``from_timestamp``, ``to_timestamp``: an episode is a
time range inside an mp4 that may hold many episodes back to back), ``data/chunk-*/file-*.parquet``
(one row per frame).

An episode is addressed by a virtual path ``<dataset>/episode_<index:06d>`` so the rest of the app
(browser rows, signals, messages) keeps handling episodes as paths; ``lerobot_ref`` parses it.

Video: frames are decoded with PyAV (its own thread-safe libav decoder; no torch needed). Frame
``i`` of an episode is the one shown at ``from_timestamp + i / fps``; random access seeks to the
keyframe before it and decodes forward, keeping what it passed in a small cache, and a request for
the next few frames continues the running decoder instead of seeking again (playback, stepping).
"""
from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EPISODE_NAME = "episode_{index:06d}"
_EPISODE_RE = re.compile(r"^episode_(\d{6,})$")
INFO = "meta/info.json"
EE_POSE_KEY = "observation.ee_pose"      # x y z qx qy qz qw (what our exporter writes)
STATE_KEY = "observation.state"
ACTION_KEY = "action"
LANGUAGE_PERSISTENT = "language_persistent"


class LeRobotError(ValueError):
    """A dataset folder this reader cannot use (one-line message)."""


def is_lerobot_dataset(folder: str | Path) -> bool:
    """A folder with ``meta/info.json`` whose codebase_version is v3.x."""
    info = Path(folder) / INFO
    if not info.is_file():
        return False
    try:
        version = str(json.loads(info.read_text()).get("codebase_version", ""))
    except (OSError, ValueError):
        return False
    return version.startswith("v3")


def episode_path(root: str | Path, index: int) -> Path:
    return Path(root) / EPISODE_NAME.format(index=int(index))


def lerobot_ref(path: str | Path) -> tuple[Path, int] | None:
    """(dataset root, episode index) for a virtual episode path, else None."""
    path = Path(path)
    m = _EPISODE_RE.match(path.name)
    if m is None or not (path.parent / INFO).is_file() or path.exists():
        return None
    return path.parent, int(m.group(1))


def read_info(root: Path) -> dict:
    try:
        info = json.loads((Path(root) / INFO).read_text())
    except (OSError, ValueError) as exc:
        raise LeRobotError(f"{root}/{INFO}: {exc}") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise LeRobotError(f"{root.name}: LeRobot codebase_version {version or '?'}; only v3.x datasets can be opened "
                           "(convert older ones with lerobot's convert_dataset_v21_to_v30)")
    if not info.get("fps"):
        raise LeRobotError(f"{root}/{INFO}: no fps")
    return info


def read_episodes(root: Path) -> list[dict]:
    """All rows of meta/episodes (sorted by episode_index), stats columns left out."""
    import pyarrow.parquet as pq
    files = sorted((Path(root) / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise LeRobotError(f"{root.name}: no meta/episodes/*/*.parquet")
    rows = []
    for f in files:
        names = [n for n in pq.read_schema(f).names if not n.startswith("stats/")]
        rows += pq.read_table(f, columns=names).to_pylist()
    return sorted(rows, key=lambda r: int(r["episode_index"]))


def camera_keys(info: dict) -> list[str]:
    """Video features, RGB first (depth maps last), in info.json order otherwise."""
    keys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    return sorted(keys, key=lambda k: bool(info["features"][k].get("info", {}).get("is_depth_map")))


def data_file(root: Path, info: dict, chunk: int, file: int) -> Path:
    return Path(root) / info["data_path"].format(chunk_index=int(chunk), file_index=int(file))


def video_file(root: Path, info: dict, key: str, chunk: int, file: int) -> Path:
    return Path(root) / info["video_path"].format(video_key=key, chunk_index=int(chunk), file_index=int(file))


def feature_names(info: dict, key: str) -> list[str]:
    f = info["features"].get(key) or {}
    names = f.get("names")
    if isinstance(names, dict):  # some datasets nest names: {"motors": [...]}
        names = next(iter(names.values()), None)
    n = int(np.prod(f.get("shape") or [0]))
    return [str(x) for x in names] if isinstance(names, list) and len(names) == n else [f"{key}[{i}]" for i in range(n)]


def _column(table, key: str) -> np.ndarray | None:
    if key not in table.column_names:
        return None
    col = table.column(key).combine_chunks()
    import pyarrow as pa
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        return np.stack(col.to_numpy(zero_copy_only=False)).astype(float) if len(col) else np.zeros((0, 0))
    return col.to_numpy(zero_copy_only=False).astype(float)


@dataclass
class LeRobotEpisode:
    """One episode's vectors and metadata (frames come from ``VideoFrames``)."""
    root: Path
    index: int
    fps: float
    n_frames: int
    time: np.ndarray
    state: np.ndarray | None
    action: np.ndarray | None
    ee_pose: np.ndarray | None
    gripper: np.ndarray | None
    state_names: list[str]
    task: str
    camera: str | None
    video: dict | None           # {path, from_timestamp, to_timestamp} of the shown camera
    data_path: Path
    subtasks: list[dict] = field(default_factory=list)   # language_persistent rows, style "subtask"
    info: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return episode_path(self.root, self.index)

    def missing_for_proposals(self) -> str:
        """'' when segments can be proposed, else what is missing (one line)."""
        missing = []
        if self.ee_pose is None:
            missing.append(f"'{EE_POSE_KEY}' (x y z qx qy qz qw)")
        if self.gripper is None:
            missing.append(f"a gripper entry in '{STATE_KEY}' names")
        return ("automatic proposals need " + " and ".join(missing) + " — segment by hand") if missing else ""

    def curves(self) -> dict[str, np.ndarray]:
        """Timeline curves from what the dataset has: gripper, state and action speed (norm of the
        per-second change; units of the features)."""
        out: dict[str, np.ndarray] = {}
        if self.gripper is not None:
            out["gripper"] = self.gripper.astype(float)
        for name, x in (("state speed", self.state), ("action speed", self.action)):
            if x is not None and x.ndim == 2 and len(x) > 1:
                out[name] = np.linalg.norm(np.gradient(x, axis=0), axis=1) * self.fps
        return out


def load_episode(root: str | Path, index: int) -> LeRobotEpisode:
    """Read one episode's rows (raises LeRobotError with a one-line message)."""
    import pyarrow.parquet as pq
    root = Path(root)
    info = read_info(root)
    rows = {int(r["episode_index"]): r for r in read_episodes(root)}
    if index not in rows:
        raise LeRobotError(f"{root.name}: no episode {index} (has {len(rows)})")
    ep = rows[index]
    path = data_file(root, info, ep["data/chunk_index"], ep["data/file_index"])
    if not path.is_file():
        raise LeRobotError(f"{root.name}: episode {index}: {path.relative_to(root)} is missing")
    names = pq.read_schema(path).names
    wanted = [k for k in (STATE_KEY, ACTION_KEY, EE_POSE_KEY, "timestamp", "frame_index", LANGUAGE_PERSISTENT) if k in names]
    table = pq.read_table(path, columns=wanted + ["episode_index"], filters=[("episode_index", "=", index)])
    n = table.num_rows
    if n == 0:
        raise LeRobotError(f"{root.name}: episode {index} has no rows in {path.relative_to(root)}")
    if "frame_index" in table.column_names:
        order = np.argsort(table.column("frame_index").to_numpy(), kind="stable")
        table = table.take(order)
    fps = float(info["fps"])
    t = _column(table, "timestamp")
    time = t if t is not None else np.arange(n) / fps
    state, action, ee = _column(table, STATE_KEY), _column(table, ACTION_KEY), _column(table, EE_POSE_KEY)
    if ee is not None and (ee.ndim != 2 or ee.shape[1] != 7):
        ee = None   # not x y z + quaternion: cannot feed the proposal heuristics
    state_names = feature_names(info, STATE_KEY) if state is not None else []
    gripper = None
    if state is not None:
        g = [i for i, s in enumerate(state_names) if "gripper" in s.lower()]
        if g:
            gripper = state[:, g[0]].copy()
    subtasks = []
    if LANGUAGE_PERSISTENT in table.column_names:
        first = table.column(LANGUAGE_PERSISTENT)[0].as_py() or []
        subtasks = [r for r in first if r.get("style") == "subtask"]
    cams = [k for k in camera_keys(info) if not info["features"][k].get("info", {}).get("is_depth_map")]
    cam, video = (cams[0], None) if cams else (None, None)   # the first RGB camera is shown
    if cam is not None:
        k = f"videos/{cam}"
        video = {"path": video_file(root, info, cam, ep[f"{k}/chunk_index"], ep[f"{k}/file_index"]),
                 "from_timestamp": float(ep[f"{k}/from_timestamp"]), "to_timestamp": float(ep[f"{k}/to_timestamp"])}
    tasks = ep.get("tasks") or []
    return LeRobotEpisode(root=root, index=int(index), fps=fps, n_frames=n, time=np.asarray(time, float),
                          state=state, action=action, ee_pose=ee, gripper=gripper, state_names=state_names,
                          task=str(tasks[0]) if tasks else "", camera=cam, video=video, data_path=path,
                          subtasks=subtasks, info=info)


class VideoFrames:
    """Frames ``0 … n_frames-1`` of one episode inside a (possibly shared) mp4, decoded with PyAV.

    Random access: seek to the keyframe at or before the frame's time, decode forward. Every frame
    decoded on the way is kept in a small LRU, and the decoder keeps running: a frame a little ahead
    of the last one — less than the keyframe interval seen so far, so a seek could not land closer
    — is decoded on instead of seeking (play, step, prefetch; LeRobot's GOP 2 files seek, long-GOP
    H.264 files decode on).
    """

    FORWARD = 4    # frames ahead that are always decoded on; farther only within one keyframe interval

    def __init__(self, path: str | Path, from_timestamp: float, fps: float, n_frames: int, *, capacity: int = 32):
        import av
        self.path = Path(path)
        if not self.path.is_file():
            raise LeRobotError(f"video {self.path} is missing")
        self.start, self.fps, self.n_frames, self.capacity = float(from_timestamp), float(fps), int(n_frames), int(capacity)
        self._container = av.open(str(self.path))
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._lru: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._frames = None   # running decoder (generator) and the last frame index it produced
        self._last = -10**9
        self._last_key = None  # frame index of the last keyframe decoded
        self._gop = 0          # longest keyframe interval seen (frames)
        self.seeks = 0        # for tests and the bench: how often a keyframe seek was needed

    def _index(self, frame_time: float) -> int:
        return round((frame_time - self.start) * self.fps)

    def _keep(self, i: int, rgb: np.ndarray) -> None:
        self._lru[i] = rgb
        self._lru.move_to_end(i)
        while len(self._lru) > self.capacity:
            self._lru.popitem(last=False)

    def rgb(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} outside 0…{self.n_frames - 1}")
        hit = self._lru.get(i)
        if hit is not None:
            self._lru.move_to_end(i)
            return hit
        if self._frames is None or not self._last < i <= self._last + max(self.FORWARD, self._gop):
            target = self.start + i / self.fps
            ts = int(max(0.0, target - 0.5 / self.fps) / self._stream.time_base)
            self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)
            self._frames = self._container.decode(self._stream)
            self._last, self._last_key = -10**9, None
            self.seeks += 1
        for frame in self._frames:
            j = self._index(frame.time if frame.time is not None else 0.0)
            if j >= self.n_frames:
                break   # the next episode's frames in a shared file
            self._last = j
            if frame.key_frame:
                if self._last_key is not None and j > self._last_key:
                    self._gop = max(self._gop, j - self._last_key)
                self._last_key = j
            if j < 0:
                continue   # the previous episode's frames before our start
            img = frame.to_ndarray(format="rgb24")
            self._keep(j, img)
            if j >= i:
                break
        got = self._lru.get(i)
        if got is None:
            self._frames = None
            raise LeRobotError(f"{self.path.name}: no frame at {self.start + i / self.fps:.3f} s (episode frame {i})")
        return got

    def close(self) -> None:
        self._frames = None
        self._container.close()
