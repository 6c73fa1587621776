"""What the 3D view shows, without Qt or GL: the cloud, the editable waypoints and the curve through
them, the predicted chunk and keypoint, the end-effector trajectory, the crop box and the display
settings (colour mode, point size, clip to crop).

Split off as napari splits a layer's data from its vispy visual: the model only holds state and
emits an event for each change; ``widgets/scene/layer.py`` listens and pushes the data to GL, the
widget maps a few events to Qt signals, and the mouse bindings (``widgets/scene/mouse.py``) edit
the model. Everything here runs (and is tested) without a display.

Two kinds of waypoint/crop events: ``waypoints`` / ``crop`` fire on every change (the visuals
follow a drag live), ``waypoints_committed`` / ``crop_committed`` only when a user edit is done
(the owner saves then; a programmatic ``set_waypoints`` commits nothing).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from widgets.scene.geometry import PreparedCloud, SplineFn, policy_curve, prepare_cloud

COLOR_MODES = ("rgb", "height")
DEFAULT_CROP = (np.array([-0.2, -0.5, -0.05]), np.array([1.0, 0.5, 0.6]))


class Event:
    """A list of callbacks called in connection order with the event's arguments (a plain,
    thread-unaware stand-in for a Qt signal, so the model needs no QObject)."""

    def __init__(self, name: str):
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> None:
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable[..., Any]) -> None:
        self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for cb in list(self._callbacks):
            cb(*args)


class SceneEvents:
    """One ``Event`` per kind of change; see SceneModel for each one's arguments."""

    NAMES = ("cloud", "waypoints", "waypoints_committed", "curve", "chunk", "keypoint", "trajectory",
             "crop", "crop_committed", "color_mode", "point_size", "clip_to_crop")

    def __init__(self):
        for name in self.NAMES:
            setattr(self, name, Event(name))


def _points(xyz: Any) -> np.ndarray:
    return np.zeros((0, 3)) if xyz is None else np.asarray(xyz, float).reshape(-1, 3)


class SceneModel:
    """State of the 3D view. Events and their arguments:

    cloud(PreparedCloud) · waypoints(list[(3,)]) · waypoints_committed(list[(3,)]) · curve((M,3)) ·
    chunk((H,3) | None) · keypoint((3,) | None) · trajectory((T,3) | None) · crop(lo, hi) ·
    crop_committed(lo, hi) · color_mode(str) · point_size(float) · clip_to_crop(bool)
    """

    def __init__(self, *, lod_points: int = 50_000, spline_fn: SplineFn | None = None):
        self.events = SceneEvents()
        self.lod_points = int(lod_points)
        self.spline_fn: SplineFn = spline_fn or policy_curve
        self.cloud = prepare_cloud(np.zeros((0, 3)), None, self.lod_points)
        self.cloud_gen = 0            # bumped per cloud: a LOD build for an older one is dropped
        self._waypoints: list[np.ndarray] = []
        self.curve = np.zeros((0, 3), np.float32)
        self.chunk: np.ndarray | None = None
        self.keypoint: np.ndarray | None = None
        self.trajectory: np.ndarray | None = None
        self.crop_lo, self.crop_hi = DEFAULT_CROP[0].copy(), DEFAULT_CROP[1].copy()
        self.color_mode = "rgb"
        self.point_size = 2.0
        self.clip_to_crop = False

    # -- cloud ------------------------------------------------------------------------------

    @property
    def xyz(self) -> np.ndarray:
        """(N,3) float32 view of the current cloud (finite points only)."""
        return self.cloud.data[:, :3]

    def set_cloud(self, xyz: np.ndarray | PreparedCloud, rgb: np.ndarray | None = None) -> PreparedCloud:
        cloud = xyz if isinstance(xyz, PreparedCloud) else prepare_cloud(xyz, rgb, self.lod_points)
        self.cloud = cloud
        self.cloud_gen += 1
        self.events.cloud.emit(cloud)
        return cloud

    # -- waypoints and the curve through them -----------------------------------------------

    def waypoints(self) -> list[np.ndarray]:
        return [p.copy() for p in self._waypoints]

    def set_waypoints(self, xyz: np.ndarray | Sequence[Sequence[float]] | None) -> None:
        """Programmatic: emits ``waypoints`` and ``curve``, not ``waypoints_committed``."""
        self._waypoints = [p.copy() for p in _points(xyz)]
        self._waypoints_changed()

    def add_waypoint(self, p: Sequence[float]) -> None:
        self._waypoints.append(np.asarray(p, float).reshape(3).copy())
        self._waypoints_changed()

    def move_waypoint(self, i: int, p: Sequence[float]) -> None:
        self._waypoints[i] = np.asarray(p, float).reshape(3).copy()
        self._waypoints_changed()

    def remove_waypoint(self, i: int) -> None:
        del self._waypoints[i]
        self._waypoints_changed()

    def commit_waypoints(self) -> None:
        """A user edit is done: tell the owner (it saves, re-plans)."""
        self.events.waypoints_committed.emit(self.waypoints())

    def set_spline_fn(self, fn: SplineFn) -> None:
        """Curve builder (K,3) → (M,3); policies/waypoints.py supplies the policy's own."""
        self.spline_fn = fn
        self._update_curve()

    def _waypoints_changed(self) -> None:
        self.events.waypoints.emit(self.waypoints())
        self._update_curve()

    def _update_curve(self) -> None:
        pts = np.array(self._waypoints, float).reshape(-1, 3)
        curve = self.spline_fn(pts) if len(pts) >= 2 else np.zeros((0, 3))
        self.curve = np.asarray(curve, np.float32).reshape(-1, 3)
        self.events.curve.emit(self.curve)

    # -- predictions and the executed path ----------------------------------------------------

    def set_chunk(self, xyz: np.ndarray | None) -> None:
        """Predicted action chunk positions (H,3); None or empty hides it."""
        self.chunk = None if xyz is None or len(xyz) < 1 else np.asarray(xyz, np.float32).reshape(-1, 3)
        self.events.chunk.emit(self.chunk)

    def set_keypoint(self, xyz: np.ndarray | Sequence[float] | None) -> None:
        """One predicted 3D point; None or a non-finite one hides it."""
        ok = xyz is not None and np.all(np.isfinite(np.asarray(xyz, float)))
        self.keypoint = np.asarray(xyz, np.float32).reshape(3) if ok else None
        self.events.keypoint.emit(self.keypoint)

    def set_trajectory(self, xyz: np.ndarray | None) -> None:
        """End-effector path (T,3); fewer than two points hides it."""
        self.trajectory = None if xyz is None or len(xyz) < 2 else np.asarray(xyz, np.float32).reshape(-1, 3)
        self.events.trajectory.emit(self.trajectory)

    # -- crop box ---------------------------------------------------------------------------

    def crop(self) -> tuple[np.ndarray, np.ndarray]:
        return self.crop_lo.copy(), self.crop_hi.copy()

    def set_crop(self, lo: Sequence[float], hi: Sequence[float], *, commit: bool = True) -> bool:
        """Replace the box (lo < hi on every axis, else ValueError and nothing changes). Emits
        ``crop``; also ``crop_committed`` when ``commit`` and the box really changed. Returns
        whether it changed."""
        lo = np.asarray(lo, float).reshape(3)
        hi = np.asarray(hi, float).reshape(3)
        if np.any(lo >= hi):
            raise ValueError(f"crop box needs lo < hi on every axis, got lo={lo} hi={hi}")
        changed = not (np.allclose(lo, self.crop_lo) and np.allclose(hi, self.crop_hi))
        self.crop_lo, self.crop_hi = lo, hi
        self.events.crop.emit(lo.copy(), hi.copy())
        if changed and commit:
            self.commit_crop()
        return changed

    def commit_crop(self) -> None:
        self.events.crop_committed.emit(self.crop_lo.copy(), self.crop_hi.copy())

    # -- display settings -------------------------------------------------------------------

    def set_color_mode(self, mode: str) -> None:
        if mode not in COLOR_MODES:
            raise ValueError(f"colour mode must be 'rgb' or 'height', got {mode!r}")
        self.color_mode = mode
        self.events.color_mode.emit(mode)

    def set_point_size(self, size: float) -> None:
        size = float(size)
        if not np.isfinite(size) or size <= 0:
            raise ValueError(f"point size must be a positive number of pixels, got {size!r}")
        self.point_size = size
        self.events.point_size.emit(size)

    def set_clip_to_crop(self, on: bool) -> None:
        self.clip_to_crop = bool(on)
        self.events.clip_to_crop.emit(self.clip_to_crop)
