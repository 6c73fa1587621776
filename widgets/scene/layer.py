"""The vispy side of the 3D view: visual nodes that listen to a SceneModel and push its data to GL.

Nothing here decides anything: each model event maps to one ``set_data`` / uniform / visibility
change (napari's layer → vispy-layer split). The widget owns the canvas and camera.

Why a custom point visual: on software GL (llvmpipe, the only GL on the lab's headless boxes and
on many laptops without drivers) vispy's Markers cost 244 ms at 300 k points, a bare GL_POINTS
program 55 ms (DESIGN.md). ``LeanPointsVisual`` is that bare program: square points, no edges, one
interleaved float buffer (xyz + RGB packed into one float), colour-by-height done in the shader
so switching modes uploads nothing. It holds a full and a level-of-detail buffer; which one is
drawn is the LOD scheduler's call (widgets/scene/lod.py).
"""
from __future__ import annotations

import numpy as np
from vispy import gloo, scene
from vispy.scene import visuals as svisuals
from vispy.visuals import Visual

from widgets import style
from widgets.scene.geometry import PreparedCloud, box_edges, box_face_handles
from widgets.scene.model import SceneModel

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


class SceneLayer:
    """All visual nodes of the view under ``parent`` (a ViewBox scene), kept in step with ``model``."""

    def __init__(self, model: SceneModel, parent):
        self.model = model
        self.points = LeanPoints(parent=parent)
        # Table-plane grid (z = 0 in the base frame): 10 cm spacing, 1.6 m square.
        ticks = np.arange(-0.8, 0.8001, 0.1)
        segs = []
        for t in ticks:
            segs += [[t, -0.8, 0], [t, 0.8, 0], [-0.8, t, 0], [0.8, t, 0]]
        self.grid = svisuals.Line(np.array(segs), connect="segments",
                                  color=style.hex_to_rgbf(style.GRID, 0.6), parent=parent)
        self.axes = svisuals.XYZAxis(parent=parent, width=2)
        self.axes.transform = scene.STTransform(scale=(0.15, 0.15, 0.15))
        self.trajectory = svisuals.Line(width=2.0, parent=parent)
        self.trajectory.visible = False
        self.predicted = svisuals.Line(width=3.0, color=style.hex_to_rgbf(style.WARNING), parent=parent)
        self.predicted.visible = False
        self.spline = svisuals.Line(width=2.5, color=style.hex_to_rgbf(style.ACCENT), parent=parent)
        self.spline.visible = False
        self.waypoint_markers = svisuals.Markers(parent=parent)
        self.waypoint_markers.visible = False
        self.keypoint_marker = svisuals.Markers(parent=parent)
        self.keypoint_marker.visible = False
        self.crop_lines = svisuals.Line(connect="segments", width=1.5,
                                        color=style.hex_to_rgbf("#e5c07b", 0.9), parent=parent)
        self.crop_handles = svisuals.Markers(parent=parent)
        for node in (self.trajectory, self.predicted, self.spline, self.waypoint_markers,
                     self.keypoint_marker, self.crop_handles):
            # Drawn on top of the cloud: the user must see what they edit.
            node.set_gl_state("translucent", depth_test=False)
            node.order = 10

        ev = model.events
        ev.cloud.connect(self._on_cloud)
        ev.waypoints.connect(self._on_waypoints)
        ev.curve.connect(self._on_curve)
        ev.chunk.connect(self._on_chunk)
        ev.keypoint.connect(self._on_keypoint)
        ev.trajectory.connect(self._on_trajectory)
        ev.crop.connect(self._on_crop)
        ev.color_mode.connect(lambda mode: self.points.set_uniform("u_mode", 0.0 if mode == "rgb" else 1.0))
        ev.point_size.connect(lambda size: self.points.set_uniform("u_size", float(size)))
        ev.clip_to_crop.connect(lambda on: self.points.set_uniform("u_clip", 1.0 if on else 0.0))
        self._on_crop(model.crop_lo, model.crop_hi)

    def set_crop_visible(self, visible: bool) -> None:
        self.crop_lines.visible = visible
        self.crop_handles.visible = visible

    def _on_cloud(self, cloud: PreparedCloud) -> None:
        # Full buffer only: the moving subset is the LOD scheduler's (it follows the same event).
        self.points.set_data(cloud.data, cloud.bounds)
        if len(cloud):
            self.points.set_uniform("u_zrange", cloud.zrange)

    def _on_waypoints(self, pts: list) -> None:
        pts = np.array(pts, np.float32).reshape(-1, 3)
        if len(pts):
            self.waypoint_markers.set_data(pts, size=13, edge_width=2,
                                           face_color=style.hex_to_rgbf(style.ACCENT),
                                           edge_color="white", symbol="disc")
        self.waypoint_markers.visible = len(pts) > 0

    def _on_curve(self, curve: np.ndarray) -> None:
        if len(curve) >= 2:
            self.spline.set_data(pos=curve)
        self.spline.visible = len(curve) >= 2
        self.spline.update()

    def _on_chunk(self, xyz: np.ndarray | None) -> None:
        if xyz is None:
            self.predicted.visible = False
            return
        if len(xyz) == 1:
            xyz = np.repeat(xyz, 2, axis=0)
        self.predicted.set_data(pos=xyz)
        self.predicted.visible = True

    def _on_keypoint(self, p: np.ndarray | None) -> None:
        if p is None:
            self.keypoint_marker.visible = False
            return
        self.keypoint_marker.set_data(p.reshape(1, 3), size=16, symbol="diamond", edge_width=2,
                                      face_color=style.hex_to_rgbf(style.PREDICTED), edge_color=(1, 1, 1, 1))
        self.keypoint_marker.visible = True

    def _on_trajectory(self, xyz: np.ndarray | None) -> None:
        if xyz is None:
            self.trajectory.visible = False
            return
        t = np.linspace(0.25, 1.0, len(xyz))[:, None]
        colors = np.hstack([0.44 * t, 0.82 * t, 0.55 * t, np.ones_like(t)])
        self.trajectory.set_data(pos=xyz, color=colors)
        self.trajectory.visible = True

    def _on_crop(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.crop_lines.set_data(pos=box_edges(lo, hi).astype(np.float32))
        self.crop_handles.set_data(box_face_handles(lo, hi).astype(np.float32),
                                   size=9, symbol="square", edge_width=1,
                                   face_color=style.hex_to_rgbf("#e5c07b"), edge_color="black")
        self.points.set_uniform("u_crop_lo", tuple(np.asarray(lo, float)))
        self.points.set_uniform("u_crop_hi", tuple(np.asarray(hi, float)))
