"""3D view of the current frame's point cloud in the robot base frame (vispy inside Qt).

Shows the cloud, the end-effector trajectory, keyframe waypoints with the policy's curve through
them, predicted action chunks and an editable crop box. It knows nothing about devices or files:
the owner feeds numpy arrays and listens to ``waypointsChanged`` / ``cropChanged``.

This widget only wires four parts together (as napari splits a layer), each in widgets/scene/:
  model.py    SceneModel: what is shown, Qt-free, one event per change
  layer.py    SceneLayer: vispy visuals that follow the model (and the lean GL_POINTS shader)
  mouse.py    press/move/release bindings over the model and a projector (no GL)
  lod.py      LodScheduler: the moving subset, its worker-thread build and the rest timer
plus the toolbar, the fps HUD and the canvas/camera.

Needs a real GL context: under Qt's ``offscreen`` platform there are no GL widgets, run it with
the ``xcb`` platform (Xvfb on headless machines).
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import vispy
from PySide6 import QtCore, QtGui, QtWidgets

vispy.use(app="pyside6")
from vispy import scene

from widgets import style
from widgets.scene import mouse, native_canvas
from widgets.scene.geometry import (  # noqa: F401
    PreparedCloud,
    SplineFn,
    box_edges,
    box_face_handles,
    pack_rgb,
    pick_nearest_on_screen,
    policy_curve,
    prepare_cloud,
    stride_decimate,
    unpack_rgb,
    voxel_decimate,
)
from widgets.scene.layer import LeanPoints, LeanPointsVisual, SceneLayer  # noqa: F401
from widgets.scene.lod import LodScheduler
from widgets.scene.model import SceneModel


class _CameraProjector:
    """mouse.Projector over the view's current camera."""

    def __init__(self, canvas, view):
        self.canvas, self.view = canvas, view

    def to_canvas_with_depth(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tr = self.view.scene.node_transform(self.canvas.scene)
        p = tr.map(np.asarray(xyz, np.float64))
        p = p[:, :3] / p[:, 3:4]
        return p[:, :2], p[:, 2]

    def to_canvas(self, xyz: np.ndarray) -> np.ndarray:
        return self.to_canvas_with_depth(xyz)[0]

    def view_depth(self, xyz: np.ndarray) -> np.ndarray:
        """Distance along the viewing direction; the canvas transform's z is not monotonic
        in depth across vispy versions, the camera's own frame is."""
        cam = self.view.camera
        tr = self.view.scene.node_transform(cam)  # scene → camera (eye) coordinates
        p = tr.map(np.asarray(xyz, np.float64))
        p = p[:, :3] / p[:, 3:4]
        return -p[:, 2] if cam.fov > 0 else p[:, 2]


class PointCloudView(QtWidgets.QWidget):
    """Point cloud + trajectory + waypoints + crop box, with orbit/pan/zoom (TurntableCamera).

    Mouse: left-drag orbits, shift+left-drag (or middle) pans, wheel zooms (vispy defaults).
    Ctrl+click on the cloud adds a waypoint (snapped to the point under the cursor); dragging a
    waypoint moves it over the cloud; right-click on a waypoint removes it. Dragging a face
    handle of the crop box (small squares) moves that face along its axis (widgets/scene/mouse.py).
    """

    waypointsChanged = QtCore.Signal(list)       # list of (3,) float arrays, base frame; user edits only
    cropChanged = QtCore.Signal(object, object)  # lo (3,), hi (3,)
    pointPicked = QtCore.Signal(int, object)     # index into the last set_cloud, xyz (3,)
    lodReady = QtCore.Signal(str)                # "stride" | "voxel": the moving subset changed

    LOD_REST_MS = LodScheduler.LOD_REST_MS
    LOD_BUILD_DELAY_MS = LodScheduler.LOD_BUILD_DELAY_MS
    PICK_RADIUS_PX = mouse.PICK_RADIUS_PX

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, lod_points: int = 50_000,
                 spline_fn: SplineFn | None = None, show_toolbar: bool = True,
                 native_window: bool | None = None):
        """``native_window``: draw into a native QOpenGLWindow (widgets/scene/native_canvas.py;
        about twice the orbit frame rate on software GL) or vispy's QOpenGLWidget; None picks
        native on xcb unless ACTSTUDIO_GL_WINDOW says otherwise."""
        super().__init__(parent)
        self.model = SceneModel(lod_points=lod_points, spline_fn=spline_fn)
        self._drag: mouse.Drag | None = None

        self.native_window = native_canvas.native_window_wanted() if native_window is None else native_window
        canvas_args = {"keys": None, "show": False, "bgcolor": style.BACKGROUND, "size": (800, 600)}
        if self.native_window:
            self.canvas = native_canvas.make_canvas(scene.SceneCanvas, **canvas_args)
            self.canvas_widget = self.canvas.native.container
        else:
            self.canvas = scene.SceneCanvas(**canvas_args)
            self.canvas_widget = self.canvas.native
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(fov=45.0, elevation=25.0, azimuth=-60.0,
                                                 up="+z")
        self.layer = SceneLayer(self.model, self.view.scene)
        for name in ("points", "grid", "axes", "trajectory", "predicted", "spline", "waypoint_markers",
                     "keypoint_marker", "crop_lines", "crop_handles"):
            setattr(self, name, getattr(self.layer, name))
        self.lod = LodScheduler(self.model, self.points, self.canvas.update, self)
        self.lod.lodReady.connect(self.lodReady)
        self.projector = _CameraProjector(self.canvas, self.view)

        ev = self.model.events
        ev.waypoints_committed.connect(self.waypointsChanged.emit)
        ev.crop_committed.connect(self.cropChanged.emit)
        ev.crop.connect(self._sync_crop_spins)
        ev.color_mode.connect(self._sync_color_combo)
        ev.point_size.connect(self._sync_size_spin)
        ev.clip_to_crop.connect(self._sync_clip_check)
        for name in ("waypoints", "curve", "crop", "chunk", "keypoint", "trajectory"):
            getattr(ev, name).connect(lambda *_: self.canvas.update())
        self.view.camera.transform.changed.connect(self.lod.camera_moved)
        self.canvas.events.mouse_press.connect(self._on_mouse_press, position="first")
        self.canvas.events.mouse_move.connect(self._on_mouse_move, position="first")
        self.canvas.events.mouse_release.connect(self._on_mouse_release, position="first")
        self.canvas.events.draw.connect(lambda _e: self.lod.frame_drawn())

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.toolbar = self._build_toolbar()
        self.toolbar.setVisible(show_toolbar)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.canvas_widget, 1)
        # A Qt label over the GL widget: updating it never forces a GL redraw (a vispy Text
        # node would, and the fps it shows would then count its own redraws).
        # Over a native GL window only another native window shows: then the label is one, a
        # sibling of the window container stacked above it (inside the container, the GL window's
        # own parent window covered it), and opaque (no alpha across windows).
        self.hud = QtWidgets.QLabel(self if self.native_window else self.canvas_widget)
        background = "rgb(30,33,39)" if self.native_window else "rgba(30,33,39,150)"
        self.hud.setStyleSheet(f"color: {style.TEXT_DIM}; background: {background};"
                               " padding: 2px 6px; font-size: 11px;")
        if self.native_window:
            self.hud.setAttribute(QtCore.Qt.WA_NativeWindow, True)
        self._place_hud()
        self._hud_timer = QtCore.QTimer(self)
        self._hud_timer.timeout.connect(self._update_hud)
        self._hud_timer.start(500)
        self._sync_crop_spins(*self.model.crop())
        self.reset_view()

    def _build_toolbar(self) -> QtWidgets.QWidget:
        bar = QtWidgets.QWidget(self)
        bar.setObjectName("viewToolbar")
        bar.setStyleSheet(style.TOOLBAR_QSS)
        bar.setAttribute(QtCore.Qt.WA_StyledBackground, True)
        # Two rows: in one the six crop boxes made the toolbar 1220 px wide, and once the Collect
        # tab's 3D page was built the window no longer fit 1280 px (E-STOP off screen; issue 12).
        rows = QtWidgets.QVBoxLayout(bar)
        rows.setContentsMargins(6, 4, 6, 4)
        rows.setSpacing(4)
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(6)
        rows.addLayout(row)
        reset = QtWidgets.QPushButton("Reset view", bar)
        reset.clicked.connect(self.reset_view)
        row.addWidget(reset)
        row.addWidget(QtWidgets.QLabel("Colour", bar))
        self.color_combo = QtWidgets.QComboBox(bar)
        self.color_combo.addItems(["rgb", "height"])
        self.color_combo.currentTextChanged.connect(self.set_color_mode)
        row.addWidget(self.color_combo)
        row.addWidget(QtWidgets.QLabel("Size", bar))
        self.size_spin = QtWidgets.QDoubleSpinBox(bar)
        self.size_spin.setRange(1.0, 12.0)
        self.size_spin.setSingleStep(0.5)
        self.size_spin.setValue(2.0)
        self.size_spin.valueChanged.connect(self.set_point_size)
        row.addWidget(self.size_spin)
        row.addSpacing(10)
        self.clip_check = QtWidgets.QCheckBox("crop: only inside", bar)
        self.clip_check.toggled.connect(self.set_clip_to_crop)
        row.addWidget(self.clip_check)
        row.addStretch(1)
        crop = QtWidgets.QGridLayout()  # lower corner on one line, upper on the next
        crop.setHorizontalSpacing(6)
        crop.setVerticalSpacing(2)
        rows.addLayout(crop)
        crop.addWidget(QtWidgets.QLabel("Crop", bar), 0, 0, 2, 1)
        self.crop_spins: list[QtWidgets.QDoubleSpinBox] = []
        for i, name in enumerate(["x≥", "y≥", "z≥", "x≤", "y≤", "z≤"]):
            spin = QtWidgets.QDoubleSpinBox(bar)
            spin.setRange(-5.0, 5.0)
            spin.setDecimals(2)
            spin.setSingleStep(0.01)
            spin.setSuffix(" m")
            spin.setPrefix(name + " ")
            spin.setKeyboardTracking(False)
            spin.valueChanged.connect(self._on_crop_spin)
            self.crop_spins.append(spin)
            crop.addWidget(spin, i // 3, 1 + i % 3)
        crop.setColumnStretch(4, 1)
        return bar

    # -- public API (thin: the model does the work, its events update visuals and toolbar) ---

    def set_cloud(self, xyz: np.ndarray | PreparedCloud, rgb: np.ndarray | None = None) -> None:
        """Replace the cloud. xyz (N,3) in the base frame; rgb (N,3) uint8 or None (grey).
        Or a ``prepare_cloud`` result made on a worker thread: then the UI thread only queues
        the buffers for GL (a live 300 k cloud costs it ~1 ms instead of tens)."""
        self.model.set_cloud(xyz, rgb)

    def cloud(self) -> np.ndarray:
        return self.model.xyz

    @property
    def _xyz(self) -> np.ndarray:
        return self.model.xyz

    @property
    def lod_points(self) -> int:
        return self.model.lod_points

    def set_lod_points(self, n: int) -> None:
        """Points drawn while the camera moves (0: always the full cloud)."""
        self.lod.set_lod_points(n)

    @property
    def spline_fn(self) -> SplineFn:
        return self.model.spline_fn

    def set_spline_fn(self, fn: SplineFn) -> None:
        """Curve builder (K,3) → (M,3); policies/waypoints.py supplies the policy's own."""
        self.model.set_spline_fn(fn)

    def set_color_mode(self, mode: str) -> None:
        self.model.set_color_mode(mode)

    def color_mode(self) -> str:
        return self.model.color_mode

    def set_point_size(self, size: float) -> None:
        self.model.set_point_size(size)

    def set_trajectory(self, xyz: np.ndarray | None) -> None:
        """End-effector path (T,3); coloured from dark (start) to bright (end)."""
        self.model.set_trajectory(xyz)

    def set_predicted_actions(self, xyz: np.ndarray | None) -> None:
        """Predicted action chunk positions (H,3), drawn as an orange polyline."""
        self.model.set_chunk(xyz)

    def set_keypoint(self, xyz: np.ndarray | Sequence[float] | None) -> None:
        """One predicted 3D point (e.g. the action expert's grasp keypoint), a magenta diamond."""
        self.model.set_keypoint(xyz)

    def set_waypoints(self, xyz: np.ndarray | Sequence[Sequence[float]] | None) -> None:
        """Keyframe waypoints (K,3). Does not emit ``waypointsChanged`` (only user edits do)."""
        self.model.set_waypoints(xyz)

    def waypoints(self) -> list[np.ndarray]:
        return self.model.waypoints()

    def set_crop(self, lo: Sequence[float], hi: Sequence[float], *, emit: bool = True) -> None:
        self.model.set_crop(lo, hi, commit=emit)

    def crop(self) -> tuple[np.ndarray, np.ndarray]:
        return self.model.crop()

    def set_crop_visible(self, visible: bool) -> None:
        self.layer.set_crop_visible(visible)

    def set_clip_to_crop(self, on: bool) -> None:
        self.model.set_clip_to_crop(on)

    def reset_view(self) -> None:
        """Look at the cloud (or the crop box when there is none) from the front-left, above."""
        xyz = self.model.xyz
        if len(xyz):
            lo = np.percentile(xyz, 2, axis=0)
            hi = np.percentile(xyz, 98, axis=0)
        else:
            lo, hi = self.model.crop_lo, self.model.crop_hi
        cam = self.view.camera
        cam.center = tuple((lo + hi) / 2)
        cam.scale_factor = float(np.linalg.norm(hi - lo)) * 1.1 or 1.0
        cam.elevation, cam.azimuth = 25.0, -60.0
        self.view.camera.view_changed()

    # -- level of detail (LodScheduler; these names are what tests and bench/gui.py read) -----

    @property
    def lod_active(self) -> bool:
        return self.points.lod_active

    @property
    def lod_kind(self) -> str:
        return self.lod.kind

    @property
    def lod_build_ms(self) -> float:
        return self.lod.build_ms

    @property
    def lod_build_thread(self) -> int | None:
        return self.lod.build_thread

    @property
    def _rest_timer(self) -> QtCore.QTimer:
        return self.lod.rest_timer

    @property
    def _fps_times(self) -> list[float]:
        return self.lod.frame_times

    def wait_lod(self, timeout: float = 5.0) -> bool:
        """Block (processing events) until the voxel subset of the current cloud is in; for
        benchmarks and tests. True when it is (or the cloud is small enough to need none)."""
        return self.lod.wait(timeout)

    def rest_delay_ms(self) -> int:
        return self.lod.rest_delay_ms()

    def measured_fps(self) -> float:
        """Draw rate over the last second (0 when idle)."""
        now = time.perf_counter()
        recent = [t for t in self.lod.frame_times if now - t < 1.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    # -- picking and mouse (the bindings are widgets/scene/mouse.py) --------------------------

    def _scene_to_canvas(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canvas pixel coordinates (N,2) and NDC depth (N,) of base-frame points."""
        return self.projector.to_canvas_with_depth(xyz)

    def pick_point(self, canvas_xy: Sequence[float]) -> int | None:
        """Index of the cloud point under a canvas pixel (logical coordinates), or None."""
        return mouse.pick_point(self.model, self.projector, canvas_xy, self.PICK_RADIUS_PX)

    def _on_mouse_press(self, event) -> None:
        ctrl = any(getattr(m, "name", m) == "Control" for m in event.modifiers)
        result = mouse.press(self.model, self.projector, event.pos[:2], event.button, ctrl,
                             crop_editable=self.crop_handles.visible)
        if result.picked is not None:
            self.pointPicked.emit(result.picked, self.model.xyz[result.picked].copy())
        if result.drag is not None:
            self._drag = result.drag
            # The camera sees the same events; without this the view would orbit while editing.
            self.view.camera.interactive = False
        if result.handled:
            event.handled = True

    def _on_mouse_move(self, event) -> None:
        if mouse.move(self.model, self.projector, self._drag, event.pos[:2]):
            event.handled = True

    def _on_mouse_release(self, event) -> None:
        drag, self._drag = self._drag, None
        if drag is not None:
            self.view.camera.interactive = True
        if mouse.release(self.model, drag):
            event.handled = True

    def _place_hud(self) -> None:
        offset = self.canvas_widget.pos() if self.native_window else QtCore.QPoint(0, 0)
        self.hud.move(offset + QtCore.QPoint(6, 6))
        self.hud.raise_()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.native_window:   # the layout has placed the container by the next turn
            QtCore.QTimer.singleShot(0, self._place_hud)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.native_window:
            QtCore.QTimer.singleShot(0, self._place_hud)

    def grab(self, *args) -> QtGui.QPixmap:
        """QWidget.grab, with the GL pixels painted in: a native GL window is not part of the
        widget tree's paint, so the plain grab would show an empty rectangle there."""
        pix = super().grab(*args)
        if self.native_window and self.canvas_widget.isVisible() and not args:
            img = np.ascontiguousarray(self.canvas.render()[:, :, :4])
            qimg = QtGui.QImage(img.data, img.shape[1], img.shape[0], img.strides[0],
                                QtGui.QImage.Format_RGBA8888)
            top_left = self.canvas_widget.mapTo(self, QtCore.QPoint(0, 0))
            painter = QtGui.QPainter(pix)
            painter.drawImage(QtCore.QRect(top_left, self.canvas_widget.size()), qimg)
            painter.drawPixmap(self.hud.pos(), self.hud.grab())   # native too: paint it back on top
            painter.end()
        return pix

    # -- toolbar and HUD follow the model -----------------------------------------------------

    def _sync_crop_spins(self, lo: np.ndarray, hi: np.ndarray) -> None:
        for spin, value in zip(self.crop_spins, np.r_[lo, hi]):
            if abs(spin.value() - value) > 1e-9:
                spin.blockSignals(True)
                spin.setValue(float(value))
                spin.blockSignals(False)

    def _sync_color_combo(self, mode: str) -> None:
        if self.color_combo.currentText() != mode:
            self.color_combo.setCurrentText(mode)

    def _sync_size_spin(self, size: float) -> None:
        if abs(self.size_spin.value() - size) > 1e-9:
            self.size_spin.setValue(size)

    def _sync_clip_check(self, on: bool) -> None:
        if self.clip_check.isChecked() != on:
            self.clip_check.setChecked(on)

    def _on_crop_spin(self, _value: float) -> None:
        vals = np.array([s.value() for s in self.crop_spins])
        lo, hi = vals[:3], vals[3:]
        if np.any(lo >= hi):
            # Keep the last valid box; the spin shows the user's number until they fix the other.
            return
        self.set_crop(lo, hi)

    def _update_hud(self) -> None:
        n = len(self.model.xyz)
        lod = f" · LOD {self.points.drawn_points:,}" if self.points.lod_active else ""
        fps = self.measured_fps()
        rate = f" · {fps:.0f} fps" if fps else ""
        text = f"{n:,} pts{lod}{rate}".replace(",", " ")
        if self.hud.text() != text:
            self.hud.setText(text)
            self.hud.adjustSize()
