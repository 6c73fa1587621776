"""The "3D" page of the Collect and Annotate tabs: a PointCloudView fed from RGB-D frames.

Back-projecting a 640×480 frame costs tens of ms on these 2 cores, so it never runs on the UI
thread: one worker thread holds a single "latest wins" slot (a frame arriving while it works
replaces the waiting one, never queues) and starts at most ``max_rate_hz`` conversions a second.
The cloud is cut to the view's crop box, so dragging the box re-crops the next cloud.

Waypoints are the EE positions at the episode's keyframes and the curve through them is the
policy's own ``WaypointTrajectory``, so what is shown is what a waypoint-guided policy would follow.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PySide6 import QtCore, QtWidgets

from policies.geometry import crop, depth_to_points
from policies.waypoints import DemoKeyframeSource, Waypoint, WaypointTrajectory, trajectory_curve
from widgets import style

PREDICTED_RGBA = style.hex_to_rgbf(style.PREDICTED)

# --------------------------------------------------------------------------------------------
# Pure parts (no Qt, no GL)
# --------------------------------------------------------------------------------------------


def frame_to_cloud(depth: np.ndarray, rgb: np.ndarray | None, depth_scale: float, K: np.ndarray,
                   T_base_camera: np.ndarray, lo: Sequence[float] | None = None,
                   hi: Sequence[float] | None = None, stride: int = 2) -> tuple[np.ndarray, np.ndarray | None]:
    """Depth (+rgb) → base-frame cloud cut to [lo, hi]: xyz (N,3) float32 and rgb (N,3) uint8 or None."""
    if rgb is not None and np.asarray(rgb).shape[:2] != np.asarray(depth).shape:
        raise ValueError(f"rgb {np.asarray(rgb).shape} and depth {np.asarray(depth).shape} are not aligned")
    pts = depth_to_points(depth, depth_scale, K, T_base_camera, rgb=rgb, stride=stride)
    if lo is not None and hi is not None:
        pts = crop(pts, lo, hi)
    xyz = np.ascontiguousarray(pts[:, :3], dtype=np.float32)
    colours = None if rgb is None else np.clip(pts[:, 3:6] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return xyz, colours


def episode_waypoints(episode: Any) -> list[Waypoint]:
    """Waypoints at the episode's keyframes (+ first and last frame), as the demo policy source makes them.

    ``episode``: anything with ``time``, ``ee_pose``, ``gripper`` and ``keyframes`` (e.g. the
    Annotate controller's EpisodeData, whose keyframes are (frame, kind) tuples).
    """
    return DemoKeyframeSource(episode).waypoints()


def waypoint_spline_fn(waypoints: Sequence[Waypoint], samples: int = 200) -> Callable[[np.ndarray], np.ndarray]:
    """A PointCloudView spline_fn (K,3) → (M,3) through ``WaypointTrajectory``.

    The view edits positions only: while the count matches ``waypoints`` each point keeps its
    waypoint's orientation, gripper and recorded time; after an add/remove, orientation and gripper
    come from the nearest original and times are derived from distance (the policy's default).
    """
    ref = list(waypoints)
    ref_xyz = np.array([w.pose[:3] for w in ref]) if ref else np.zeros((0, 3))

    def fn(xyz: np.ndarray) -> np.ndarray:
        xyz = np.asarray(xyz, float).reshape(-1, 3)
        if len(xyz) < 2:
            return np.zeros((0, 3))
        if len(xyz) == len(ref):
            wps = [Waypoint(np.r_[p, w.pose[3:]], w.gripper, t=w.t) for p, w in zip(xyz, ref)]
        else:
            wps = []
            for p in xyz:
                w = ref[int(np.argmin(np.linalg.norm(ref_xyz - p, axis=1)))] if ref else None
                quat = w.pose[3:] if w is not None else np.array([0.0, 0.0, 0.0, 1.0])
                wps.append(Waypoint(np.r_[p, quat], w.gripper if w is not None else 1.0))
        try:
            traj = WaypointTrajectory(wps)
        except ValueError:
            return np.zeros((0, 3))   # e.g. two keyframes at the same time: no curve rather than an error
        return trajectory_curve(traj, samples)

    return fn


class TrailBuffer:
    """EE positions of the last ``seconds`` (by their own stamps), for the live trail."""

    def __init__(self, seconds: float = 10.0):
        self.seconds = float(seconds)
        self._items: deque[tuple[float, np.ndarray]] = deque()

    def add(self, stamp: float, xyz: Sequence[float]) -> None:
        p = np.asarray(xyz, float).reshape(-1)[:3]
        if not np.all(np.isfinite(p)):
            return
        if self._items and stamp <= self._items[-1][0]:
            return   # the same tick seen again (frames arrive faster than control ticks)
        self._items.append((float(stamp), p))
        while self._items and self._items[0][0] < stamp - self.seconds:
            self._items.popleft()

    def clear(self) -> None:
        self._items.clear()

    def points(self) -> np.ndarray:
        return np.array([p for _, p in self._items]) if self._items else np.zeros((0, 3))


def episode_camera(path: str | Path) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(K, T_base_camera, depth_scale) stored in an episode file, or None when it has no camera."""
    from recorder.episode import EpisodeReader

    with EpisodeReader(path) as r:
        cam = r.camera
        if cam is None:
            return None
        return np.asarray(cam.K, float), np.asarray(cam.T_base_camera, float), float(cam.depth_scale)


# --------------------------------------------------------------------------------------------
# Worker: latest-wins conversion off the UI thread
# --------------------------------------------------------------------------------------------


@dataclass
class CloudRequest:
    depth: np.ndarray
    rgb: np.ndarray | None
    depth_scale: float
    K: np.ndarray
    T_base_camera: np.ndarray
    key: Any = None   # frame index, echoed back with the cloud


class CloudWorker(QtCore.QObject):
    """One daemon thread, one pending slot; results come back as a (queued) Qt signal."""

    cloudReady = QtCore.Signal(object, object, object)   # xyz, rgb, key
    failed = QtCore.Signal(str)

    def __init__(self, stride: int = 2, max_rate_hz: float = 5.0, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.stride = int(stride)
        self.min_interval = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0
        self._cond = threading.Condition()
        self._pending: tuple[CloudRequest, np.ndarray, np.ndarray] | None = None
        self._stop = False
        self.converted = 0   # conversions done (tests and the rate check read it)
        self.replaced = 0    # requests dropped because a newer one came first
        # (xyz, rgb) → what cloudReady carries instead of xyz (rgb then None); run on this thread
        # so the UI thread does not pack the cloud (PointCloudView's prepare_cloud).
        self.prepare: Callable[[np.ndarray, np.ndarray | None], Any] | None = None
        self._thread = threading.Thread(target=self._run, name="scene3d-cloud", daemon=True)
        self._thread.start()

    def submit(self, req: CloudRequest, lo: np.ndarray, hi: np.ndarray) -> None:
        with self._cond:
            if self._pending is not None:
                self.replaced += 1
            self._pending = (req, np.array(lo, float), np.array(hi, float))
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        last = -np.inf
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            # Rate cap: wait outside the lock so newer frames can still replace the pending one.
            wait = last + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self._cond:
                if self._stop:
                    return
                job, self._pending = self._pending, None
            last = time.monotonic()
            req, lo, hi = job
            try:
                xyz, rgb = frame_to_cloud(req.depth, req.rgb, req.depth_scale, req.K, req.T_base_camera,
                                          lo, hi, stride=self.stride)
                if self.prepare is not None:
                    xyz, rgb = self.prepare(xyz, rgb), None
            except Exception as exc:   # bad frame → one line in the panel, the thread lives on
                self.failed.emit(f"3D view: {exc}")
                continue
            self.converted += 1
            try:
                self.cloudReady.emit(xyz, rgb, req.key)
            except RuntimeError:   # the panel was deleted while converting: nothing left to show
                return


# --------------------------------------------------------------------------------------------
# Panel
# --------------------------------------------------------------------------------------------


class Scene3DPanel(QtWidgets.QWidget):
    """PointCloudView + off-thread cloud conversion + trajectory/waypoint helpers.

    Needs a GL context (Xvfb + xcb); the tabs create it only when the user opens their "3D" page.
    """

    cloudShown = QtCore.Signal(int, object)   # points drawn, key of the frame they came from

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, stride: int = 2, max_rate_hz: float = 5.0,
                 lod_points: int = 50_000):
        super().__init__(parent)
        from widgets.pointcloud_view import PointCloudView, prepare_cloud   # imports vispy's GL backend

        self.view = PointCloudView(self, lod_points=lod_points)
        self.worker = CloudWorker(stride, max_rate_hz, self)
        self.worker.prepare = lambda xyz, rgb: prepare_cloud(xyz, rgb, self.view.lod_points)
        self.worker.cloudReady.connect(self._on_cloud)
        self.status = QtWidgets.QLabel("")
        self.status.setObjectName("scene3d_status")
        self.worker.failed.connect(self.status.setText)
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.worker.stop)
        self._waypoint_refs: list[Waypoint] = []
        self._predicted_nodes: tuple | None = None
        self._first_cloud = True
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.status)

    # -- clouds -----------------------------------------------------------------------------

    def submit_frame(self, depth: np.ndarray, rgb: np.ndarray | None, depth_scale: float, K: np.ndarray,
                     T_base_camera: np.ndarray, key: Any = None) -> None:
        """Queue a frame for conversion (replaces any frame still waiting); returns at once."""
        lo, hi = self.view.crop()
        self.worker.submit(CloudRequest(depth, rgb, depth_scale, K, T_base_camera, key), lo, hi)

    def submit_rgbd(self, frame) -> None:
        """An ``RGBDFrame`` (robots.base)."""
        self.submit_frame(frame.depth, frame.rgb, frame.depth_scale, frame.K, frame.T_base_camera, frame.index)

    def _on_cloud(self, xyz: np.ndarray, rgb: np.ndarray | None, key: Any) -> None:
        self.view.set_cloud(xyz, rgb)
        self.status.setText("")
        if self._first_cloud and len(xyz):
            self._first_cloud = False
            self.view.reset_view()
        self.cloudShown.emit(len(xyz), key)

    def set_crop(self, lo: Sequence[float], hi: Sequence[float]) -> None:
        self.view.set_crop(lo, hi, emit=False)

    # -- overlays ---------------------------------------------------------------------------

    def set_trajectory(self, xyz: np.ndarray | None) -> None:
        self.view.set_trajectory(None if xyz is None else np.asarray(xyz, float)[:, :3])

    def set_waypoints(self, waypoints: Sequence[Waypoint]) -> None:
        """Show waypoints (their positions) and the policy's spline through them."""
        self._waypoint_refs = list(waypoints)
        self.view.set_spline_fn(waypoint_spline_fn(self._waypoint_refs))
        self.view.set_waypoints(np.array([w.pose[:3] for w in self._waypoint_refs]).reshape(-1, 3))

    def set_predicted_waypoints(self, waypoints: Sequence[Waypoint] | None) -> None:
        """Waypoints from the keypoint predictor (policies.keypoints.PredictedSource) and the spline through
        them, in their own colour so they read apart from the editable keyframe waypoints."""
        from vispy.scene import visuals

        if self._predicted_nodes is None:
            parent = self.view.view.scene
            line = visuals.Line(width=2.5, color=PREDICTED_RGBA, parent=parent)
            markers = visuals.Markers(parent=parent)
            for node in (line, markers):
                node.set_gl_state("translucent", depth_test=False)
                node.order = 11
            self._predicted_nodes = (line, markers)
        line, markers = self._predicted_nodes
        wps = list(waypoints or [])
        if not wps:
            line.visible = markers.visible = False
            return
        pts = np.array([w.pose[:3] for w in wps], np.float32)
        markers.set_data(pts, size=13, edge_width=2, face_color=PREDICTED_RGBA, edge_color=(1, 1, 1, 1), symbol="diamond")
        curve = waypoint_spline_fn(wps)(pts) if len(wps) > 1 else np.repeat(pts, 2, axis=0)
        line.set_data(pos=np.asarray(curve, np.float32))
        line.visible = markers.visible = True

    def show_episode(self, episode: Any) -> None:
        """EE trajectory + keyframe waypoints + spline of an episode (EpisodeData-like)."""
        self.set_trajectory(np.asarray(episode.ee_pose, float))
        self.set_waypoints(episode_waypoints(episode))

    def shutdown(self) -> None:
        self.worker.stop()
