"""SIGKILL sweep across the whole life of an episode, an annotation save and an export.

A child process records a real episode with the real writer (640x480 RGB-D at 20 Hz, a pick-and-place
trajectory, then ``finalize`` with keyframes + proposals), printing each event with its
``time.monotonic()`` stamp (one clock for all processes). A first, unkilled run measures when each
phase happens; the sweep then kills a fresh child at points spread over the whole lifecycle: before
the writer exists, before the first frame, across the take, every ``step`` ms through finalize, after.
For every kill it records what was on disk (marker phase, ``.creating`` / ``.h5`` / ``.finalizing``),
runs recovery as the app does on start, and checks the result: a valid complete episode with every
frame and the operator's outcome, or a recovered one that lost at most one second of frames —
never a deleted file that held frames, never a leftover temporary.

The same for annotation saves (A/B slot writes and whole-file rebuilds) and for the exports (LA JSONL,
robomimic HDF5, encoder-clip folder): whatever the kill point, the previous or the new complete
version is on disk.

    .venv/bin/python -m bench.kill_sweep [--step-ms 20] [--dir /tmp]      # prints the tables
    .venv/bin/python -m bench.kill_sweep --real --robot sim-xarm6          # kills `main.py record` instead

tests/test_kill_sweep.py runs the same sweeps (coarser) and asserts every row passes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FPS = 20.0
TAKE_FRAMES = 40  # 2 s at 20 Hz
LOSS_LIMIT = int(FPS)  # frames in one second
TAG = 16  # side of the block that numbers each frame's RGB


def tag_frame(rgb: np.ndarray, i: int) -> None:
    """Write frame number ``i`` into the top-left 16x16 block of ``rgb``, in steps of 8 grey levels
    per channel, so it survives H.264 (a few levels off at most; one pixel would not)."""
    rgb[:TAG, :TAG] = (8 * (i % 32) + 4, 8 * (i // 32 % 32) + 4, 128)


def frame_tag(rgb: np.ndarray) -> int:
    """The frame number ``tag_frame`` wrote (read from the block's interior)."""
    r, g = rgb[4:TAG - 4, 4:TAG - 4, :2].reshape(-1, 2).mean(0)
    return int(round((r - 4) / 8)) + 32 * int(round((g - 4) / 8))

RECORD_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from recorder.episode import EpisodeWriter
    import recorder.proposals  # noqa: F401  (imported before 'start': the sweep times the writer, not imports)
    sys.path.insert(0, "tests")
    from synthetic_pick_place import pick_place
    from bench.kill_sweep import tag_frame

    def event(name, *extra):
        print(name, f"{time.monotonic():.6f}", *extra, flush=True)

    path, n = sys.argv[1], int(sys.argv[2])
    traj = pick_place(0)
    idx = np.linspace(0, len(traj.ee_pose) - 1, n).round().astype(int)  # the whole task, in n frames
    H, W = 480, 640
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.clip(np.stack([xx * 0.3 + 60, yy * 0.3 + 80, xx * 0.1 + 100], -1)
                   + rng.normal(0, 2.5, (H, W, 3)), 0, 255).astype(np.uint8)
    depth0 = (800 + yy * 1.2 + rng.normal(0, 2, (H, W))).astype(np.uint16)
    cam = dict(K=np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]]), width=W, height=H,
               depth_scale=0.001, T_base_camera=np.eye(4), serial="sweep")
    event("start")
    w = EpisodeWriter(path, dict(robot="sim-xarm6", task="pick_cube", fps=20.0), cam)
    event("created")
    time.sleep(0.1)  # the recorder waits for a fresh camera frame before the first one
    t0 = time.monotonic()
    for k, i in enumerate(idx):
        rgb = base.copy(); tag_frame(rgb, k)
        depth = depth0.copy(); depth[0, 0] = k
        w.append(t0 + k / 20, rgb, depth, traj.ee_pose[i], np.full(6, k / 10), traj.gripper[i],
                 traj.action[i], {"expert_phase": f"phase{k}"})
        event("appended", w.appended)
        time.sleep(max(0.0, t0 + (k + 1) / 20 - time.monotonic()))
    event("finalize")
    w.finalize("success", notes="operator notes")
    event("finalized")
    time.sleep(0.5)
""")

ANNOTATE_CHILD = textwrap.dedent("""
    import sys, time
    from recorder.annotation_store import _encode
    from recorder.annotations import (load_annotations, save_annotations, AnnotationDoc, read_store,
                                      rebuild_with_store)
    path = sys.argv[1]
    auto = load_annotations(path)["auto"]
    print("start", f"{time.monotonic():.6f}", flush=True)
    v = 0
    while True:
        v += 1
        doc = AnnotationDoc("alice", auto.n_frames, auto.segments)
        doc, _ = doc.set_field(0, "instruction", f"version {v}")
        if v % 4:
            save_annotations(path, doc)  # A/B slot write
        else:  # what a save that outgrows its slot (or the first save of a file) does: a whole-file rebuild
            version, current = read_store(path)
            rebuild_with_store(path, _encode(current, [doc], False), version + 1)
        print("saved", f"{time.monotonic():.6f}", v, flush=True)
""")

EXPORT_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from recorder.export import export_language_action, export_robomimic, export_encoder_clips
    ep, out = Path(sys.argv[1]), Path(sys.argv[2])
    print("start", f"{time.monotonic():.6f}", flush=True)
    k = 0
    while True:
        k += 1
        export_language_action([ep], out / "la.jsonl", annotator="alice")
        print("la", f"{time.monotonic():.6f}", k, flush=True)
        export_robomimic([ep], out / "robomimic.hdf5", images=True)
        print("robomimic", f"{time.monotonic():.6f}", k, flush=True)
        export_encoder_clips([ep], out / "clips", annotator="alice")
        print("clips", f"{time.monotonic():.6f}", k, flush=True)
""")


@dataclass
class Run:
    events: list[tuple[str, float, list[str]]] = field(default_factory=list)

    def time_of(self, name: str) -> float | None:
        return next((t for n, t, _ in self.events if n == name), None)

    def last(self, name: str) -> list[str] | None:
        hits = [extra for n, _, extra in self.events if n == name]
        return hits[-1] if hits else None

    @property
    def last_event(self) -> str:
        return self.events[-1][0] if self.events else "(none)"


def _spawn(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)


def _parse(lines: list[str]) -> Run:
    run = Run()
    for line in lines:
        parts = line.split()
        if len(parts) >= 2:
            run.events.append((parts[0], float(parts[1]), parts[2:]))
    return run


def run_child(code: str, args: list[str], kill_after: float | None, *, until: str | None = None,
              timeout: float = 60.0) -> tuple[Run, float]:
    """Start a child; SIGKILL it ``kill_after`` s after its 'start' event (None: let it reach
    ``until``, then kill). Returns its events and the kill time relative to 'start'."""
    child = _spawn(code, *args)
    first = child.stdout.readline()
    if not first.startswith("start"):
        child.kill()
        raise RuntimeError(f"child failed before start: {first!r} {child.stderr.read()[-2000:]}")
    t_start = float(first.split()[1])
    lines = [first]
    if kill_after is None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith(until):
                break
    else:
        time.sleep(max(0.0, t_start + kill_after - time.monotonic()))
    killed_at = time.monotonic() - t_start
    os.kill(child.pid, signal.SIGKILL)
    lines += child.stdout.read().splitlines()
    child.wait()
    return _parse(lines), killed_at


def disk_state(path: Path) -> str:
    """What a kill left beside an episode, before recovery: marker phase and files present."""
    from recorder.episode import creating_path, finalizing_path, marker_path, read_marker
    parts = []
    marker = read_marker(path)
    if marker_path(path).exists():
        parts.append(f"marker:{(marker or {}).get('phase', '?')}")
    for p, label in ((creating_path(path), ".creating"), (path, ".h5"), (finalizing_path(path), ".finalizing")):
        if p.exists():
            parts.append(label)
    return " ".join(parts) or "nothing"


# ------------------------------------------------------------------------------------------------ episodes


@dataclass
class Row:
    kill_ms: float
    phase: str
    disk: str
    result: str
    frames: str
    ok: bool
    why: str = ""


def check_episode_after_kill(folder: Path, path: Path, run: Run, disk: str) -> tuple[str, str, bool, str]:
    """Recover as the app does on start; (result, frames, ok, why).

    Once the writer has flushed and closed the take (marker phase 'finalizing') every frame must
    survive; before that, stopping still flushes the queue, and a kill there may lose up to 1 s."""
    saving = "marker:finalizing" in disk
    n_total = int((run.last("appended") or ["0"])[0])  # frames the writer accepted (a loaded box may drop some)
    from recorder.dataset import Dataset
    from recorder.episode import EpisodeReader
    appended = int((run.last("appended") or ["0"])[0])
    finalizing = run.time_of("finalize") is not None
    finalized = run.time_of("finalized") is not None
    ds = Dataset(folder, use_cache=False)
    status = {r.path.name: r for r in ds.recovered}.get(path.name)
    result = status.status if status else ("complete" if path.exists() else "nothing")
    leftovers = sorted(p.name for p in folder.iterdir() if p.name != path.name and not p.name.startswith("."))
    if leftovers:
        return result, "", False, f"left on disk: {leftovers}"
    if not path.exists():
        ok = appended <= LOSS_LIMIT and not finalizing
        return result, f"0/{appended}", ok, "" if ok else f"no episode but {appended} frames appended"
    try:
        ep = EpisodeReader(path)
    except Exception as exc:
        return result, "", False, f"unreadable after recovery: {exc}"
    with ep:
        n = ep.n_frames
        frames = f"{n}/{appended}"
        if finalized and not (ep.meta.get("recovered") == 0 and ep.outcome == "success" and n == n_total):
            return result, frames, False, "finalized take not complete"
        if saving and n != n_total:
            return result, frames, False, f"kill while saving lost {n_total - n} frames"
        if appended - n > LOSS_LIMIT or n > max(appended, 1):
            return result, frames, False, f"lost {appended - n} frames (> 1 s)"
        if ep.meta.get("state") != "complete":
            return result, frames, False, "state is not complete"
        if finalizing and ep.outcome not in ("success", "unknown"):
            return result, frames, False, f"outcome {ep.outcome!r}"
        for i in (0, n - 1):  # every field still belongs to its frame
            if frame_tag(ep.rgb(i)) != i or ep.depth(i)[0, 0] != i \
                    or ep.extras["expert_phase"][i] != f"phase{i}":
                return result, frames, False, f"frame {i} content does not match"
        if "auto" not in ep.annotations:
            return result, frames, False, "no segment proposals"
        result += f", {ep.outcome}"
    return result, frames, True, ""


def episode_kill_points(cal: Run, step: float) -> list[float]:
    t = {name: cal.time_of(name) - cal.time_of("start") for name in ("created", "finalize", "finalized")}
    first = next(tt for n, tt, _ in cal.events if n == "appended") - cal.time_of("start")
    points = [0.0, 0.005, t["created"] / 2, t["created"] + 0.02, first - 0.01, first + 0.02]
    points += list(np.linspace(first + 0.2, t["finalize"] - 0.1, 4))  # across the take
    points += list(np.arange(t["finalize"] - step, t["finalized"] + 2 * step, step))  # through finalize
    points += [t["finalized"] + 0.2]
    return sorted(float(p) for p in points)


def sweep_episode(workdir: Path, step: float = 0.02, log=print) -> list[Row]:
    cal_dir = workdir / "calibrate"
    cal_dir.mkdir(parents=True)
    cal, _ = run_child(RECORD_CHILD, [str(cal_dir / "ep.h5"), str(TAKE_FRAMES)], None, until="finalized")
    if cal.time_of("finalized") is None:
        raise RuntimeError("the calibration run did not finish")
    s = cal.time_of("start")
    log(f"calibration: writer created {1e3 * (cal.time_of('created') - s):.0f} ms, take ends "
        f"{1e3 * (cal.time_of('finalize') - s):.0f} ms, finalize took "
        f"{1e3 * (cal.time_of('finalized') - cal.time_of('finalize')):.0f} ms")
    rows = []
    for k, at in enumerate(episode_kill_points(cal, step)):
        folder = workdir / f"kill_{k:02d}"
        folder.mkdir()
        path = folder / "ep.h5"
        run, killed = run_child(RECORD_CHILD, [str(path), str(TAKE_FRAMES)], at)
        disk = disk_state(path)
        result, frames, ok, why = check_episode_after_kill(folder, path, run, disk)
        row = Row(1e3 * killed, run.last_event, disk, result, frames, ok, why)
        rows.append(row)
        log(format_row(row))
        shutil.rmtree(folder, ignore_errors=True)
    return rows


# ------------------------------------------------------------------------------------------------ saves, exports


def make_annotated_episode(path: Path) -> tuple[Path, int]:
    """A finalized take (through the same child) with an accepted 'alice' document; (path, frames)."""
    from recorder.annotations import AnnotationDoc, load_annotations, save_annotations
    run, _ = run_child(RECORD_CHILD, [str(path), str(TAKE_FRAMES)], None, until="finalized")
    if run.time_of("finalized") is None:
        raise RuntimeError("could not record the episode for the save/export sweeps")
    auto = load_annotations(path)["auto"]
    doc, _ = AnnotationDoc("alice", auto.n_frames, auto.segments).accept_all(quality=3)
    save_annotations(path, doc)
    return path, auto.n_frames


def sweep_annotation_saves(workdir: Path, n: int = 8, span: float = 1.5, log=print) -> list[Row]:
    from recorder.annotations import load_annotations, read_store
    from recorder.episode import EpisodeReader
    from recorder.recovery import remove_stale_temporaries
    src, n_frames = make_annotated_episode(workdir / "src.h5")
    rows = []
    for k, at in enumerate(np.linspace(0.05, span, n)):
        folder = workdir / f"save_{k:02d}"
        folder.mkdir()
        path = folder / "ep.h5"
        shutil.copyfile(src, path)
        run, killed = run_child(ANNOTATE_CHILD, [str(path)], float(at))
        saved = int((run.last("saved") or ["0"])[0])
        disk = " ".join(sorted(p.name.replace("ep.h5", "") or ".h5" for p in folder.iterdir()))
        remove_stale_temporaries(folder)
        ok, why, result = True, "", ""
        try:
            version, _ = read_store(path)
            doc = load_annotations(path)["alice"]
            text = doc.segments[0].instruction.split()
            got = int(text[1]) if text[:1] == ["version"] else 0
            result = f"store v{version}, doc {got}"
            with EpisodeReader(path) as ep:
                if ep.n_frames != n_frames:
                    ok, why = False, f"episode has {ep.n_frames} frames"
            if not saved <= got <= saved + 1:
                ok, why = False, f"saved {saved} but the file holds {got}"
        except Exception as exc:
            ok, why = False, f"unreadable: {exc}"
        if [p.name for p in folder.iterdir()] != ["ep.h5"]:
            ok, why = False, f"left on disk: {sorted(p.name for p in folder.iterdir())}"
        row = Row(1e3 * killed, f"after save {saved}", disk, result, "", ok, why)
        rows.append(row)
        log(format_row(row))
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def _check_exports(out: Path, run: Run, n_frames: int) -> tuple[str, bool, str]:
    import h5py
    done = {name: int((run.last(name) or ["0"])[0]) for name in ("la", "robomimic", "clips")}
    found = []
    la = out / "la.jsonl"
    if la.exists():
        lines = [json.loads(x) for x in la.read_text().splitlines()]
        if not lines:
            return "", False, "la.jsonl is empty"
        found.append(f"la {len(lines)}")
    elif done["la"]:
        return "", False, "la.jsonl missing after a complete export"
    rm = out / "robomimic.hdf5"
    if rm.exists():
        with h5py.File(rm, "r") as f:
            if f["data"].attrs["total"] != n_frames or f["data/demo_0/obs/agentview_image"].shape[0] != n_frames:
                return "", False, "robomimic export incomplete"
        found.append("robomimic")
    elif done["robomimic"]:
        return "", False, "robomimic.hdf5 missing after a complete export"
    clips = out / "clips"
    if clips.exists():
        caps = [json.loads(x) for x in (clips / "captions.jsonl").read_text().splitlines()]
        for c in caps:
            with np.load(clips / c["clip"]) as z:
                z["frames"]
        if not caps:
            return "", False, "clips/captions.jsonl is empty"
        found.append(f"clips {len(caps)}")
    elif done["clips"]:
        return "", False, "clips/ missing after a complete export"
    stray = sorted(p.name for p in out.iterdir() if p.name not in ("la.jsonl", "robomimic.hdf5", "clips"))
    return ", ".join(found) or "nothing yet", True, f"temporaries left: {stray}" if stray else ""


def sweep_exports(workdir: Path, n: int = 8, span: float = 3.0, log=print) -> list[Row]:
    src, n_frames = make_annotated_episode(workdir / "src.h5")
    rows = []
    for k, at in enumerate(np.linspace(0.05, span, n)):
        out = workdir / f"export_{k:02d}"
        out.mkdir()
        run, killed = run_child(EXPORT_CHILD, [str(src), str(out)], float(at))
        result, ok, note = _check_exports(out, run, n_frames)
        # A killed export leaves its temporary (named with its pid) beside the outputs: not a loss (the
        # outputs are whole); the next export to the same place removes it (recorder/durable.py).
        row = Row(1e3 * killed, run.last_event, "", result, "", ok, note)
        rows.append(row)
        log(format_row(row))
        shutil.rmtree(out, ignore_errors=True)
    return rows


# ------------------------------------------------------------------------------------------------ real CLI


def _marker_phase(folder: Path) -> tuple[Path | None, str | None]:
    from recorder.episode import read_marker
    markers = list(folder.glob("*.h5.recording")) if folder.exists() else []
    if not markers:
        return None, None
    ep = markers[0].with_name(markers[0].name[: -len(".recording")])
    return ep, (read_marker(ep) or {}).get("phase")


def sweep_real_record(workdir: Path, robot: str, step: float = 0.04, span: float = 1.2, log=print) -> list[Row]:
    """Kill `main.py record --input scripted` at points relative to the phases its marker shows
    (created -> recording -> finalizing, polled every ms), densest through the save. The sim's start
    time varies too much under load for kill times counted from the process start."""
    from recorder.dataset import Dataset
    from recorder.episode import EpisodeReader
    cmd = [sys.executable, "main.py", "record", "--robot", robot, "--input", "scripted", "--task", "pick_cube",
           "--episodes", "1", "--max-seconds", "20", "--seed", "3"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    points = [("created", 0.0), ("recording", 0.0), ("recording", 0.5), ("recording", 2.0), ("recording", 4.0)]
    points += [("finalizing", float(t)) for t in np.arange(0.0, span, step)]
    rows = []
    for k, (phase, offset) in enumerate(points):
        folder = workdir / f"real_{k:02d}"
        proc = subprocess.Popen(cmd + ["--out", str(folder)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_event = None
        while proc.poll() is None and t_event is None:
            ep, seen = _marker_phase(folder)
            if seen == phase:
                t_event = time.monotonic()
            else:
                time.sleep(0.001)
        if t_event is None:
            rows.append(Row(0.0, f"{phase}+{1e3 * offset:.0f}ms", "(ended before)", "", "", True, "phase not seen"))
            log(format_row(rows[-1]))
            shutil.rmtree(folder, ignore_errors=True)
            continue
        time.sleep(max(0.0, t_event + offset - time.monotonic()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        disk = disk_state(ep)
        ds = Dataset(folder, use_cache=False)
        status = {r.path.name: r.status for r in ds.recovered}.get(ep.name, "complete" if ep.exists() else "nothing")
        left = sorted(p.name for p in folder.iterdir() if p.name != ep.name and not p.name.startswith("."))
        ok, frames = not left, "0"
        if ep.exists():
            try:
                with EpisodeReader(ep) as r:
                    frames = f"{r.n_frames} ({r.outcome}{', recovered' if r.meta.get('recovered') else ''})"
                    # Once the save began every frame is kept: the recorder counted them in the marker's file.
                    ok = ok and r.meta.get("state") == "complete"
            except Exception as exc:
                ok, frames = False, f"unreadable: {exc}"
        elif phase == "finalizing":
            ok = False  # the save had begun: there must be an episode
        rows.append(Row(1e3 * offset, f"{phase}+{1e3 * offset:.0f}ms", disk, status, frames, ok,
                        f"left {left}" if left else ""))
        log(format_row(rows[-1]))
        shutil.rmtree(folder, ignore_errors=True)
    return rows


# ------------------------------------------------------------------------------------------------ output


HEADER = f"{'kill ms':>8}  {'last event':<16} {'on disk at the kill':<38} {'after recovery':<28} {'frames':<12} ok"


def format_row(r: Row) -> str:
    return (f"{r.kill_ms:8.0f}  {r.phase:<16} {r.disk:<38} {r.result:<28} {r.frames:<12} "
            f"{'PASS' if r.ok else 'FAIL ' + r.why}" + (f"  ({r.why})" if r.ok and r.why else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-ms", type=float, default=20.0, help="kill spacing through finalize")
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--real", action="store_true", help="kill `main.py record` on the simulated lab instead")
    ap.add_argument("--robot", default="sim-xarm6")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kill_sweep_", dir=args.dir))
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} cores")
    try:
        groups = []
        if args.real:
            print(f"\n## `main.py record --robot {args.robot} --input scripted`, killed\n{HEADER}")
            groups.append(sweep_real_record(work, args.robot, step=max(args.step_ms, 40.0) / 1e3))
        else:
            print(f"\n## episode lifecycle (640x480 RGB-D, {TAKE_FRAMES} frames at 20 Hz, finalize + proposals)\n{HEADER}")
            groups.append(sweep_episode(work / "episode", args.step_ms / 1e3))
            print(f"\n## annotation saves (slot writes; every 4th save a whole-file rebuild)\n{HEADER}")
            groups.append(sweep_annotation_saves(work / "saves", n=12))
            print(f"\n## exports (LA JSONL, robomimic HDF5 with images, encoder clips)\n{HEADER}")
            groups.append(sweep_exports(work / "exports", n=12))
        bad = [r for rows in groups for r in rows if not r.ok]
        total = sum(len(rows) for rows in groups)
        print(f"\n{total - len(bad)}/{total} kill points passed")
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
