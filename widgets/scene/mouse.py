"""Mouse bindings of the 3D view as plain functions over a SceneModel and a Projector: no Qt, no
GL, so each gesture is unit-tested with a fake projector (tests/test_scene_model.py).

Gestures (orbit, pan and zoom stay vispy's TurntableCamera's: left-drag, shift/middle-drag, wheel):
  ctrl+left click on the cloud  → add a waypoint snapped to the point under the cursor
  left-drag a waypoint          → move it over the cloud (committed on release)
  right click on a waypoint     → remove it
  left-drag a crop face handle  → move that face along its axis (committed on release)

The widget feeds vispy's mouse events in (``press``/``move``/``release``) and, while a ``Drag`` is
held, switches the camera off so the view does not orbit under an edit.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from widgets.scene.geometry import box_face_handles, pick_nearest_on_screen
from widgets.scene.model import SceneModel

HANDLE_RADIUS_PX = 10.0
PICK_RADIUS_PX = 8.0
MIN_CROP_M = 0.01   # a dragged face stops this short of the opposite one


class Projector(Protocol):
    """Scene (base frame, metres) → canvas pixels of the current camera."""

    def to_canvas(self, xyz: np.ndarray) -> np.ndarray:
        """(N,3) → (N,2) logical canvas pixels."""

    def view_depth(self, xyz: np.ndarray) -> np.ndarray:
        """(N,3) → (N,) distance along the viewing direction (larger is farther)."""


@dataclass
class Drag:
    kind: str                     # "waypoint" | "crop"
    index: int                    # waypoint index or crop face (-x, +x, -y, +y, -z, +z)
    start: np.ndarray | None = None   # crop: press position and the box then
    lo0: np.ndarray | None = None
    hi0: np.ndarray | None = None


@dataclass
class Press:
    handled: bool = False
    drag: Drag | None = None
    picked: int | None = None     # index of the cloud point a ctrl+click snapped to


def pick_point(model: SceneModel, proj: Projector, pos: Sequence[float],
               radius_px: float = PICK_RADIUS_PX) -> int | None:
    """Index of the cloud point drawn under a canvas pixel, or None."""
    xyz = model.xyz
    if not len(xyz):
        return None
    return pick_nearest_on_screen(proj.to_canvas(xyz), proj.view_depth(xyz), pos, radius_px)


def nearest_handle(proj: Projector, pos: Sequence[float], points: np.ndarray,
                   radius_px: float = HANDLE_RADIUS_PX) -> int | None:
    """Index of the handle (waypoint, crop face) within ``radius_px`` of ``pos`` on screen."""
    points = np.asarray(points, float).reshape(-1, 3)
    if not len(points):
        return None
    d = np.linalg.norm(proj.to_canvas(points) - np.asarray(pos, float), axis=1)
    i = int(np.argmin(d))
    return i if d[i] <= radius_px else None


def press(model: SceneModel, proj: Projector, pos: Sequence[float], button: int, ctrl: bool,
          crop_editable: bool) -> Press:
    """A mouse button went down at ``pos`` (1 left, 2 right). Edits the model for clicks and
    returns the drag to hold for drags; ``handled`` False leaves the event to the camera."""
    wp = nearest_handle(proj, pos, np.array(model.waypoints()).reshape(-1, 3))
    if button == 2 and wp is not None:
        model.remove_waypoint(wp)
        model.commit_waypoints()
        return Press(handled=True)
    if button != 1:
        return Press()
    if ctrl:
        idx = pick_point(model, proj, pos)
        if idx is not None:
            model.add_waypoint(model.xyz[idx].astype(float))
            model.commit_waypoints()
        return Press(handled=True, picked=idx)
    if wp is not None:
        return Press(handled=True, drag=Drag("waypoint", wp))
    if crop_editable:
        face = nearest_handle(proj, pos, box_face_handles(model.crop_lo, model.crop_hi))
        if face is not None:
            lo, hi = model.crop()
            return Press(handled=True, drag=Drag("crop", face, np.asarray(pos, float), lo, hi))
    return Press()


def move(model: SceneModel, proj: Projector, drag: Drag | None, pos: Sequence[float]) -> bool:
    """The mouse moved while ``drag`` is held: follow it live (nothing committed yet)."""
    if drag is None:
        return False
    if drag.kind == "waypoint":
        idx = pick_point(model, proj, pos)
        if idx is not None:
            model.move_waypoint(drag.index, model.xyz[idx].astype(float))
    else:
        box = dragged_crop(proj, drag, pos)
        if box is not None:
            model.set_crop(*box, commit=False)
    return True


def release(model: SceneModel, drag: Drag | None) -> bool:
    """The button came up: commit what the drag changed."""
    if drag is None:
        return False
    if drag.kind == "waypoint":
        model.commit_waypoints()
    else:
        model.commit_crop()
    return True


def dragged_crop(proj: Projector, drag: Drag, pos: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """The crop box after dragging face ``drag.index`` from ``drag.start`` to ``pos``: the mouse
    motion projected onto the face's axis as drawn on screen. None when that axis points at the
    camera (no visible direction to drag along)."""
    axis, upper = divmod(drag.index, 2)
    handle = box_face_handles(drag.lo0, drag.hi0)[drag.index]
    step = np.zeros(3)
    step[axis] = 0.1
    a, b = proj.to_canvas(np.array([handle, handle + step]))
    direction = b - a
    norm2 = float(direction @ direction)
    if norm2 < 1e-6:
        return None
    metres = float((np.asarray(pos, float) - drag.start) @ direction) / norm2 * 0.1
    lo, hi = drag.lo0.copy(), drag.hi0.copy()
    if upper:
        hi[axis] = max(drag.hi0[axis] + metres, lo[axis] + MIN_CROP_M)
    else:
        lo[axis] = min(drag.lo0[axis] + metres, hi[axis] - MIN_CROP_M)
    return lo, hi
