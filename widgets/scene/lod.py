"""Level of detail for the cloud: while the camera moves a subset of ≤ ``lod_points`` is drawn, the
full cloud once it has rested ``LOD_REST_MS``.

The subset must be ready before the first camera move, or that move is the stall: a new cloud
comes with a strided subset (``prepare_cloud``, a view copy, ~1 ms at 300 k), and a worker thread
replaces it with the voxel-decimated one (~0.1–0.3 s of numpy) once the cloud has stayed put for
``LOD_BUILD_DELAY_MS`` — a live cloud replaced at 10 Hz keeps the stride and costs no builds.

Qt for its timers and the worker → UI-thread hand-off; no GL (it only tells LeanPointsVisual
which of its two buffers to draw).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from PySide6 import QtCore, QtWidgets

from widgets.scene import geometry
from widgets.scene.geometry import PreparedCloud, stride_decimate
from widgets.scene.model import SceneModel


class LodScheduler(QtCore.QObject):
    lodReady = QtCore.Signal(str)                # "stride" | "voxel": the moving subset changed
    _lodBuilt = QtCore.Signal(int, object)       # worker → UI thread: generation, indices

    LOD_REST_MS = 150         # camera idle this long → back to the full cloud (see rest_delay_ms)
    LOD_BUILD_DELAY_MS = 250  # cloud unchanged this long → build the voxel subset on a worker

    def __init__(self, model: SceneModel, points, request_draw: Callable[[], None],
                 parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.model = model
        self.points = points
        self.request_draw = request_draw
        # Which subset is uploaded for moving ("none" | "stride" | "voxel"), the worker thread of
        # the running build, and the thread that ran the last one (tests check it is not the UI's).
        self.kind = "none"
        self._thread: threading.Thread | None = None
        self._last_cloud_at = -1e9
        self._cloud_interval = 1e9
        self.build_thread: int | None = None
        self.build_ms = 0.0
        self.frame_times: list[float] = []     # perf_counter of the last 30 draws

        self.rest_timer = QtCore.QTimer(self)
        self.rest_timer.setSingleShot(True)
        self.rest_timer.timeout.connect(self._on_camera_rest)
        self.build_timer = QtCore.QTimer(self)
        self.build_timer.setSingleShot(True)
        self.build_timer.timeout.connect(self._start_build)
        self._lodBuilt.connect(self._on_built, QtCore.Qt.QueuedConnection)
        model.events.cloud.connect(self._on_cloud)

    # -- cloud and target changes ------------------------------------------------------------

    def _on_cloud(self, cloud: PreparedCloud) -> None:
        now = time.monotonic()
        self._cloud_interval, self._last_cloud_at = now - self._last_cloud_at, now
        self.reset(cloud.lod if cloud.lod_points == self.model.lod_points else None)

    def set_lod_points(self, n: int) -> None:
        self.model.lod_points = int(n)
        self.model.cloud_gen += 1      # a voxel build in flight was for the old target
        self.reset()

    def reset(self, stride_subset: np.ndarray | None = None) -> None:
        data = self.model.cloud.data
        n, target = len(data), self.model.lod_points
        if 0 < target < n:
            if stride_subset is None:
                stride_subset = np.ascontiguousarray(data[stride_decimate(n, target)])
            self.points.set_lod_data(stride_subset)
            self.kind = "stride"
            # A stream slowed down by a busy box still counts as a stream: wait for two of its
            # intervals without a new cloud before paying for a build.
            delay = self.LOD_BUILD_DELAY_MS
            if self._cloud_interval < 1.0:
                delay = max(delay, int(2000 * self._cloud_interval))
            self.build_timer.start(delay)
        else:
            self.points.set_lod_data(np.zeros((0, 4), np.float32))
            self.kind = "none"
            self.build_timer.stop()
        self.points.use_lod(self.moving())

    # -- the voxel build on a worker ---------------------------------------------------------

    def _start_build(self) -> None:
        """Voxel subset of the current cloud on a worker thread; one build at a time, and a
        build for a cloud that has since been replaced is dropped when it lands."""
        if self.kind != "stride":
            return
        if self._thread is not None and self._thread.is_alive():
            # The running build is for an older cloud: try again once it has had time to end.
            self.build_timer.start(self.LOD_BUILD_DELAY_MS)
            return
        gen, xyz, target = self.model.cloud_gen, self.model.xyz, self.model.lod_points
        built = self._lodBuilt

        def work() -> None:
            t = time.perf_counter()
            # voxel_decimate lands within ±25 % of what it is asked for: ask low enough that the
            # moving frame never draws more than lod_points.
            idx = geometry.voxel_decimate(xyz, int(target / 1.25))
            self.build_ms = (time.perf_counter() - t) * 1000
            self.build_thread = threading.get_ident()
            try:
                built.emit(gen, idx)
            except RuntimeError:   # the view was deleted while this ran: nobody to tell
                pass

        self._thread = threading.Thread(target=work, name="pointcloud-lod", daemon=True)
        self._thread.start()

    def _on_built(self, gen: int, idx: np.ndarray) -> None:
        if gen != self.model.cloud_gen or self.kind != "stride":
            return
        self.points.set_lod_data(np.ascontiguousarray(self.model.cloud.data[idx]))
        self.kind = "voxel"
        self.lodReady.emit("voxel")
        if self.points.lod_active:
            self.request_draw()

    def wait(self, timeout: float = 5.0) -> bool:
        """Block (processing events) until the voxel subset of the current cloud is in; for
        benchmarks and tests. True when it is (or the cloud is small enough to need none)."""
        end = time.monotonic() + timeout
        app = QtWidgets.QApplication.instance()
        if self.kind == "stride" and self.build_timer.isActive():
            self.build_timer.stop()
            self._start_build()
        while self.kind == "stride" and time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.AllEvents, 10)
            time.sleep(0.002)
        return self.kind != "stride"

    # -- camera motion -----------------------------------------------------------------------

    def moving(self) -> bool:
        return self.rest_timer.isActive()

    def frame_drawn(self) -> None:
        self.frame_times.append(time.perf_counter())
        del self.frame_times[:-30]

    def rest_delay_ms(self) -> int:
        """How long the camera must be still before the full cloud returns: LOD_REST_MS, or
        1.5 frames when frames are slower than that (a loaded box). Otherwise the timer runs out
        between two moves of one drag, and every other frame of the drag draws the full cloud."""
        gaps = np.diff(self.frame_times[-4:])
        gaps = gaps[gaps < 1.0]          # a pause between two drags is no frame time
        frame_ms = float(np.median(gaps)) * 1000 if len(gaps) else 0.0
        return int(min(max(self.LOD_REST_MS, 1.5 * frame_ms), 1000))

    def camera_moved(self, event=None) -> None:
        # No decimation here: the subset is already uploaded, so a move costs one buffer switch.
        if self.kind != "none":
            self.points.use_lod(True)
        self.rest_timer.start(self.rest_delay_ms())

    def _on_camera_rest(self) -> None:
        self.points.use_lod(False)
        self.request_draw()
