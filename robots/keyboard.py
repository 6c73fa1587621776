"""Keyboard teleop fallback, fed with key names by whoever owns the keyboard (the GUI, a terminal).

No Qt here: the owner calls ``press(key)`` / ``release(key)`` with key names ("w", "Up",
"Key_Space", " " …; case and a "Key_" prefix are ignored) and ``release_all()`` when it loses
focus, since the release of a key held at that moment never arrives. The GUI should drop Qt's
auto-repeat events; repeated presses of a held key are ignored here anyway.

Key map, in the operator frame of ``robots.teleop_mapping`` (operator behind the robot facing
base +x, so W moves the tool away from the operator = base +x):

    W / S        away / toward the operator      base +x / -x
    A / D        left / right                    base +y / -y
    R / F        up / down                       base +z / -z
    Q / E        yaw counter-clockwise / clockwise (seen from above)
    Up / Down    pitch: tool tip tilts away / toward the operator
    Left / Right roll: tool tip tilts left / right
    Space        toggle gripper (buttons["gripper"], True = close)
    Enter        record start/stop (buttons["record"], one read per press)

Opposite keys held together cancel. Keys produce full-scale operator values (±1); the default
mapping scales them to ``speed`` of the arm's maximum velocity and has no deadzone.

Freshness: ``TeleopState.stamp`` is the read time, unless the owner calls ``heartbeat()`` (e.g. a
GUI timer): from then on it is the last heartbeat or key event, so a frozen GUI — which can no
longer deliver a key release — shows up as stale input and the control loop stops the arm.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from robots.base import TeleopState
from robots.teleop_mapping import AXES, PressEvents, TeleopMapping, Toggle

_X, _Y, _Z, _ROLL, _PITCH, _YAW = (AXES.index(a) for a in AXES)

# key -> (operator axis, sign). For the arrows, the tip of a downward-pointing tool moves with
# ω × (0, 0, -1): +roll (about the operator's right axis) swings it away, +pitch (about the
# "away" axis) swings it left.
MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (_Y, +1.0), "s": (_Y, -1.0),
    "d": (_X, +1.0), "a": (_X, -1.0),
    "r": (_Z, +1.0), "f": (_Z, -1.0),
    "q": (_YAW, +1.0), "e": (_YAW, -1.0),
    "up": (_ROLL, +1.0), "down": (_ROLL, -1.0),
    "left": (_PITCH, +1.0), "right": (_PITCH, -1.0),
}
GRIPPER_KEY = "space"
RECORD_KEY = "enter"
_ALIASES = {" ": "space", "return": "enter", "\r": "enter", "\n": "enter",
            "arrowup": "up", "arrowdown": "down", "arrowleft": "left", "arrowright": "right"}


def normalize_key(key: str) -> str:
    k = str(key)
    if k.strip():  # " " is the space bar, not an empty name
        k = k.strip().lower().removeprefix("key_")
    return _ALIASES.get(k, k)


class KeyboardTeleop:
    """Keyboard teleop device (``TeleopDevice``); thread-safe press/release/read."""

    name = "keyboard"

    def __init__(self, robot: str = "franka", config: TeleopMapping | None = None, speed: float = 0.5,
                 clock: Callable[[], float] = time.monotonic):
        self.robot = robot
        self.mapping = config or TeleopMapping.for_robot(robot, deadzone=0.0, scale=speed)
        self._clock = clock
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._gripper = Toggle()
        self._record = PressEvents()
        self._open = False
        self._heartbeat: float | None = None

    @property
    def connected(self) -> bool:
        return self._open

    def open(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        with self._lock:
            self._open = False
            self._held.clear()

    def press(self, key: str) -> bool:
        """Key went down. Returns whether the key belongs to teleop (the owner may pass others on)."""
        return self._set(normalize_key(key), True)

    def release(self, key: str) -> bool:
        return self._set(normalize_key(key), False)

    def release_all(self) -> None:
        """Focus lost: every held key counts as released (nothing keeps the arm moving)."""
        with self._lock:
            for key in list(self._held):
                self._apply(key, False)
            self._touch()

    def heartbeat(self) -> None:
        """The owner is alive; enables the stale-input watchdog (see module doc)."""
        with self._lock:
            self._heartbeat = self._clock()

    def read(self) -> TeleopState:
        with self._lock:
            raw = np.zeros(6)
            for key in self._held:
                if key in MOTION_KEYS:
                    axis, sign = MOTION_KEYS[key]
                    raw[axis] += sign
            twist = self.mapping.apply(raw) if self._open else np.zeros(6)
            stamp = self._clock() if self._heartbeat is None else self._heartbeat
            return TeleopState(stamp=stamp, twist=twist,
                               buttons={"gripper": self._gripper.state, "record": self._record.take()},
                               connected=self._open)

    def set_gripper_closed(self, closed: bool) -> None:
        with self._lock:
            self._gripper.state = bool(closed)

    # ------------------------------------------------------------------------------------ inner

    def _set(self, key: str, down: bool) -> bool:
        if key not in MOTION_KEYS and key not in (GRIPPER_KEY, RECORD_KEY):
            return False
        with self._lock:
            if self._open:
                self._apply(key, down)
            self._touch()
        return True

    def _apply(self, key: str, down: bool) -> None:
        if down:
            self._held.add(key)
        else:
            self._held.discard(key)
        if key == GRIPPER_KEY:
            self._gripper.update(down)
        elif key == RECORD_KEY:
            self._record.update(down)

    def _touch(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat = self._clock()
