"""GUI view benchmarks: 3D point rendering and timeline scrubbing.

    xvfb-run -a -s "-screen 0 1280x1024x24" env QT_QPA_PLATFORM=xcb \\
        .venv/bin/python -m bench.gui [--points 30000,100000,300000] [--frames 20] [--skip-scrub]

1. Points: frame time of an 800×600 canvas while orbiting (camera azimuth changes every frame),
   for vispy Markers (the stock visual), the lean GL_POINTS shader of PointCloudView drawing the
   full cloud, and the same with level of detail (the ≤ 50 k subset drawn while moving). Frame
   time = ``canvas.render()`` (draw + 800×600 read-back, the same for all), so the ratios against
   Markers are the figure; "CPU ms" is the process CPU time per frame (llvmpipe's threads
   included), which a shared box inflates much less than wall time. Also ``set_cloud`` (upload +
   the strided moving subset), the first frame of a camera move right after ``set_cloud`` (what
   used to pay for the LOD build on the UI thread) and the voxel build on its worker thread.
2. Scrubbing: a 2-minute episode at 20 Hz (2400 RGB-D frames, 640×480) written with the real
   EpisodeWriter to a temp file; the playhead is dragged with real mouse events at pyqtgraph's
   100 Hz event limit; each frameChanged reads the frame with EpisodeReader.rgb(i) and shows it
   in a CameraView. Reported: frames shown per second and per-frame read and paint cost.

Needs an X server with GL (Xvfb + Mesa llvmpipe here). Numbers on a shared 2-core box are noisy:
compare the ratios within one run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def tabletop_cloud(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A depth-camera-like cloud of ``n`` points: table plane, three cubes, a bin wall."""
    rng = np.random.default_rng(seed)
    w = int(np.sqrt(n * 4 / 3))
    h = int(np.ceil(n / w))
    v, u = np.mgrid[0:h, 0:w]
    x = 0.25 + 0.6 * v / h
    y = -0.4 + 0.8 * u / w
    z = np.zeros_like(x) + rng.normal(0, 0.001, x.shape)
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = (150, 120, 90)
    for cx, cy, col in [(0.45, 0.1, (220, 60, 60)), (0.6, -0.2, (60, 90, 220)), (0.35, -0.1, (60, 200, 90))]:
        m = (abs(x - cx) < 0.02) & (abs(y - cy) < 0.02)
        z[m] = 0.04
        rgb[m] = col
    wall = abs(y - 0.3) < 0.01
    z[wall] = 0.1 * (x[wall] - 0.25) / 0.6
    xyz = np.stack([x, y, z], -1).reshape(-1, 3)[:n].astype(np.float32)
    return xyz, rgb.reshape(-1, 3)[:n]


def _pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def _time_orbit(canvas, camera, frames: int, app=None) -> tuple[float, float]:
    """Median wall ms per frame while the camera orbits, and mean process-CPU ms per frame.
    With ``app``: the frame on screen (synchronous repaint of the GL widget + Qt's composition
    of the window, what the user waits for), else ``canvas.render()`` into an FBO."""
    def frame():
        if app is None:
            canvas.render()
        else:
            canvas.native.repaint()
            app.processEvents()

    frame()
    times = []
    cpu0 = time.process_time()
    for _ in range(frames):
        camera.azimuth = camera.azimuth + 2.0
        t = time.perf_counter()
        frame()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), (time.process_time() - cpu0) * 1000 / frames


def bench_points(app, sizes: list[int], frames: int, lod_points: int = 50_000,
                 native_window: bool | None = None) -> list[dict]:
    from PySide6 import QtCore
    from vispy import gloo, scene

    from widgets.pointcloud_view import PointCloudView

    rows = []
    for n in sizes:
        xyz, rgb = tabletop_cloud(n)
        row = {"points": n}

        canvas = scene.SceneCanvas(size=(800, 600), show=True, bgcolor="#1e2127")
        view = canvas.central_widget.add_view()
        view.camera = scene.TurntableCamera(fov=45, elevation=25, azimuth=-60, center=(0.55, 0, 0),
                                            scale_factor=1.1)
        markers = scene.visuals.Markers(parent=view.scene)
        markers.set_data(xyz, face_color=np.c_[rgb / 255.0, np.ones(len(rgb))], size=2)
        _pump(app, 0.2)
        row["markers_ms"], row["markers_cpu"] = _time_orbit(canvas, view.camera, frames)
        canvas.close()

        pcv = PointCloudView(lod_points=lod_points, show_toolbar=False, native_window=native_window)
        row["path"] = "native QOpenGLWindow" if pcv.native_window else "QOpenGLWidget"
        pcv.canvas.native.setFixedSize(800, 600)
        pcv.show()
        for g in (pcv.grid, pcv.axes, pcv.crop_lines, pcv.crop_handles):
            g.visible = False    # points only, like the Markers canvas
        pcv.reset_view()
        _pump(app, 0.2)
        pcv.canvas.set_current()
        row["renderer"] = gloo.gl.glGetParameter(gloo.gl.GL_RENDERER)
        uploads, first = [], []
        for _ in range(5):
            pcv._rest_timer.stop()
            t = time.perf_counter()
            pcv.set_cloud(xyz, rgb)
            t1 = time.perf_counter()
            pcv.view.camera.azimuth = pcv.view.camera.azimuth + 2.0   # the user starts to orbit
            pcv.canvas.render()
            uploads.append((t1 - t) * 1000)
            first.append((time.perf_counter() - t1) * 1000)
        row["set_cloud_ms"] = statistics.median(uploads)
        row["first_move_ms"] = statistics.median(first)
        pcv.wait_lod(60.0)
        row["lod_build_ms"] = pcv.lod_build_ms
        row["lod_kind"] = pcv.lod_kind
        # Full cloud while orbiting: LOD switched off.
        pcv.set_lod_points(0)
        row["shader_ms"], row["shader_cpu"] = _time_orbit(pcv.canvas, pcv.view.camera, frames)
        row["screen_full_ms"], row["screen_full_cpu"] = _time_orbit(pcv.canvas, pcv.view.camera, frames, app)
        pcv.set_lod_points(lod_points)
        pcv.wait_lod(60.0)
        row["lod_ms"], row["lod_cpu"] = _time_orbit(pcv.canvas, pcv.view.camera, frames)
        row["screen_lod_ms"], row["screen_lod_cpu"] = _time_orbit(pcv.canvas, pcv.view.camera, frames, app)
        row["lod_drawn"] = pcv.points.drawn_points if pcv.lod_active else n
        pcv.close()
        pcv.deleteLater()
        _pump(app, 0.1)
        # processEvents() does not run deferred deletes; a native GL window left for PySide's exit
        # cleanup segfaults (widgets/scene/native_canvas.py).
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)
        rows.append(row)
    return rows


def _write_episode(path: Path, n: int, fps: float) -> None:
    from recorder.episode import EpisodeWriter

    cam = dict(K=[[615.0, 0, 320], [0, 615.0, 240], [0, 0, 1]], width=640, height=480, depth_scale=0.001)
    w = EpisodeWriter(path, dict(robot="franka", task="bench_scrub", fps=fps), cam)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        rgb = base.copy()
        # A moving square so consecutive frames differ like a real video does.
        cx = 40 + (i * 3) % 560
        rgb[200:260, cx:cx + 60] = (220, 60, 60)
        depth = (600 + yy + (xx // 64) * 5).astype(np.uint16)
        while w.lag >= w.capacity - 1:    # bulk write: wait for the writer thread
            time.sleep(0.005)
        # A valid still pose (a zero quaternion makes finalize()'s proposals complain).
        w.append(i / fps, rgb, depth, np.r_[0.4, 0, 0.3, 0, 0, 0, 1.0], np.zeros(7), 1.0,
                 np.r_[0.4, 0, 0.3, 0, 0, 0, 1.0, 1.0])
    w.finalize("unknown")


def bench_scrub(app, seconds_of_episode: float = 120.0, fps: float = 20.0, drag_s: float = 4.0) -> dict:
    from PySide6 import QtCore, QtWidgets

    from recorder.episode import EpisodeReader
    from widgets.camera_view import CameraView
    from widgets.timeline import Timeline

    n = int(seconds_of_episode * fps)
    tmp = Path(tempfile.mkdtemp(prefix="bench_gui_"))
    path = tmp / "scrub.h5"
    t = time.perf_counter()
    _write_episode(path, n, fps)
    write_s = time.perf_counter() - t
    reader = EpisodeReader(path)

    win = QtWidgets.QWidget()
    lay = QtWidgets.QVBoxLayout(win)
    cam = CameraView()
    tl = Timeline(fps=fps)
    lay.addWidget(cam, 3)
    lay.addWidget(tl, 1)
    win.resize(1000, 800)
    tl.set_n_frames(n, fps)
    f = np.arange(n)
    tl.set_curves({"gripper": (np.sin(f / 90) > 0).astype(float), "speed": np.abs(np.sin(f / 40)),
                   "height": np.cos(f / 70)})
    win.show()
    _pump(app, 0.3)

    read_ms, paint_ms, shown = [], [], []

    def on_frame(i: int) -> None:
        a = time.perf_counter()
        rgb = reader.rgb(i)
        b = time.perf_counter()
        cam.set_frame(rgb, label=f"frame {i}")
        cam.repaint()     # synchronous, so the cost is measured here; real use coalesces updates
        c = time.perf_counter()
        read_ms.append((b - a) * 1000)
        paint_ms.append((c - b) * 1000)
        shown.append(i)

    tl.frameChanged.connect(on_frame)

    from bench.timeline_drag import timeline_mouse

    at, send = timeline_mouse(tl)

    start = at(0)
    send(QtCore.QEvent.MouseMove, start + QtCore.QPoint(1, 0), QtCore.Qt.NoButton)
    time.sleep(0.011)
    send(QtCore.QEvent.MouseMove, start, QtCore.Qt.NoButton)
    send(QtCore.QEvent.MouseButtonPress, start, QtCore.Qt.LeftButton)
    end_px = at(n - 1).x()
    moves = 0
    t0 = time.perf_counter()
    while True:
        el = time.perf_counter() - t0
        if el >= drag_s:
            break
        x = round(start.x() + (end_px - start.x()) * el / drag_s)
        send(QtCore.QEvent.MouseMove, QtCore.QPoint(x, start.y()), QtCore.Qt.LeftButton)
        moves += 1
        app.processEvents()
        time.sleep(0.010)   # a mouse reports at ~100 Hz; pyqtgraph drops moves closer than 10 ms
    wall = time.perf_counter() - t0
    send(QtCore.QEvent.MouseButtonRelease, QtCore.QPoint(round(end_px), start.y()), QtCore.Qt.NoButton)
    app.processEvents()
    win.close()
    reader.close() if hasattr(reader, "close") else None
    path.unlink(missing_ok=True)
    return {
        "frames": n, "write_s": write_s, "drag_s": wall, "mouse_moves": moves,
        "frames_shown": len(shown), "shown_per_s": len(shown) / wall,
        "reached": shown[-1] if shown else -1,
        "read_ms": statistics.median(read_ms) if read_ms else float("nan"),
        "read_p95_ms": float(np.percentile(read_ms, 95)) if read_ms else float("nan"),
        "paint_ms": statistics.median(paint_ms) if paint_ms else float("nan"),
        # What the view could sustain if mouse events came as fast as it can handle them.
        "capacity_per_s": 1000.0 / (statistics.median(read_ms) + statistics.median(paint_ms)) if read_ms else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="30000,100000,300000")
    ap.add_argument("--frames", type=int, default=20, help="orbit frames timed per case")
    ap.add_argument("--lod-points", type=int, default=50_000, help="subset drawn while moving")
    ap.add_argument("--gl-window", default="widget,native",
                    help="PointCloudView GL paths to compare, in this order: widget (QOpenGLWidget, "
                         "composited by Qt) and/or native (QOpenGLWindow in a window container)")
    ap.add_argument("--skip-scrub", action="store_true")
    ap.add_argument("--skip-points", action="store_true")
    args = ap.parse_args(argv)

    if os.environ.get("QT_QPA_PLATFORM", "xcb") == "offscreen" and not args.skip_points:
        print("bench.gui: the 3D part needs GL widgets; run under xvfb-run with QT_QPA_PLATFORM=xcb",
              file=sys.stderr)
        return 2
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    if not args.skip_points:
        from vispy import gloo

        sizes = [int(s) for s in args.points.split(",")]
        rows = []
        for path in args.gl_window.split(","):
            rows += bench_points(app, sizes, args.frames, args.lod_points, native_window=path == "native")
        print(f"\n3D view, 800×600 canvas, orbiting (median of {args.frames} frames); "
              f"GL renderer: {rows[0]['renderer']}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print("| path | points | Markers ms (fps) | lean shader ms (fps) | shader+LOD ms (fps) | LOD pts |"
              " shader/Markers | LOD/Markers | CPU ms/frame Markers · shader · LOD |"
              " set_cloud ms | first move ms | voxel build ms (worker) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['path']} | {r['points']:,} | {r['markers_ms']:.1f} ({1000 / r['markers_ms']:.0f}) | "
                  f"{r['shader_ms']:.1f} ({1000 / r['shader_ms']:.0f}) | {r['lod_ms']:.1f} "
                  f"({1000 / r['lod_ms']:.0f}) | {r['lod_drawn']:,} | {r['shader_ms'] / r['markers_ms']:.2f} | "
                  f"{r['lod_ms'] / r['markers_ms']:.2f} | {r['markers_cpu']:.0f} · {r['shader_cpu']:.0f} · "
                  f"{r['lod_cpu']:.0f} | {r['set_cloud_ms']:.1f} | {r['first_move_ms']:.1f} | "
                  f"{r['lod_build_ms']:.1f} ({r['lod_kind']}) |")
        print("\nSame view on screen (repaint of the GL widget + window composition; a moving camera"
              " draws the LOD subset):")
        print("| path | points | full cloud ms (fps) | CPU ms | LOD ms (fps) | CPU ms |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['path']} | {r['points']:,} | {r['screen_full_ms']:.1f} ({1000 / r['screen_full_ms']:.0f}) | "
                  f"{r['screen_full_cpu']:.0f} | {r['screen_lod_ms']:.1f} ({1000 / r['screen_lod_ms']:.0f}) | "
                  f"{r['screen_lod_cpu']:.0f} |")
    if not args.skip_scrub:
        s = bench_scrub(app)
        print(f"\nTimeline scrub: {s['frames']} frames (2 min @ 20 Hz, 640×480 RGB-D, EpisodeWriter "
              f"default compression, written in {s['write_s']:.0f} s); playhead dragged end to end "
              f"in {s['drag_s']:.1f} s")
        print("| mouse moves | frames shown | shown/s (target ≥ 30) | read ms (p95) | paint ms |"
              " capacity frames/s | last frame |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {s['mouse_moves']} | {s['frames_shown']} | {s['shown_per_s']:.1f} | {s['read_ms']:.1f} "
              f"({s['read_p95_ms']:.1f}) | {s['paint_ms']:.1f} | {s['capacity_per_s']:.0f} | {s['reached']} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
