"""3D view of the current frame's point cloud in the robot base frame (vispy inside Qt).

Shows the cloud, the end-effector trajectory, keyframe waypoints with a spline through them,
predicted action chunks and an editable crop box. It knows nothing about devices or files: the
owner feeds numpy arrays and listens to ``waypointsChanged`` / ``cropChanged``.

Why a custom point visual: on software GL (llvmpipe, the only GL on the lab's headless boxes and
on many laptops without drivers) vispy's Markers cost 244 ms at 300 k points, a bare GL_POINTS
program 55 ms (DESIGN.md). The visual below is that bare program: square points, no edges, one
interleaved float buffer (xyz + RGB packed into one float), colour-by-height done in the shader
so switching modes uploads nothing. On top of it, level of detail: while the camera moves a
subset of ≤ ``lod_points`` is drawn, the full cloud once it has rested ``LOD_REST_MS``.

The subset must be ready before the first camera move, or that move is the stall: set_cloud
takes a strided subset at once (a view copy, ~1 ms at 300 k), and a worker thread replaces it
with the voxel-decimated one (~0.1–0.3 s of numpy) once the cloud has stayed put for
``LOD_BUILD_DELAY_MS`` — a live cloud replaced at 10 Hz keeps the stride and costs no builds.

Needs a real GL context: under Qt's ``offscreen`` platform there are no GL widgets, run it with
the ``xcb`` platform (Xvfb on headless machines).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PySide6 import QtCore, QtWidgets

import vispy

vispy.use(app="pyside6")
from vispy import gloo, scene  # noqa: E402  (backend must be chosen first)
from vispy.scene import visuals as svisuals  # noqa: E402
from vispy.visuals import Visual  # noqa: E402

from widgets import style  # noqa: E402

SplineFn = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Pure geometry helpers (no GL; unit-tested on their own)
# ---------------------------------------------------------------------------------------------


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N,3) uint8 → (N,) float32 holding r·65536 + g·256 + b, exact since it is < 2**24.

    One float per point instead of three keeps the vertex buffer at 16 bytes/point, which is
    what the upload time is bound by."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]).astype(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    p = np.asarray(packed, dtype=np.uint32)
    return np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=1).astype(np.uint8)


def voxel_decimate(xyz: np.ndarray, target: int, iterations: int = 3) -> np.ndarray:
    """Indices of one point per occupied voxel, with the voxel size chosen so that about
    ``target`` points remain (within ~20 %). Returns all indices when the cloud is small.

    Voxels (not a random subset) keep thin structures such as the gripper fingers visible
    while orbiting, and thin out the dense table surface near the camera first."""
    n = len(xyz)
    if n <= target or target <= 0:
        return np.arange(n)
    lo = xyz.min(axis=0)
    extent = np.maximum(xyz.max(axis=0) - lo, 1e-6)
    # Depth-camera clouds are surfaces, so occupancy grows with area: start from a 2D guess.
    area = np.sort(extent)[1:].prod()
    voxel = float(np.sqrt(area / target))
    idx = np.arange(n)
    for _ in range(iterations):
        q = np.floor((xyz - lo) / voxel).astype(np.int64)
        dims = q.max(axis=0) + 1
        keys = (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]
        _, idx = np.unique(keys, return_index=True)
        ratio = len(idx) / target
        if 0.8 <= ratio <= 1.25:
            break
        voxel *= float(np.sqrt(ratio))
    if len(idx) > target * 1.25:
        # Still too many after the iterations: a stride keeps it spatially even enough.
        idx = idx[:: int(np.ceil(len(idx) / target))]
    return np.sort(idx)


def stride_decimate(n: int, target: int) -> np.ndarray:
    """Every k-th index so that ≤ ``target`` remain. Depth clouds arrive in image row order, and a
    stride that does not divide the row width lands on a sheared lattice: spatially even enough
    for the moment until the voxel subset is ready."""
    if n <= target or target <= 0:
        return np.arange(n)
    return np.arange(0, n, int(np.ceil(n / target)))


@dataclass(frozen=True)
class PreparedCloud:
    """A cloud packed for the view: everything ``set_cloud`` computes with numpy, so a worker
    thread can do it and the UI thread only hands the buffers to GL."""
    data: np.ndarray            # (N,4) float32: xyz + packed rgb
    bounds: np.ndarray          # (2,3) min, max
    zrange: tuple[float, float]  # 1st–99th height percentile, for the height colour map
    lod: np.ndarray             # (M,4) strided subset for moving (empty if N ≤ lod_points)
    lod_points: int

    def __len__(self) -> int:
        return len(self.data)


def prepare_cloud(xyz: np.ndarray, rgb: np.ndarray | None = None,
                  lod_points: int = 50_000) -> PreparedCloud:
    """Validate and pack a cloud (thread-safe, no Qt). xyz (N,3); rgb (N,3) uint8 or None."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"set_cloud: xyz must be (N,3), got {xyz.shape}")
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != xyz.shape:
            raise ValueError(f"set_cloud: rgb must be (N,3) like xyz {xyz.shape}, got {rgb.shape}")
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.all():
        # Depth holes come through as NaN; drawing them would poison the bounds.
        xyz = xyz[finite]
        rgb = None if rgb is None else rgb[finite]
    n = len(xyz)
    data = np.empty((n, 4), np.float32)
    data[:, :3] = xyz
    data[:, 3] = pack_rgb(rgb) if rgb is not None else 0x9AA4B2
    if n:
        bounds = np.stack([data[:, :3].min(axis=0), data[:, :3].max(axis=0)])
        z = data[:, 2]
        lo, hi = np.percentile(z, [1.0, 99.0]) if n > 100 else (z.min(), z.max())
    else:
        bounds, lo, hi = np.zeros((2, 3)), 0.0, 1.0
    lod = (np.ascontiguousarray(data[stride_decimate(n, lod_points)]) if 0 < lod_points < n
           else np.zeros((0, 4), np.float32))
    return PreparedCloud(data, bounds, (float(lo), float(hi)), lod, int(lod_points))


def policy_curve(waypoints: np.ndarray, samples: int = 200) -> np.ndarray:
    """Default curve through the waypoints: the policy's own (policies.waypoints.position_curve, PCHIP
    + slerp through WaypointTrajectory), so the view never draws a curve the arm would not follow.
    Imported on first use: policies.geometry pulls in torch (~1.5 s), which a bare view does not need."""
    from policies.waypoints import position_curve

    return position_curve(waypoints, samples)


def box_edges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(24,3) segment endpoints of the 12 edges of an axis-aligned box."""
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    corners = np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1], hi[2] if i & 4 else lo[2]]
                        for i in range(8)])
    pairs = [(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit]
    return corners[np.array(pairs).ravel()]


def box_face_handles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(6,3) centres of the faces: -x, +x, -y, +y, -z, +z (the order of the handle indices)."""
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    c = (lo + hi) / 2
    out = []
    for axis in range(3):
        for bound in (lo, hi):
            p = c.copy()
            p[axis] = bound[axis]
            out.append(p)
    return np.array(out)


def pick_nearest_on_screen(screen_xy: np.ndarray, depth: np.ndarray, click: Sequence[float],
                           radius_px: float, depth_tol: float = 0.02) -> int | None:
    """Index of the point drawn under ``click``, or None if no point projects within
    ``radius_px`` pixels. Points more than ``depth_tol`` (metres) behind the front-most candidate
    are hidden surfaces; among the visible ones the closest on screen wins (at grazing angles the
    front-most point of the pick disc can be centimetres off the cursor)."""
    d2 = np.sum((screen_xy - np.asarray(click, float)[None, :]) ** 2, axis=1)
    near = np.flatnonzero(d2 <= radius_px * radius_px)
    if len(near) == 0:
        return None
    visible = near[depth[near] <= depth[near].min() + depth_tol]
    return int(visible[np.argmin(d2[visible])])


# ---------------------------------------------------------------------------------------------
# The lean point visual
# ---------------------------------------------------------------------------------------------

_VERT = """
uniform float u_size;
uniform float u_mode;        // 0: packed RGB, 1: height colour map
uniform vec2 u_zrange;
uniform float u_clip;        // 1: hide points outside the crop box
uniform vec3 u_crop_lo;
uniform vec3 u_crop_hi;
attribute vec4 a_data;       // xyz, packed rgb
varying vec3 v_color;

vec3 turbo(float t) {
    // Polynomial fit of Google's Turbo map: perceptually ordered, cheap in a vertex shader.
    const vec4 kr4 = vec4(0.13572138, 4.61539260, -42.66032258, 132.13108234);
    const vec4 kg4 = vec4(0.09140261, 2.19418839, 4.84296658, -14.18503333);
    const vec4 kb4 = vec4(0.10667330, 12.64194608, -60.58204836, 110.36276771);
    const vec2 kr2 = vec2(-152.94239396, 59.28637943);
    const vec2 kg2 = vec2(4.27729857, 2.82956604);
    const vec2 kb2 = vec2(-89.90310912, 27.34824973);
    vec4 v4 = vec4(1.0, t, t * t, t * t * t);
    vec2 v2 = v4.zw * v4.z;
    return vec3(dot(v4, kr4) + dot(v2, kr2), dot(v4, kg4) + dot(v2, kg2), dot(v4, kb4) + dot(v2, kb2));
}

void main() {
    vec3 p = a_data.xyz;
    if (u_clip > 0.5 && (any(lessThan(p, u_crop_lo)) || any(greaterThan(p, u_crop_hi)))) {
        gl_Position = vec4(2.0, 2.0, 2.0, 1.0);   // outside the clip volume: dropped
        return;
    }
    gl_Position = $transform(vec4(p, 1.0));
    gl_PointSize = u_size;
    if (u_mode < 0.5) {
        float c = a_data.w;
        v_color = vec3(floor(c / 65536.0), mod(floor(c / 256.0), 256.0), mod(c, 256.0)) / 255.0;
    } else {
        float t = clamp((p.z - u_zrange.x) / max(u_zrange.y - u_zrange.x, 1e-6), 0.0, 1.0);
        t = 0.08 + 0.87 * t;   // skip the near-black ends of Turbo: the floor stays visible
        v_color = clamp(turbo(t), 0.0, 1.0);
    }
}
"""

_FRAG = """
varying vec3 v_color;
void main() { gl_FragColor = vec4(v_color, 1.0); }
"""


class LeanPointsVisual(Visual):
    """GL_POINTS with square sprites and no per-fragment work; a full and a LOD buffer."""

    def __init__(self):
        super().__init__(vcode=_VERT, fcode=_FRAG)
        self._draw_mode = "points"
        self.set_gl_state("opaque", depth_test=True)
        self._full = gloo.VertexBuffer(np.zeros((1, 4), np.float32))
        self._lod = gloo.VertexBuffer(np.zeros((1, 4), np.float32))
        self._n = 0
        self._n_lod = 0
        self._use_lod = False
        self._bounds = np.zeros((2, 3))
        self.shared_program["a_data"] = self._full
        self.shared_program["u_size"] = 2.0
        self.shared_program["u_mode"] = 0.0
        self.shared_program["u_zrange"] = (0.0, 1.0)
        self.shared_program["u_clip"] = 0.0
        self.shared_program["u_crop_lo"] = (-1e9, -1e9, -1e9)
        self.shared_program["u_crop_hi"] = (1e9, 1e9, 1e9)

    def set_data(self, data: np.ndarray, bounds: np.ndarray | None = None) -> None:
        """(N,4) float32 xyz+packed rgb; uploads to the full buffer only."""
        self._n = len(data)
        self._full.set_data(data if self._n else np.zeros((1, 4), np.float32))
        self._n_lod = 0
        if self._n:
            self._bounds = (bounds if bounds is not None
                            else np.stack([data[:, :3].min(axis=0), data[:, :3].max(axis=0)]))
        self.use_lod(False)
        self.update()

    def set_lod_data(self, data: np.ndarray) -> None:
        """(M,4) subset drawn while the camera moves; gloo queues the upload for the next draw."""
        self._n_lod = len(data)
        if self._n_lod:
            self._lod.set_data(data)
        elif self._use_lod:
            self.use_lod(False)

    @property
    def lod_active(self) -> bool:
        return self._use_lod

    @property
    def drawn_points(self) -> int:
        return self._n_lod if self._use_lod else self._n

    def use_lod(self, on: bool) -> None:
        on = bool(on) and self._n_lod > 0
        if on != self._use_lod:
            # Rebinding an attribute to another already-uploaded buffer costs no transfer.
            self.shared_program["a_data"] = self._lod if on else self._full
            self._use_lod = on
            self.update()

    def set_uniform(self, name: str, value) -> None:
        self.shared_program[name] = value
        self.update()

    def _prepare_transforms(self, view):
        view.view_program.vert["transform"] = view.get_transform()

    def _prepare_draw(self, view):
        return self._n > 0

    def _compute_bounds(self, axis, view):
        if self._n == 0:
            return None
        return float(self._bounds[0, axis]), float(self._bounds[1, axis])


LeanPoints = scene.visuals.create_visual_node(LeanPointsVisual)


# ---------------------------------------------------------------------------------------------
# The widget
# ---------------------------------------------------------------------------------------------


class PointCloudView(QtWidgets.QWidget):
    """Point cloud + trajectory + waypoints + crop box, with orbit/pan/zoom (TurntableCamera).

    Mouse: left-drag orbits, shift+left-drag (or middle) pans, wheel zooms (vispy defaults).
    Ctrl+click on the cloud adds a waypoint (snapped to the point under the cursor); dragging a
    waypoint moves it over the cloud; right-click on a waypoint removes it. Dragging a face
    handle of the crop box (small squares) moves that face along its axis.
    """

    waypointsChanged = QtCore.Signal(list)       # list of (3,) float arrays, base frame
    cropChanged = QtCore.Signal(object, object)  # lo (3,), hi (3,)
    pointPicked = QtCore.Signal(int, object)     # index into the last set_cloud, xyz (3,)
    lodReady = QtCore.Signal(str)                # "stride" | "voxel": the moving subset changed
    _lodBuilt = QtCore.Signal(int, object)       # worker → UI thread: generation, indices

    LOD_REST_MS = 150         # camera idle this long → back to the full cloud (see rest_delay_ms)
    LOD_BUILD_DELAY_MS = 250  # cloud unchanged this long → build the voxel subset on a worker
    PICK_RADIUS_PX = 8.0

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, lod_points: int = 50_000,
                 spline_fn: SplineFn | None = None, show_toolbar: bool = True):
        super().__init__(parent)
        self.lod_points = int(lod_points)
        self.spline_fn: SplineFn = spline_fn or policy_curve
        self._xyz = np.zeros((0, 3), np.float32)
        self._data = np.zeros((0, 4), np.float32)
        # Level of detail: which subset is uploaded for moving ("none" | "stride" | "voxel"), the
        # cloud generation it belongs to, the worker thread of the running build, and the
        # thread that ran the last one (tests check it is not the UI thread).
        self.lod_kind = "none"
        self._cloud_gen = 0
        self._lod_thread: threading.Thread | None = None
        self._last_cloud_at = -1e9
        self._cloud_interval = 1e9
        self.lod_build_thread: int | None = None
        self.lod_build_ms = 0.0
        self._waypoints: list[np.ndarray] = []
        self._crop_lo = np.array([-0.2, -0.5, -0.05])
        self._crop_hi = np.array([1.0, 0.5, 0.6])
        self._drag: tuple[str, int] | None = None   # ("waypoint", i) | ("crop", face)
        self._drag_anchor: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._color_mode = "rgb"
        self._fps_times: list[float] = []

        self.canvas = scene.SceneCanvas(keys=None, show=False, bgcolor=style.BACKGROUND,
                                        size=(800, 600))
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(fov=45.0, elevation=25.0, azimuth=-60.0,
                                                 up="+z")
        self.points = LeanPoints(parent=self.view.scene)
        self._build_overlays()

        self._rest_timer = QtCore.QTimer(self)
        self._rest_timer.setSingleShot(True)
        self._rest_timer.timeout.connect(self._on_camera_rest)
        self._lod_build_timer = QtCore.QTimer(self)
        self._lod_build_timer.setSingleShot(True)
        self._lod_build_timer.timeout.connect(self._start_lod_build)
        self._lodBuilt.connect(self._on_lod_built, QtCore.Qt.QueuedConnection)
        self.view.camera.transform.changed.connect(self._on_camera_moved)
        self.canvas.events.mouse_press.connect(self._on_mouse_press, position="first")
        self.canvas.events.mouse_move.connect(self._on_mouse_move, position="first")
        self.canvas.events.mouse_release.connect(self._on_mouse_release, position="first")
        self.canvas.events.draw.connect(self._on_draw)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.toolbar = self._build_toolbar()
        self.toolbar.setVisible(show_toolbar)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.canvas.native, 1)
        # A Qt label over the GL widget: updating it never forces a GL redraw (a vispy Text
        # node would, and the fps it shows would then count its own redraws).
        self.hud = QtWidgets.QLabel(self.canvas.native)
        self.hud.setStyleSheet(f"color: {style.TEXT_DIM}; background: rgba(30,33,39,150);"
                               " padding: 2px 6px; font-size: 11px;")
        self.hud.move(6, 6)
        self._hud_timer = QtCore.QTimer(self)
        self._hud_timer.timeout.connect(self._update_hud)
        self._hud_timer.start(500)
        self._update_crop_visual()
        self.reset_view()

    # -- scene furniture -------------------------------------------------------------------

    def _build_overlays(self) -> None:
        vs = self.view.scene
        # Table-plane grid (z = 0 in the base frame): 10 cm spacing, 1.6 m square.
        ticks = np.arange(-0.8, 0.8001, 0.1)
        segs = []
        for t in ticks:
            segs += [[t, -0.8, 0], [t, 0.8, 0], [-0.8, t, 0], [0.8, t, 0]]
        self.grid = svisuals.Line(np.array(segs), connect="segments",
                                  color=style.hex_to_rgbf(style.GRID, 0.6), parent=vs)
        self.axes = svisuals.XYZAxis(parent=vs, width=2)
        self.axes.transform = scene.STTransform(scale=(0.15, 0.15, 0.15))
        self.trajectory = svisuals.Line(width=2.0, parent=vs)
        self.trajectory.visible = False
        self.predicted = svisuals.Line(width=3.0, color=style.hex_to_rgbf(style.WARNING), parent=vs)
        self.predicted.visible = False
        self.spline = svisuals.Line(width=2.5, color=style.hex_to_rgbf(style.ACCENT), parent=vs)
        self.spline.visible = False
        self.waypoint_markers = svisuals.Markers(parent=vs)
        self.waypoint_markers.visible = False
        self.keypoint_marker = svisuals.Markers(parent=vs)
        self.keypoint_marker.visible = False
        self.crop_lines = svisuals.Line(connect="segments", width=1.5,
                                        color=style.hex_to_rgbf("#e5c07b", 0.9), parent=vs)
        self.crop_handles = svisuals.Markers(parent=vs)
        for node in (self.trajectory, self.predicted, self.spline, self.waypoint_markers,
                     self.keypoint_marker, self.crop_handles):
            # Drawn on top of the cloud: the user must see what they edit.
            node.set_gl_state("translucent", depth_test=False)
            node.order = 10

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

    # -- public API ------------------------------------------------------------------------

    def set_cloud(self, xyz: np.ndarray | PreparedCloud, rgb: np.ndarray | None = None) -> None:
        """Replace the cloud. xyz (N,3) in the base frame; rgb (N,3) uint8 or None (grey).
        Or a ``prepare_cloud`` result made on a worker thread: then the UI thread only queues
        the buffers for GL (a live 300 k cloud costs it ~1 ms instead of tens)."""
        cloud = xyz if isinstance(xyz, PreparedCloud) else prepare_cloud(xyz, rgb, self.lod_points)
        data = cloud.data
        self._xyz = data[:, :3]
        self._data = data
        self._cloud_gen += 1
        now = time.monotonic()
        self._cloud_interval, self._last_cloud_at = now - self._last_cloud_at, now
        self.points.set_data(data, cloud.bounds)
        if len(data):
            self.points.set_uniform("u_zrange", cloud.zrange)
        self._reset_lod(cloud.lod if cloud.lod_points == self.lod_points else None)

    def set_lod_points(self, n: int) -> None:
        """Points drawn while the camera moves (0: always the full cloud)."""
        self.lod_points = int(n)
        self._cloud_gen += 1      # a voxel build in flight was for the old target
        self._reset_lod()

    def _reset_lod(self, stride_subset: np.ndarray | None = None) -> None:
        n = len(self._data)
        if 0 < self.lod_points < n:
            if stride_subset is None:
                stride_subset = np.ascontiguousarray(self._data[stride_decimate(n, self.lod_points)])
            self.points.set_lod_data(stride_subset)
            self.lod_kind = "stride"
            # A stream slowed down by a busy box still counts as a stream: wait for two of its
            # intervals without a new cloud before paying for a build.
            delay = self.LOD_BUILD_DELAY_MS
            if self._cloud_interval < 1.0:
                delay = max(delay, int(2000 * self._cloud_interval))
            self._lod_build_timer.start(delay)
        else:
            self.points.set_lod_data(np.zeros((0, 4), np.float32))
            self.lod_kind = "none"
            self._lod_build_timer.stop()
        self.points.use_lod(self._moving())

    def cloud(self) -> np.ndarray:
        return self._xyz

    def set_color_mode(self, mode: str) -> None:
        if mode not in ("rgb", "height"):
            raise ValueError(f"colour mode must be 'rgb' or 'height', got {mode!r}")
        self._color_mode = mode
        self.points.set_uniform("u_mode", 0.0 if mode == "rgb" else 1.0)
        if self.color_combo.currentText() != mode:
            self.color_combo.setCurrentText(mode)

    def color_mode(self) -> str:
        return self._color_mode

    def set_point_size(self, size: float) -> None:
        self.points.set_uniform("u_size", float(size))
        if abs(self.size_spin.value() - size) > 1e-9:
            self.size_spin.setValue(size)

    def set_trajectory(self, xyz: np.ndarray | None) -> None:
        """End-effector path (T,3); coloured from dark (start) to bright (end)."""
        if xyz is None or len(xyz) < 2:
            self.trajectory.visible = False
            return
        xyz = np.asarray(xyz, np.float32)
        t = np.linspace(0.25, 1.0, len(xyz))[:, None]
        colors = np.hstack([0.44 * t, 0.82 * t, 0.55 * t, np.ones_like(t)])
        self.trajectory.set_data(pos=xyz, color=colors)
        self.trajectory.visible = True

    def set_predicted_actions(self, xyz: np.ndarray | None) -> None:
        """Predicted action chunk positions (H,3), drawn as an orange polyline."""
        if xyz is None or len(xyz) < 1:
            self.predicted.visible = False
            return
        xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
        if len(xyz) == 1:
            xyz = np.repeat(xyz, 2, axis=0)
        self.predicted.set_data(pos=xyz)
        self.predicted.visible = True

    def set_keypoint(self, xyz: np.ndarray | Sequence[float] | None) -> None:
        """One predicted 3D point (e.g. the action expert's grasp keypoint), a magenta diamond."""
        if xyz is None or not np.all(np.isfinite(np.asarray(xyz, float))):
            self.keypoint_marker.visible = False
            return
        p = np.asarray(xyz, np.float32).reshape(1, 3)
        self.keypoint_marker.set_data(p, size=16, symbol="diamond", edge_width=2,
                                      face_color=style.hex_to_rgbf(style.PREDICTED), edge_color=(1, 1, 1, 1))
        self.keypoint_marker.visible = True

    def set_waypoints(self, xyz: np.ndarray | Sequence[Sequence[float]] | None) -> None:
        """Keyframe waypoints (K,3). Does not emit ``waypointsChanged`` (only user edits do)."""
        pts = np.zeros((0, 3)) if xyz is None else np.asarray(xyz, float).reshape(-1, 3)
        self._waypoints = [p.copy() for p in pts]
        self._update_waypoint_visuals()

    def waypoints(self) -> list[np.ndarray]:
        return [p.copy() for p in self._waypoints]

    def set_spline_fn(self, fn: SplineFn) -> None:
        """Curve builder (K,3) → (M,3); policies/waypoints.py supplies the policy's own."""
        self.spline_fn = fn
        self._update_waypoint_visuals()

    def set_crop(self, lo: Sequence[float], hi: Sequence[float], *, emit: bool = True) -> None:
        lo = np.asarray(lo, float).reshape(3)
        hi = np.asarray(hi, float).reshape(3)
        if np.any(lo >= hi):
            raise ValueError(f"crop box needs lo < hi on every axis, got lo={lo} hi={hi}")
        changed = not (np.allclose(lo, self._crop_lo) and np.allclose(hi, self._crop_hi))
        self._crop_lo, self._crop_hi = lo, hi
        self._update_crop_visual()
        if changed and emit:
            self.cropChanged.emit(lo.copy(), hi.copy())

    def crop(self) -> tuple[np.ndarray, np.ndarray]:
        return self._crop_lo.copy(), self._crop_hi.copy()

    def set_crop_visible(self, visible: bool) -> None:
        self.crop_lines.visible = visible
        self.crop_handles.visible = visible

    def set_clip_to_crop(self, on: bool) -> None:
        self.points.set_uniform("u_clip", 1.0 if on else 0.0)
        if self.clip_check.isChecked() != bool(on):
            self.clip_check.setChecked(bool(on))

    def reset_view(self) -> None:
        """Look at the cloud (or the crop box when there is none) from the front-left, above."""
        if len(self._xyz):
            lo = np.percentile(self._xyz, 2, axis=0)
            hi = np.percentile(self._xyz, 98, axis=0)
        else:
            lo, hi = self._crop_lo, self._crop_hi
        cam = self.view.camera
        cam.center = tuple((lo + hi) / 2)
        cam.scale_factor = float(np.linalg.norm(hi - lo)) * 1.1 or 1.0
        cam.elevation, cam.azimuth = 25.0, -60.0
        self.view.camera.view_changed()

    @property
    def lod_active(self) -> bool:
        return self.points.lod_active

    # -- picking ---------------------------------------------------------------------------

    def _scene_to_canvas(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canvas pixel coordinates (N,2) and NDC depth (N,) of base-frame points."""
        tr = self.view.scene.node_transform(self.canvas.scene)
        p = tr.map(np.asarray(xyz, np.float64))
        p = p[:, :3] / p[:, 3:4]
        return p[:, :2], p[:, 2]

    def pick_point(self, canvas_xy: Sequence[float]) -> int | None:
        """Index of the cloud point under a canvas pixel (logical coordinates), or None."""
        if not len(self._xyz):
            return None
        xy, depth = self._scene_to_canvas(self._xyz)
        depth = self._view_depth(self._xyz)
        return pick_nearest_on_screen(xy, depth, canvas_xy, self.PICK_RADIUS_PX)

    def _view_depth(self, xyz: np.ndarray) -> np.ndarray:
        """Distance along the viewing direction; the canvas transform's z is not monotonic
        in depth across vispy versions, the camera's own frame is."""
        cam = self.view.camera
        tr = self.view.scene.node_transform(cam)  # scene → camera (eye) coordinates
        p = tr.map(np.asarray(xyz, np.float64))
        p = p[:, :3] / p[:, 3:4]
        return -p[:, 2] if cam.fov > 0 else p[:, 2]

    def _nearest_handle(self, canvas_xy, points: np.ndarray, radius: float = 10.0) -> int | None:
        if not len(points):
            return None
        xy, _ = self._scene_to_canvas(points)
        d = np.linalg.norm(xy - np.asarray(canvas_xy, float), axis=1)
        i = int(np.argmin(d))
        return i if d[i] <= radius else None

    # -- mouse interaction -----------------------------------------------------------------

    def _on_mouse_press(self, event) -> None:
        pos = event.pos[:2]
        ctrl = any(getattr(m, "name", m) == "Control" for m in event.modifiers)
        wp = self._nearest_handle(pos, np.array(self._waypoints).reshape(-1, 3))
        if event.button == 2 and wp is not None:
            del self._waypoints[wp]
            self._update_waypoint_visuals()
            self._emit_waypoints()
            event.handled = True
            return
        if event.button != 1:
            return
        if ctrl:
            idx = self.pick_point(pos)
            if idx is not None:
                self._waypoints.append(self._xyz[idx].astype(float).copy())
                self._update_waypoint_visuals()
                self._emit_waypoints()
                self.pointPicked.emit(idx, self._xyz[idx].copy())
            event.handled = True
            return
        if wp is not None:
            self._begin_drag(("waypoint", wp))
            event.handled = True
            return
        if self.crop_handles.visible:
            face = self._nearest_handle(pos, box_face_handles(self._crop_lo, self._crop_hi))
            if face is not None:
                self._begin_drag(("crop", face))
                self._drag_anchor = (np.asarray(pos, float), self._crop_lo.copy(),
                                     self._crop_hi.copy())
                event.handled = True

    def _begin_drag(self, what: tuple[str, int]) -> None:
        self._drag = what
        # The camera sees the same events; without this the view would orbit while editing.
        self.view.camera.interactive = False

    def _on_mouse_move(self, event) -> None:
        if self._drag is None:
            return
        kind, i = self._drag
        pos = np.asarray(event.pos[:2], float)
        if kind == "waypoint":
            idx = self.pick_point(pos)
            if idx is not None:
                self._waypoints[i] = self._xyz[idx].astype(float).copy()
                self._update_waypoint_visuals()
        else:
            self._drag_crop_face(i, pos)
        event.handled = True

    def _drag_crop_face(self, face: int, pos: np.ndarray) -> None:
        start, lo0, hi0 = self._drag_anchor
        axis, upper = divmod(face, 2)
        handle = box_face_handles(lo0, hi0)[face]
        step = np.zeros(3)
        step[axis] = 0.1
        (a, b), _ = self._scene_to_canvas(np.array([handle, handle + step]))
        direction = b - a
        norm2 = float(direction @ direction)
        if norm2 < 1e-6:   # the axis points at the camera: no visible direction to drag along
            return
        metres = float((pos - start) @ direction) / norm2 * 0.1
        lo, hi = lo0.copy(), hi0.copy()
        if upper:
            hi[axis] = max(hi0[axis] + metres, lo[axis] + 0.01)
        else:
            lo[axis] = min(lo0[axis] + metres, hi[axis] - 0.01)
        self._crop_lo, self._crop_hi = lo, hi
        self._update_crop_visual()

    def _on_mouse_release(self, event) -> None:
        if self._drag is None:
            return
        kind, _ = self._drag
        self._drag = None
        self._drag_anchor = None
        self.view.camera.interactive = True
        if kind == "waypoint":
            self._emit_waypoints()
        else:
            self.cropChanged.emit(self._crop_lo.copy(), self._crop_hi.copy())
        event.handled = True

    def _emit_waypoints(self) -> None:
        self.waypointsChanged.emit(self.waypoints())

    # -- level of detail -------------------------------------------------------------------

    def _moving(self) -> bool:
        return self._rest_timer.isActive()

    def _start_lod_build(self) -> None:
        """Voxel subset of the current cloud on a worker thread; one build at a time, and a
        build for a cloud that has since been replaced is dropped when it lands."""
        if self.lod_kind != "stride":
            return
        if self._lod_thread is not None and self._lod_thread.is_alive():
            # The running build is for an older cloud: try again once it has had time to end.
            self._lod_build_timer.start(self.LOD_BUILD_DELAY_MS)
            return
        gen, xyz, target = self._cloud_gen, self._xyz, self.lod_points
        built = self._lodBuilt

        def work() -> None:
            t = time.perf_counter()
            # voxel_decimate lands within ±25 % of what it is asked for: ask low enough that the
            # moving frame never draws more than lod_points.
            idx = voxel_decimate(xyz, int(target / 1.25))
            self.lod_build_ms = (time.perf_counter() - t) * 1000
            self.lod_build_thread = threading.get_ident()
            try:
                built.emit(gen, idx)
            except RuntimeError:   # the view was deleted while this ran: nobody to tell
                pass

        self._lod_thread = threading.Thread(target=work, name="pointcloud-lod", daemon=True)
        self._lod_thread.start()

    def _on_lod_built(self, gen: int, idx: np.ndarray) -> None:
        if gen != self._cloud_gen or self.lod_kind != "stride":
            return
        self.points.set_lod_data(np.ascontiguousarray(self._data[idx]))
        self.lod_kind = "voxel"
        self.lodReady.emit("voxel")
        if self.points.lod_active:
            self.canvas.update()

    def wait_lod(self, timeout: float = 5.0) -> bool:
        """Block (processing events) until the voxel subset of the current cloud is in; for
        benchmarks and tests. True when it is (or the cloud is small enough to need none)."""
        end = time.monotonic() + timeout
        app = QtWidgets.QApplication.instance()
        if self.lod_kind == "stride" and self._lod_build_timer.isActive():
            self._lod_build_timer.stop()
            self._start_lod_build()
        while self.lod_kind == "stride" and time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.AllEvents, 10)
            time.sleep(0.002)
        return self.lod_kind != "stride"

    def rest_delay_ms(self) -> int:
        """How long the camera must be still before the full cloud returns: LOD_REST_MS, or
        1.5 frames when frames are slower than that (a loaded box). Otherwise the timer runs out
        between two moves of one drag, and every other frame of the drag draws the full cloud."""
        gaps = np.diff(self._fps_times[-4:])
        gaps = gaps[gaps < 1.0]          # a pause between two drags is no frame time
        frame_ms = float(np.median(gaps)) * 1000 if len(gaps) else 0.0
        return int(min(max(self.LOD_REST_MS, 1.5 * frame_ms), 1000))

    def _on_camera_moved(self, event=None) -> None:
        # No decimation here: the subset is already uploaded, so a move costs one buffer switch.
        if self.lod_kind != "none":
            self.points.use_lod(True)
        self._rest_timer.start(self.rest_delay_ms())

    def _on_camera_rest(self) -> None:
        self.points.use_lod(False)
        self.canvas.update()

    # -- visuals refresh -------------------------------------------------------------------

    def _update_waypoint_visuals(self) -> None:
        pts = np.array(self._waypoints, float).reshape(-1, 3)
        if len(pts):
            self.waypoint_markers.set_data(pts.astype(np.float32), size=13, edge_width=2,
                                           face_color=style.hex_to_rgbf(style.ACCENT),
                                           edge_color="white", symbol="disc")
        self.waypoint_markers.visible = len(pts) > 0
        curve = self.spline_fn(pts) if len(pts) >= 2 else np.zeros((0, 3))
        curve = np.asarray(curve, np.float32).reshape(-1, 3)
        if len(curve) >= 2:
            self.spline.set_data(pos=curve)
        self.spline.visible = len(curve) >= 2
        self.canvas.update()

    def _update_crop_visual(self) -> None:
        self.crop_lines.set_data(pos=box_edges(self._crop_lo, self._crop_hi).astype(np.float32))
        self.crop_handles.set_data(box_face_handles(self._crop_lo, self._crop_hi).astype(np.float32),
                                   size=9, symbol="square", edge_width=1,
                                   face_color=style.hex_to_rgbf("#e5c07b"), edge_color="black")
        self.points.set_uniform("u_crop_lo", tuple(self._crop_lo.astype(float)))
        self.points.set_uniform("u_crop_hi", tuple(self._crop_hi.astype(float)))
        for spin, value in zip(self.crop_spins, np.r_[self._crop_lo, self._crop_hi]):
            if abs(spin.value() - value) > 1e-9:
                spin.blockSignals(True)
                spin.setValue(float(value))
                spin.blockSignals(False)
        self.canvas.update()

    def _on_crop_spin(self, _value: float) -> None:
        vals = np.array([s.value() for s in self.crop_spins])
        lo, hi = vals[:3], vals[3:]
        if np.any(lo >= hi):
            # Keep the last valid box; the spin shows the user's number until they fix the other.
            return
        self.set_crop(lo, hi)

    def _on_draw(self, event) -> None:
        self._fps_times.append(time.perf_counter())
        del self._fps_times[:-30]

    def measured_fps(self) -> float:
        """Draw rate over the last second (0 when idle)."""
        now = time.perf_counter()
        recent = [t for t in self._fps_times if now - t < 1.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def _update_hud(self) -> None:
        n = len(self._xyz)
        lod = f" · LOD {self.points.drawn_points:,}" if self.points.lod_active else ""
        fps = self.measured_fps()
        rate = f" · {fps:.0f} fps" if fps else ""
        text = f"{n:,} pts{lod}{rate}".replace(",", " ")
        if self.hud.text() != text:
            self.hud.setText(text)
            self.hud.adjustSize()
