"""3Dconnexion SpaceMouse teleop through pyspacemouse, behind the ``TeleopDevice`` protocol.

A reader thread polls the HID device (non-blocking) at ``poll_hz``, drains every pending report
so no button edge is lost, and maps each one with ``robots.teleop_mapping`` (deadzone, operator →
base frame, scale). ``read()`` returns the latest twist plus buttons:

- ``buttons["gripper"]``: left button toggles it; True = the operator wants the gripper closed.
- ``buttons["record"]``: True in exactly one ``read()`` per press of the right button.

Loss detection: a failing HID read (unplugged: hidraw returns ENODEV), or no report for more
than ``stale_timeout`` while the last report asked for motion — a deflected puck streams reports
continuously, so silence then means the link died (e.g. a wireless receiver out of range) and the
last twist must not be trusted. A resting puck is silent by design and stays connected. While
lost, ``read()`` gives a zero twist and ``connected`` False; the reader retries opening the
device every ``reconnect_interval`` seconds.

``TeleopState.stamp`` is the last time the reader thread heard from the device (a report or an
error-free poll), so a stalled reader thread shows up as stale input in the control loop.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

import numpy as np

from recorder.messages import one_line
from robots.base import DeviceError, TeleopState
from robots.teleop_mapping import PressEvents, TeleopMapping, Toggle

log = logging.getLogger(__name__)

GRIPPER_BUTTONS = ("LEFT", "BTN_1")  # first name the device has wins; else button 0
RECORD_BUTTONS = ("RIGHT", "BTN_2")  # else button 1
MAX_REPORTS_PER_POLL = 64  # a bound so a flooding device cannot starve the stop flag


class HidSpaceMouse(Protocol):
    """The part of ``pyspacemouse.SpaceMouseDevice`` this driver uses (the vendor-API edge)."""

    def read(self): ...  # -> pyspacemouse.SpaceMouseState (t, x, y, z, roll, pitch, yaw, buttons)

    def close(self) -> None: ...


# 3Dconnexion's USB vendor id, and Logitech's for the older models (SpaceNavigator, SpacePilot …).
VENDOR_IDS = ("256f", "046d")
UDEV_RULES = " and ".join(f'KERNEL=="hidraw*", ATTRS{{idVendor}}=="{v}", MODE="0660", GROUP="plugdev"'
                          for v in VENDOR_IDS)
UDEV_HELP = ("on Linux your user needs read/write access to the SpaceMouse's /dev/hidraw* node: put the udev rules "
             f"{UDEV_RULES} (one per line) into /etc/udev/rules.d/99-spacemouse.rules, run "
             "'sudo udevadm control --reload && sudo udevadm trigger', unplug and replug the SpaceMouse, and be in "
             "the plugdev group ('sudo usermod -aG plugdev $USER', then log in again; some distributions use the "
             "input group instead)")


def open_pyspacemouse(device_path: str | None = None) -> HidSpaceMouse:
    """Open the first (or the given ``/dev/hidrawN``) SpaceMouse in the operator-frame convention.

    Any failure is one ``DeviceError`` line: the cause, the SpaceMice hidapi can see, and the udev /
    hidraw permission help (a node the user may not open is the usual cause on a fresh Linux box:
    hidapi then says only "Failed to open device").
    """
    import pyspacemouse
    from easyhid import HIDException
    from pyspacemouse import AxisConvention

    try:
        if device_path:
            return pyspacemouse.open_by_path(device_path, axis_convention=AxisConvention.HID_Z_UP)
        return pyspacemouse.open(axis_convention=AxisConvention.HID_Z_UP)
    except (RuntimeError, ValueError, OSError, HIDException) as exc:
        try:
            found = pyspacemouse.get_connected_devices_by_path()
        except (RuntimeError, OSError, HIDException):
            found = {}
        listing = ", ".join(f"{name} at {path}" for path, name in found.items()) or "none"
        raise DeviceError(f"SpaceMouse{' ' + device_path if device_path else ''}: {one_line(exc)} "
                          f"(connected SpaceMice: {listing}). {UDEV_HELP}") from exc


def _button_index(device: HidSpaceMouse, names: tuple[str, ...], fallback: int) -> int:
    info = getattr(device, "info", None)
    button_names = tuple(getattr(info, "button_names", ()) or ())
    for name in names:
        if name in button_names:
            return button_names.index(name)
    return fallback


class SpaceMouse:
    """SpaceMouse teleop device. ``opener`` replaces ``open_pyspacemouse`` (tests, other HID stacks)."""

    name = "spacemouse"

    def __init__(self, robot: str = "franka", config: TeleopMapping | None = None,
                 device_path: str | None = None, *,
                 opener: Callable[[], HidSpaceMouse] | None = None, clock: Callable[[], float] = time.monotonic,
                 poll_hz: float = 250.0, stale_timeout: float = 0.5, reconnect_interval: float = 1.0):
        self.robot = robot
        self.mapping = config or TeleopMapping.for_robot(robot)
        self.device_path = device_path
        self._opener = opener or (lambda: open_pyspacemouse(device_path))
        self._clock = clock
        self.poll_period = 1.0 / poll_hz
        self.stale_timeout = stale_timeout
        self.reconnect_interval = reconnect_interval

        self._lock = threading.Lock()
        self._device: HidSpaceMouse | None = None
        self._opened = False
        self._connected = False
        self._twist = np.zeros(6)
        self._alive = 0.0  # last time the device answered
        self._last_report = 0.0
        self._last_t: float | None = None  # pyspacemouse's stamp of the last report consumed
        self._next_retry = 0.0
        self._gripper = Toggle()
        self._record = PressEvents()
        self._gripper_idx, self._record_idx = 0, 1
        self.last_error = ""
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- protocol

    @property
    def connected(self) -> bool:
        return self._connected

    def open(self, background: bool = True) -> None:
        """Open the device (DeviceError if absent) and, by default, start the reader thread.

        ``background=False`` leaves polling to the caller (``poll()``), for deterministic replay.
        """
        if self._opened:
            return
        self._attach(self._opener())
        self._opened = True
        if background:
            self._stop_evt.clear()
            self._thread = threading.Thread(target=self._run, name="spacemouse reader", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop_evt.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            self._opened = False
            self._connected = False
            self._twist = np.zeros(6)
            self._detach()

    def read(self) -> TeleopState:
        with self._lock:
            connected = self._connected
            return TeleopState(
                stamp=self._alive,
                twist=self._twist.copy() if connected else np.zeros(6),
                buttons={"gripper": self._gripper.state, "record": self._record.take()},
                connected=connected,
            )

    def set_gripper_closed(self, closed: bool) -> None:
        """Align the toggle with the real gripper (e.g. a session starting with an object held)."""
        with self._lock:
            self._gripper.state = bool(closed)

    def __enter__(self) -> "SpaceMouse":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------ reader side

    def _run(self) -> None:
        next_poll = self._clock()
        while not self._stop_evt.is_set():
            self.poll()
            # Absolute deadlines keep the poll rate steady whatever a poll cost.
            next_poll += self.poll_period
            delay = next_poll - self._clock()
            if delay < 0:
                next_poll = self._clock()
            self._stop_evt.wait(max(delay, 0.0))

    def poll(self) -> None:
        """One reader step: drain pending reports, detect loss, retry a lost device."""
        now = self._clock()
        with self._lock:
            if not self._opened:
                return
            lost = self._device is None
        if lost:
            self._try_reconnect(now)
            return
        with self._lock:
            if self._device is None:  # closed meanwhile
                return
            try:
                for _ in range(MAX_REPORTS_PER_POLL):
                    state = self._device.read()
                    if state.t == self._last_t:
                        break  # nothing new since the previous read
                    self._last_t = state.t
                    self._ingest(state, now)
            except Exception as exc:  # easyhid.HIDException, OSError, ... — any failure means lost
                self._lose(now, f"read failed: {exc}")
                return
            self._alive = now
            moving = bool(np.any(self._twist != 0.0))
            if moving and now - self._last_report > self.stale_timeout:
                self._lose(now, f"no report for {now - self._last_report:.2f} s while the puck was deflected")

    def _ingest(self, state, now: float) -> None:
        raw = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw], dtype=float)
        self._twist = self.mapping.apply(raw)
        buttons = list(state.buttons)
        self._gripper.update(self._gripper_idx < len(buttons) and bool(buttons[self._gripper_idx]))
        self._record.update(self._record_idx < len(buttons) and bool(buttons[self._record_idx]))
        self._last_report = now

    def _attach(self, device: HidSpaceMouse) -> None:
        now = self._clock()
        self._device = device
        self._gripper_idx = _button_index(device, GRIPPER_BUTTONS, 0)
        self._record_idx = _button_index(device, RECORD_BUTTONS, 1)
        self._last_t = None
        self._twist = np.zeros(6)
        self._alive = self._last_report = now
        self._connected = True
        self.last_error = ""

    def _detach(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            try:
                device.close()
            except Exception:  # closing a device that vanished may fail; it is gone either way
                pass

    def _lose(self, now: float, why: str) -> None:
        log.warning("SpaceMouse lost: %s", why)
        self.last_error = why
        self._connected = False
        self._twist = np.zeros(6)
        self._detach()
        self._next_retry = now + self.reconnect_interval

    def _try_reconnect(self, now: float) -> None:
        # Opening enumerates HID devices (milliseconds); read() must not wait on it.
        if now < self._next_retry:
            return
        self._next_retry = now + self.reconnect_interval
        try:
            device = self._opener()
        except DeviceError as exc:
            self.last_error = str(exc)
            return
        with self._lock:
            if not self._opened:  # closed while we were opening
                device.close()
                return
            log.info("SpaceMouse reconnected")
            self._attach(device)
