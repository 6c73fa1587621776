"""Episode recorder benchmark: sustained 640x480 RGB-D at 30 fps per storage option, random frame
reads (scrubbing) and RGB fidelity, all options in one run on the same frames.

    .venv/bin/python bench/recorder.py                                   # v1 default vs v2 default, 60 s each
    .venv/bin/python bench/recorder.py --seconds 20 --options raw/none,raw/blosc-zstd-1,h264/blosc-zstd-1-bit
    MUJOCO_GL=egl .venv/bin/python bench/recorder.py --scene sim         # frames rendered by the simulated lab

An option is ``<rgb>/<lossless compression>``: ``raw`` stores RGB frames losslessly (the v1 layout,
today's default ``raw/blosc-zstd-1``), ``h264`` encodes RGB as video (schema v2, the new default);
depth is lossless either way. Ratios are against the first option measured in the same run (the
machine is shared, absolute numbers are noisy; the load average is printed beside the tables).

Scenes: ``synthetic`` frames are camera-like (smooth scene, a moving object, sensor noise of a few
grey levels; depth a plane with noise and 2 % holes); ``sim`` renders the simulated lab (a
scripted pick, MuJoCo camera: no sensor noise, so it compresses far better than a real camera).
A 100 Hz "control thread" runs beside the writer and reports how late its ticks come (GIL stalls).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.episode import EpisodeReader, EpisodeWriter  # noqa: E402
from recorder.schema import DEFAULT_COMPRESSION, V1_COMPRESSION  # noqa: E402
from recorder.video import DEFAULT_RGB_CODEC  # noqa: E402

H, W, FPS = 480, 640, 30
CAM = dict(K=[[615.0, 0, 320], [0, 615.0, 240], [0, 0, 1]], width=W, height=H, depth_scale=0.001)
# A still arm at a valid pose (unit quaternion): finalize() proposes segments from it.
POSE = np.array([0.4, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0])
ACTION = np.r_[POSE, 1.0]
V1_DEFAULT = f"raw/{V1_COMPRESSION}"
V2_DEFAULT = f"{DEFAULT_RGB_CODEC}/{DEFAULT_COMPRESSION}"


def make_frames(n: int = 30) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    scene = np.stack([xx * 0.3 + 60, yy * 0.3 + 80, xx * 0.1 + yy * 0.1 + 100], -1)
    scene[300:] = [120, 90, 60]
    plane = 800 + yy * 1.2
    frames = []
    for k in range(n):
        rgb = scene.copy()
        x = 100 + 15 * k
        rgb[200:260, x:x + 60] = [200, 30, 30]
        rgb = np.clip(rgb + rng.normal(0, 2.5, rgb.shape), 0, 255).astype(np.uint8)
        depth = plane + rng.normal(0, 2, (H, W))
        depth[200:260, x:x + 60] -= 40
        depth = depth.astype(np.uint16)
        depth[rng.random((H, W)) < 0.02] = 0
        frames.append((rgb, depth))
    return frames


def sim_frames(n: int, workdir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` consecutive ticks of a scripted sim-xarm6 pick, each rendered by the scene camera (the
    take is recorded with `main.py sim-demos`, which keeps the sim state of every tick)."""
    import subprocess

    import mujoco

    from robots.sim.render import RGBDRenderer
    from robots.sim.rerender import STATE_KEYS
    from robots.sim.world import SCENE_CAMERA, build_xarm_model

    out = workdir / "sim"
    subprocess.run([sys.executable, "main.py", "sim-demos", "--robot", "sim-xarm6", "--n", "1", "--seed", "1",
                    "--out", str(out)], cwd=Path(__file__).resolve().parents[1], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    path = sorted(out.glob("*.h5"))[0]
    with EpisodeReader(path) as r:
        qpos, mpos, mquat = (np.asarray(r.extras[k], dtype=np.float64) for k in STATE_KEYS)
    model = build_xarm_model()
    data = mujoco.MjData(model)
    renderer = RGBDRenderer(model, SCENE_CAMERA, W, H)
    frames = []
    try:
        start = max(0, (len(qpos) - n) // 2)  # the middle of the take: the arm moves, the cube is picked
        for i in range(start, min(len(qpos), start + n)):
            data.qpos[:] = qpos[i]
            data.mocap_pos[:] = mpos[i].reshape(-1, 3)
            data.mocap_quat[:] = mquat[i].reshape(-1, 4)
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            rgb, depth, _ = renderer.render_u16(data, 0.001)
            frames.append((rgb.copy(), depth.copy()))
    finally:
        renderer.close()
    return frames


def writer_kwargs(option: str) -> dict:
    rgb, _, comp = option.partition("/")
    if rgb not in ("raw", "h264") or not comp:
        raise SystemExit(f"option {option!r}: expected raw/<compression> or h264/<compression>")
    return dict(compression=comp, rgb_codec=None if rgb == "raw" else rgb)


class ControlTicker(threading.Thread):
    """Stands in for the 100 Hz control loop: records how late each tick wakes up."""

    def __init__(self, rate: float = 100.0):
        super().__init__(daemon=True)
        self.period, self.late, self.running = 1.0 / rate, [], True

    def run(self) -> None:
        nxt = time.monotonic() + self.period
        while self.running:
            time.sleep(max(0.0, nxt - time.monotonic()))
            self.late.append(time.monotonic() - nxt)
            nxt += self.period


def sustained(option: str, seconds: float, folder: Path, frames) -> dict:
    path = folder / f"sustained_{option.replace('/', '_')}.h5"
    path.unlink(missing_ok=True)
    ticker = ControlTicker()
    ticker.start()
    load0 = os.getloadavg()[0]
    w = EpisodeWriter(path, dict(robot="franka", task="bench", fps=FPS), CAM, **writer_kwargs(option))
    n = int(seconds * FPS)
    max_lag, append_ms = 0, []
    t0 = time.monotonic()
    for i in range(n):
        rgb, depth = frames[i % len(frames)]
        a = time.perf_counter()
        w.append(t0 + i / FPS, rgb, depth, POSE, np.zeros(7), 1.0, ACTION, {"expert_phase": "bench"})
        append_ms.append((time.perf_counter() - a) * 1e3)
        max_lag = max(max_lag, w.lag)
        time.sleep(max(0.0, t0 + (i + 1) / FPS - time.monotonic()))
    wall = time.monotonic() - t0
    w.finalize("unknown")
    ticker.running = False
    ticker.join()
    late = np.array(ticker.late) * 1e3
    return dict(option=option, frames=n, dropped=w.dropped, max_lag=max_lag, cpu=100 * w.cpu_time / wall,
                # per minute of frames written (a dropped frame costs no bytes)
                mb_min=path.stat().st_size / 1e6 / (max(1, n - w.dropped) / FPS) * 60,
                append_p99=np.percentile(append_ms, 99),
                tick_p99=np.percentile(late, 99), tick_max=late.max(), load=(load0 + os.getloadavg()[0]) / 2)


def write_fast(option: str, seconds: float, folder: Path, frames) -> Path:
    """A `seconds`-long episode written as fast as the writer drains (the read test's input)."""
    path = folder / f"read_{option.replace('/', '_')}.h5"
    path.unlink(missing_ok=True)
    w = EpisodeWriter(path, dict(robot="franka", task="bench", fps=FPS), CAM, **writer_kwargs(option))
    for i in range(int(seconds * FPS)):
        rgb, depth = frames[i % len(frames)]
        w.append(i / FPS, rgb, depth, POSE, np.zeros(7), 1.0, ACTION, block=True)
    w.finalize("unknown")
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def random_reads(path: Path, frames, n: int = 300) -> dict:
    """Scrubbing: ``n`` reads of rgb + depth at random frames (fresh reader: cold caches), and the
    PSNR of every read RGB frame against the frame that was recorded."""
    rng = np.random.default_rng(1)
    with EpisodeReader(path) as ep:
        idx = rng.integers(0, ep.n_frames, n)
        ms, rgb_ms, cpu_ms, quality = [], [], [], []
        for i in idx:
            c = time.thread_time()
            a = time.perf_counter()
            rgb = ep.rgb(i)
            b = time.perf_counter()
            ep.depth(i)
            ms.append((time.perf_counter() - a) * 1e3)
            cpu_ms.append((time.thread_time() - c) * 1e3)
            rgb_ms.append((b - a) * 1e3)
            quality.append(psnr(rgb, frames[i % len(frames)][0]))
        return dict(frames=ep.n_frames, p50=np.percentile(ms, 50), p99=np.percentile(ms, 99), max=max(ms),
                    rgb_p99=np.percentile(rgb_ms, 99), cpu_p99=np.percentile(cpu_ms, 99), psnr=float(np.mean(quality)), psnr_min=float(np.min(quality)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="sustained recording per option")
    ap.add_argument("--options", default=f"{V1_DEFAULT},{V2_DEFAULT}",
                    help="comma-separated <raw|h264>/<compression> options; the first is the ratios' base")
    ap.add_argument("--read-seconds", type=float, default=120.0, help="episode length for the read test")
    ap.add_argument("--scene", choices=("synthetic", "sim"), default="synthetic")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()
    options = args.options.split(",")
    for opt in options:
        writer_kwargs(opt)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        frames = make_frames() if args.scene == "synthetic" else sim_frames(90, folder)
        print(f"scene: {args.scene} ({len(frames)} distinct frames, cycled); {os.cpu_count()} cores, "
              f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        for opt in options:
            rows.append(sustained(opt, args.seconds, folder, frames))
            print(f"  {opt}: done", file=sys.stderr, flush=True)
        base = rows[0]
        print(f"\nSustained {W}x{H} RGB-D @ {FPS} fps for {args.seconds:g} s per option "
              f"(writer CPU = writer thread CPU time / wall, encoding included; 100 Hz tick lateness = GIL stalls)")
        print("| option | frames | dropped | max lag | writer CPU % of a core | MB/min | size vs first "
              "| append p99 ms | 100 Hz tick late p99 / max ms | load avg |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            mark = " (v2 default)" if r["option"] == V2_DEFAULT else " (v1 default)" if r["option"] == V1_DEFAULT else ""
            print(f"| {r['option']}{mark} | {r['frames']} | {r['dropped']} | {r['max_lag']} | {r['cpu']:.1f} | "
                  f"{r['mb_min']:.1f} | {r['mb_min'] / base['mb_min']:.3f} | {r['append_p99']:.2f} | "
                  f"{r['tick_p99']:.1f} / {r['tick_max']:.1f} | {r['load']:.1f} |")

        reads = []
        for opt in options:
            path = write_fast(opt, args.read_seconds, folder, frames)
            load = os.getloadavg()[0]
            reads.append((opt, random_reads(path, frames), load))
            path.unlink()
        print(f"\nRandom frame read (scrub) on a {args.read_seconds:g} s episode, 300 reads of rgb + depth "
              f"(wall time, and the reading thread's CPU time: what a read costs on a core of its own), "
              f"and RGB PSNR of those frames against the recorded ones")
        print("| option | frames | p50 ms | p99 ms | max ms | rgb-only p99 ms | CPU p99 ms | RGB PSNR mean / min dB "
              "| load avg |")
        print("|---|---|---|---|---|---|---|---|---|")
        for opt, r, load in reads:
            print(f"| {opt} | {r['frames']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | {r['rgb_p99']:.2f} "
                  f"| {r['cpu_p99']:.2f} "
                  f"| {r['psnr']:.1f} / {r['psnr_min']:.1f} | {load:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
