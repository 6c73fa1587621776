"""A folder of episodes: recovered, validated and summarised, with a metadata cache for fast re-open.

Every ``*.h5`` in the folder becomes an :class:`EpisodeInfo`; a bad file is listed with its one-line
message and never stops the rest from opening. Summaries are cached in ``.actstudio-index.json``
keyed on each file's mtime and size, so re-opening a folder of a thousand episodes reads only the
files that changed.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recorder.episode import EpisodeReader, read_marker
from recorder.recovery import Recovered, recover_file, recover_partial, writer_alive
from recorder.schema import EpisodeError

__all__ = ["Dataset", "EpisodeInfo", "summarize", "INDEX_NAME"]

INDEX_NAME = ".actstudio-index.json"
_INDEX_VERSION = 2  # 2: schema_version in the summaries


@dataclass
class EpisodeInfo:
    path: Path
    ok: bool
    error: str = ""
    n_frames: int = 0
    duration: float = 0.0
    fps: float = 0.0
    task: str = ""
    robot: str = ""
    outcome: str = ""
    instruction: str = ""
    started_at: str = ""
    annotation: str = "new"  # new | proposed (automatic segments only) | verified (a human edited)
    annotators: list[str] = field(default_factory=list)
    recovered: bool = False
    size: int = 0
    schema_version: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    def line(self) -> str:
        """The one-line summary `main.py info` prints."""
        if not self.ok:
            return self.error
        annot = self.annotation + (f" ({', '.join(self.annotators)})" if self.annotators else "")
        flags = " recovered" if self.recovered else ""
        # v1 keeps RGB lossless and ~5x larger; it is never converted behind the user's back.
        schema = f"schema v{self.schema_version}" + (" (lossless RGB; `main.py migrate` makes it v2)"
                                                     if self.schema_version == 1 else "")
        return (f"{self.name}: {self.n_frames} frames, {self.duration:.1f} s, {self.fps:g} fps, "
                f"task {self.task}, robot {self.robot}, {self.outcome}{flags}, annotations {annot}, "
                f"{self.size / 1e6:.1f} MB, {schema}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = self.path.name
        return d

    @classmethod
    def from_json(cls, folder: Path, d: dict) -> "EpisodeInfo":
        return cls(**{**d, "path": folder / d["path"]})


def _annotation_status(annotations: dict[str, list[dict]]) -> tuple[str, list[str]]:
    annotators = sorted(a for a, segs in annotations.items() if segs)
    if not annotators:
        return "new", []
    human = any(str(s.get("source", "")) == "human" for a in annotators for s in annotations[a])
    return ("verified" if human else "proposed"), annotators


def summarize(path: str | os.PathLike) -> EpisodeInfo:
    """Open, validate (and migrate) one file; never raises for a bad file."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    if writer_alive(read_marker(path)):
        return EpisodeInfo(path, False, f"{path.name}: file: recording in progress", size=size)
    try:
        with EpisodeReader(path) as ep:
            status, annotators = _annotation_status(ep.annotations)
            m = ep.meta
            return EpisodeInfo(
                path, True, n_frames=ep.n_frames, duration=ep.duration, fps=float(m["fps"]),
                task=str(m["task"]), robot=str(m["robot"]), outcome=ep.outcome,
                instruction=str(m["instruction"]), started_at=str(m["started_at"]), annotation=status,
                annotators=annotators, recovered=bool(m.get("recovered", 0)), size=path.stat().st_size,
                schema_version=int(m.get("schema_version", 0)))
    except EpisodeError as exc:
        return EpisodeInfo(path, False, str(exc), size=size)
    except Exception as exc:  # the promise is "never a traceback": anything else still names the file
        return EpisodeInfo(path, False, str(EpisodeError(path, "file", f"{type(exc).__name__}: {exc}")), size=size)


class Dataset:
    """Episodes of one folder, sorted by file name. ``recover=True`` first repairs crashed recordings."""

    def __init__(self, folder: str | os.PathLike, *, recover: bool = True, use_cache: bool = True):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder}: not a folder")
        self.use_cache = use_cache
        self._recover = recover
        self.recovered: list[Recovered] = recover_partial(self.folder) if recover else []
        self.cache_hits = 0
        self.episodes: list[EpisodeInfo] = []
        self.refresh()

    @property
    def index_path(self) -> Path:
        return self.folder / INDEX_NAME

    def _load_cache(self) -> dict:
        if not self.use_cache:
            return {}
        try:
            data = json.loads(self.index_path.read_text())
            return data["entries"] if data.get("version") == _INDEX_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # a damaged cache only costs a rescan

    def refresh(self) -> None:
        """Re-scan the folder; only files whose mtime or size changed are opened."""
        cache = self._load_cache()
        entries, episodes, hits = {}, [], 0
        for path in sorted(self.folder.glob("*.h5")):
            try:
                st = path.stat()
            except OSError:
                continue  # deleted while scanning
            key = [st.st_mtime_ns, st.st_size]
            cached = cache.get(path.name)
            if cached and cached.get("key") == key:
                info = EpisodeInfo.from_json(self.folder, cached["info"])
                hits += 1
            else:
                info = summarize(path)
                if not info.ok and "recorder crashed" in info.error and self._recover:
                    # A crashed SWMR file whose marker is gone: no live writer can own it.
                    try:
                        self.recovered.append(recover_file(path))
                    except EpisodeError as exc:
                        self.recovered.append(Recovered(path, "failed", message=str(exc)))
                    info = summarize(path)
                try:  # migration rewrites the file: key on what is on disk now
                    st = path.stat()
                    key = [st.st_mtime_ns, st.st_size]
                except OSError:
                    pass
            if "recording in progress" not in info.error:
                entries[path.name] = {"key": key, "info": info.to_json()}
            episodes.append(info)
        self.episodes, self.cache_hits = episodes, hits
        if self.use_cache and entries != cache:
            self._save_cache(entries)

    def _save_cache(self, entries: dict) -> None:
        tmp = self.index_path.with_name(INDEX_NAME + f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"version": _INDEX_VERSION, "entries": entries}))
            os.replace(tmp, self.index_path)
        except OSError:
            tmp.unlink(missing_ok=True)  # read-only folder: work without a cache

    def __len__(self) -> int:
        return len(self.episodes)

    def __iter__(self):
        return iter(self.episodes)

    def __getitem__(self, i: int) -> EpisodeInfo:
        return self.episodes[i]

    @property
    def ok(self) -> list[EpisodeInfo]:
        return [e for e in self.episodes if e.ok]

    @property
    def bad(self) -> list[EpisodeInfo]:
        return [e for e in self.episodes if not e.ok]

    def open(self, i: int) -> EpisodeReader:
        """Reader for episode ``i`` (raises EpisodeError for a bad one, with the same message)."""
        return EpisodeReader(self.episodes[i].path)
