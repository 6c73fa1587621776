"""Subtask annotations written back into a LeRobotDataset v3.x folder, crash-atomically.

Where LeRobot keeps subtasks (lerobot 0.6.1, lerobot/datasets/language.py, and its own annotation
pipeline's writer lerobot/annotations/steerable_pipeline/writer.py): in the frame table itself, a
``language_persistent`` column whose value (the same on every frame of an episode) lists rows
``{role: "assistant", content, style: "subtask", timestamp: <start, s>, camera, tool_calls}``; a
subtask is active from its timestamp until the next one (``language_render.active_at``). LeRobot's
writer therefore rewrites the data parquet shards; so does this module, and only those:

What a save changes on disk
  * ``data/chunk-C/file-F.parquet`` holding the saved episode: rewritten with every frame column
    taken over unchanged (the same Arrow arrays: identical values, types, schema metadata; one row
    group per episode, as lerobot writes), only ``language_persistent`` of that episode's rows
    replaced — its ``subtask`` rows become the annotator's segments, rows of other styles (plan,
    memory, …) are kept — and ``language_events`` kept (added empty where absent). When the dataset
    had no language columns yet, every data file gains them (empty for other episodes) and
    ``meta/info.json`` gains their two feature entries, since LeRobot's loader casts every shard to
    the features info.json declares.
  * ``meta/actstudio_annotations.json``: our full documents per episode (every annotator, quality,
    confidence, primitive, object, source), so reopening shows everything, plus ``version`` and a
    ``history`` of every earlier save (episode, annotator, documents and subtask rows written).
  * Videos, meta/episodes, meta/tasks, meta/stats and every frame value are never touched.

Which segments become subtasks: the saving annotator's document, except segments scored below
``MIN_QUALITY`` (marked bad); the content is the segment's instruction, else "primitive object".

Crash atomicity (several files change together): every new file is written beside its target as
``<name>.<pid>.tmp`` and fsynced; then a journal ``meta/actstudio_annotations.journal.json`` naming
the (temporary, target) pairs is written atomically — the commit point — and the temporaries are
renamed over their targets, the sidecar last; then the journal is removed. ``recover(root)`` (run
by every open and save) finishes a committed journal and deletes temporaries of dead writers, so a
kill at any instant yields the old version (killed before the journal) or the new one (after).
Between a kill after the commit point and the next open by ActStudio, a reader that ignores the
journal (lerobot) may see the new subtasks in some shards and the old ones in others. Writers take
an flock on ``meta/.actstudio_annotations.lock`` (an empty file, created by the first save);
opening never writes unless a journal must be finished, so read-only datasets open for viewing.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .annotations import AnnotationDoc, AnnotationError, Segment, now_iso
from .durable import atomic_file, fsync_path, remove_dead_temporaries
from .export import MIN_QUALITY
from .lerobot_dataset import LANGUAGE_PERSISTENT, data_file, read_episodes, read_info
from .primitives import PRIMITIVES

SIDECAR = "meta/actstudio_annotations.json"
JOURNAL = "meta/actstudio_annotations.journal.json"
LOCK = "meta/.actstudio_annotations.lock"
LANGUAGE_EVENTS = "language_events"
FORMAT = "actstudio.lerobot_annotations"
IMPORTED = "lerobot"   # annotator name of subtasks found in the dataset without our sidecar

_crash_hook = None     # tests: called with a step name; a subprocess kills itself there


def _step(name: str) -> None:
    if _crash_hook is not None:
        _crash_hook(name)


@contextlib.contextmanager
def _locked(root: Path):
    path = root / LOCK
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------
# Sidecar
# ------------------------------------------------------------------------------------------------


def read_sidecar(root: str | Path) -> dict:
    path = Path(root) / SIDECAR
    if not path.is_file():
        return {"format": FORMAT, "version": 0, "episodes": {}, "history": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"{path}: unreadable ({exc})") from None
    if data.get("format") != FORMAT:
        raise AnnotationError(f"{path}: not an ActStudio annotation file (format {data.get('format')!r})")
    return data


def load_docs(root: str | Path, index: int, times: np.ndarray, subtasks: Iterable[dict] = ()) -> dict[str, AnnotationDoc]:
    """Every annotator's document of episode ``index`` (``times``: its frames' timestamps), plus the
    subtask rows the dataset had before our first save to it (another tool's, or LeRobot's VLM
    labels) as the ``lerobot`` document — from the dataset itself while we never saved to it."""
    recover(root)
    entry = read_sidecar(root)["episodes"].get(str(int(index)))
    docs = {name: AnnotationDoc.from_dict(name, d) for name, d in entry["docs"].items()} if entry else {}
    # until our first subtask write to the episode, the dataset's rows are still its own
    original = entry["original_subtasks"] if entry and "original_subtasks" in entry else list(subtasks)
    doc = subtasks_to_doc(original, times)
    if len(doc):
        docs[IMPORTED] = doc
    return docs


def keyframes(root: str | Path, index: int) -> list[tuple[int, str]]:
    entry = read_sidecar(root)["episodes"].get(str(int(index))) or {}
    return [(int(f), str(k)) for f, k in entry.get("keyframes", [])]


def _guess_primitive(text: str) -> str:
    words = text.lower().replace("_", " ").split()
    for p in PRIMITIVES:
        if p in words or p.replace("_", " ") in text.lower():
            return p
    return "move"


def subtasks_to_doc(rows: list[dict], times: np.ndarray) -> AnnotationDoc:
    """LeRobot subtask rows → segments: each from the first frame at or after its timestamp to the
    next one (the last to the episode's end), the text as instruction, the primitive guessed from
    it (else "move")."""
    times = np.asarray(times, float)
    n_frames = len(times)
    starts: dict[int, str] = {}
    for r in sorted(rows, key=lambda r: float(r["timestamp"])):
        f = int(np.searchsorted(times, float(r["timestamp"]) - 1e-6))
        if 0 <= f < n_frames:
            starts[f] = str(r.get("content") or "")
    frames = sorted(starts)
    segs = [Segment(a, b, _guess_primitive(starts[a]), instruction=starts[a], source="auto")
            for a, b in zip(frames, frames[1:] + [n_frames]) if b > a]
    return AnnotationDoc(IMPORTED, n_frames, segs)


def subtask_rows(doc: AnnotationDoc, times: np.ndarray) -> list[dict]:
    """The document's segments as LeRobot ``language_persistent`` rows (style "subtask"), each
    stamped with its first frame's own timestamp (active_at compares it with frame timestamps)."""
    rows = []
    for s in doc.segments:
        if s.quality is not None and s.quality < MIN_QUALITY:
            continue
        text = s.instruction.strip() or f"{s.primitive} {s.object}".strip()
        rows.append({"role": "assistant", "content": text, "style": "subtask",
                     "timestamp": float(np.float32(times[s.start])), "camera": None, "tool_calls": None})
    return rows


# ------------------------------------------------------------------------------------------------
# Parquet rewrite
# ------------------------------------------------------------------------------------------------


def _language_types(json_t=None):
    from .export_lerobot import _language_types as types
    return types(json_t)


def _new_table(path: Path, episode: int | None, rows: list[dict] | None):
    """(the data file's table with ``episode``'s subtask rows replaced by ``rows`` (other styles
    kept) and both language columns present, the episode's subtask rows before); the frame columns
    are the file's own arrays."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pq.read_table(path)
    persistent_t, events_t = _language_types()
    persistent_s, events_s = _language_types(pa.string())
    n = table.num_rows
    if LANGUAGE_PERSISTENT in table.column_names:
        persistent = table.column(LANGUAGE_PERSISTENT).combine_chunks()
        persistent_t = persistent.type
    else:
        persistent = pa.array([[]] * n, type=persistent_s).cast(persistent_t)
    if LANGUAGE_EVENTS in table.column_names:
        events = table.column(LANGUAGE_EVENTS).combine_chunks()
    else:
        events = pa.array([[]] * n, type=events_s).cast(events_t)
    before: list[dict] = []
    if episode is not None:
        ep = table.column("episode_index").to_numpy()
        hit = np.flatnonzero(ep == episode)
        if len(hit):
            a, b = int(hit[0]), int(hit[-1]) + 1
            if b - a != len(hit):
                raise AnnotationError(f"{path.name}: episode {episode}'s rows are not contiguous")
            old = persistent[a].as_py() or []
            kept = [r for r in old if r.get("style") != "subtask"]
            before = [{k: r.get(k) for k in ("role", "content", "style", "timestamp")}
                      for r in old if r.get("style") == "subtask"]
            new = sorted(kept + rows, key=lambda r: (float(r["timestamp"]), r.get("style") or "", r.get("role") or ""))
            new = [{k: r.get(k) for k in ("role", "content", "style", "timestamp", "camera", "tool_calls")} for r in new]
            patch = pa.array([new] * (b - a), type=persistent_s).cast(persistent_t)
            persistent = pa.concat_arrays([persistent.slice(0, a), patch, persistent.slice(b)])
    cols, fields = [], []
    for f in table.schema:
        if f.name in (LANGUAGE_PERSISTENT, LANGUAGE_EVENTS):
            continue
        cols.append(table.column(f.name))
        fields.append(f)
    cols += [persistent, events]
    fields += [pa.field(LANGUAGE_PERSISTENT, persistent.type), pa.field(LANGUAGE_EVENTS, events.type)]
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=table.schema.metadata)), before


def _write_table(table, path: Path) -> None:
    """One row group per episode, as lerobot's writers do (random access per episode)."""
    import pyarrow.parquet as pq
    ep = table.column("episode_index").to_numpy()
    starts = np.concatenate(([0], np.flatnonzero(np.diff(ep)) + 1)) if len(ep) else np.array([0])
    with pq.ParquetWriter(str(path), table.schema, compression="snappy", use_dictionary=True) as w:
        for a, b in zip(starts, list(starts[1:]) + [len(ep)]):
            w.write_table(table.slice(int(a), int(b - a)))


# ------------------------------------------------------------------------------------------------
# Save / recover
# ------------------------------------------------------------------------------------------------


def _tmp(target: Path) -> Path:
    return target.with_name(f"{target.name}.{os.getpid()}.tmp")


def recover(root: str | Path) -> bool:
    """Finish a save that passed its commit point; remove temporaries of dead writers. True when
    a journal was rolled forward."""
    root = Path(root)
    if not (root / "meta").is_dir():
        return False
    if not (root / JOURNAL).exists():
        # Nothing to finish: no lock taken (a read-only dataset opens for viewing); a writer that
        # commits meanwhile finishes its own journal under the lock.
        with contextlib.suppress(OSError):
            _remove_dead_temporaries(root)
        return False
    with _locked(root):
        return _recover_locked(root)


def _remove_dead_temporaries(root: Path) -> None:
    for target in [root / SIDECAR, root / "meta/info.json", *sorted((root / "data").glob("*/*.parquet"))]:
        remove_dead_temporaries(target, ".tmp")


def _recover_locked(root: Path) -> bool:
    journal = root / JOURNAL
    rolled = False
    if journal.is_file():
        try:
            moves = json.loads(journal.read_text())["moves"]
        except (OSError, ValueError, KeyError):
            moves = None   # cannot be: the journal is written atomically; never guess
        if moves is not None:
            for tmp, target in moves:
                if (root / tmp).exists():
                    os.replace(root / tmp, root / target)
                    fsync_path((root / target).parent)
            journal.unlink()
            fsync_path(journal.parent)
            rolled = True
    _remove_dead_temporaries(root)
    return rolled


def save_docs(root: str | Path, index: int, docs: Iterable[AnnotationDoc], *, subtasks_from: str | None = None,
              times: np.ndarray | None = None, keyframes: list[tuple[int, str]] | None = None) -> int:
    """Store ``docs`` (replacing those annotators' documents of episode ``index``) and, when
    ``subtasks_from`` names one of them, write its segments as the episode's LeRobot subtasks
    (``times``: the episode's frame timestamps; default frame / fps). The subtask rows the dataset
    had before our first write to the episode are kept in the sidecar. Returns the new version."""
    root = Path(root)
    docs = list(docs)
    with _locked(root):
        _recover_locked(root)
        info = read_info(root)
        side = read_sidecar(root)
        key = str(int(index))
        entry = side["episodes"].setdefault(key, {"docs": {}})
        for d in docs:
            entry["docs"][d.annotator] = d.to_dict()
        if keyframes is not None:
            entry["keyframes"] = [[int(f), str(k)] for f, k in keyframes]
        version = int(side.get("version", 0)) + 1
        change = {"version": version, "at": now_iso(), "episode": int(index),
                  "docs": {d.annotator: d.to_dict() for d in docs}}
        moves: list[tuple[Path, Path]] = []
        try:
            if subtasks_from is not None:
                doc = next((d for d in docs if d.annotator == subtasks_from), None)
                if doc is None:
                    raise AnnotationError(f"no document by {subtasks_from!r} to write as subtasks")
                if times is None:
                    times = np.arange(doc.n_frames) / float(info["fps"])
                rows = subtask_rows(doc, times)
                change["subtasks"] = {"annotator": subtasks_from, "rows": [[r["timestamp"], r["content"]] for r in rows]}
                entry["subtasks_from"] = subtasks_from
                eps = {int(r["episode_index"]): r for r in read_episodes(root)}
                if int(index) not in eps:
                    raise AnnotationError(f"{root.name}: no episode {index}")
                target = data_file(root, info, eps[int(index)]["data/chunk_index"], eps[int(index)]["data/file_index"])
                feats = info["features"]
                first_time = LANGUAGE_PERSISTENT not in feats
                files = sorted((root / "data").glob("*/*.parquet")) if first_time else [target]
                for f in files:
                    tmp = _tmp(f)
                    table, before = _new_table(f, int(index) if f == target else None, rows)
                    if f == target:
                        entry.setdefault("original_subtasks", before)   # the dataset's own, kept once
                    _write_table(table, tmp)
                    fsync_path(tmp)
                    moves.append((tmp, f))
                    _step("data-written")
                if first_time:
                    from .export_lerobot import LANGUAGE_EVENTS as EV
                    feats[LANGUAGE_PERSISTENT] = {"dtype": "language", "shape": [1], "names": None}
                    feats[EV] = {"dtype": "language", "shape": [1], "names": None}
                    tmp = _tmp(root / "meta/info.json")
                    tmp.write_text(json.dumps(info, indent=4))
                    fsync_path(tmp)
                    moves.append((tmp, root / "meta/info.json"))
            side["version"] = version
            side["updated_at"] = change["at"]
            side.setdefault("history", []).append(change)
            tmp = _tmp(root / SIDECAR)
            tmp.write_text(json.dumps(side, indent=1))
            fsync_path(tmp)
            moves.append((tmp, root / SIDECAR))
            _step("temporaries-written")
            # Commit point: from here on the new version wins (recover rolls it forward).
            with atomic_file(root / JOURNAL) as j:
                j.write_text(json.dumps({"version": version, "moves": [[str(a.relative_to(root)), str(b.relative_to(root))]
                                                                         for a, b in moves]}))
            _step("committed")
            for k, (tmp, target) in enumerate(moves):
                os.replace(tmp, target)
                _step(f"replaced-{k}")
            for d in {t.parent for _, t in moves}:
                fsync_path(d)
            (root / JOURNAL).unlink()
            fsync_path(root / "meta")
        except BaseException:
            if not (root / JOURNAL).exists():
                for tmp, _ in moves:
                    tmp.unlink(missing_ok=True)
            raise
    return version
