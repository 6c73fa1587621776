"""Heavy imports done once, off the UI thread, and finished before a control loop starts.

Why: the 3D pages (Collect, Annotate, Evaluate) and the policy helpers import torch, diffusers and
vispy the first time they are opened. Done on the UI thread while devices were connected, that
import held the GIL for hundreds of milliseconds at a time (loading torch's shared libraries runs
with the GIL held): switching tabs stalled the control loop (``control: loop_stalled``, overruns)
and the camera frames it pulls were dropped, although nothing waited on Qt. bench/gui_collect.py
``--tabs`` measured it (see README "GUI responsiveness").

So the main window starts :func:`start` at construction; connecting runs :func:`wait` after the
devices opened (the sim process starts meanwhile) and before the control loop starts. Once
imported, the tabs' own lazy imports are dictionary look-ups. A module that fails to import is
logged and skipped: the tab that needs it reports the error itself when opened.

Building a vispy 3D page is the other long UI-thread job (~0.3 s each, and PySide6 holds the GIL
inside its C++ calls, so no Python thread runs meanwhile). The window builds those pages once the
imports are in and holds a :func:`gate` until then; :func:`wait` waits for open gates too. A gate
dies with its owner (weak reference), so a window that goes away never blocks a later connect.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
import weakref

log = logging.getLogger(__name__)

# What the tabs import lazily, heaviest first (measured alone on a 2-core box: diffusers 4.2 s,
# torch 1.9 s, vispy.scene 0.2 s). policies.* pull torch; vispy's Qt backend is chosen by
# widgets.pointcloud_view on the UI thread, which is cheap once vispy itself is loaded.
HEAVY_MODULES = ("torch", "diffusers", "policies.geometry", "policies.waypoints", "policies.action_expert",
                 "policies.datasets", "vispy.scene", "vispy.visuals", "scipy.interpolate")
DEFAULT_WAIT_S = 120.0  # a loaded 2-core box needed ~10 s; after this, connect anyway (logged)


class Preloader:
    def __init__(self, modules=HEAVY_MODULES):
        self.modules = tuple(modules)
        self.failed: dict[str, str] = {}
        self.seconds = 0.0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def start(self) -> "Preloader":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="preload-imports", daemon=True)
            self._thread.start()
        return self

    def wait(self, timeout: float = DEFAULT_WAIT_S) -> bool:
        """True once every import was tried (at once when never started)."""
        return self._thread is None or self._done.wait(timeout)

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            for name in self.modules:
                try:
                    importlib.import_module(name)
                except Exception as exc:  # an optional extra missing: its tab says so when opened
                    self.failed[name] = f"{type(exc).__name__}: {exc}"
                    log.info("preload: %s not importable (%s)", name, self.failed[name])
        finally:
            self.seconds = time.monotonic() - t0
            log.info("preload: %d modules in %.1f s", len(self.modules), self.seconds)
            self._done.set()


_shared: Preloader | None = None
_lock = threading.Lock()
_gates: "weakref.WeakSet[threading.Event]" = weakref.WeakSet()


def gate() -> threading.Event:
    """An Event that :func:`wait` also waits for until it is set; keep a reference to it."""
    ev = threading.Event()
    _gates.add(ev)
    return ev


def imports_done() -> bool:
    return _shared is None or _shared.done


def wait_imports(timeout: float = DEFAULT_WAIT_S) -> bool:
    """Wait for the import thread only (not the gates): for UI code about to import a heavy module
    itself. Importing it from the UI thread while the preload thread is half-way through it races
    (diffusers' lazy module then raised "cannot import name 'DDIMScheduler'")."""
    pre = _shared
    return pre is None or pre.wait(timeout)


def start(modules=HEAVY_MODULES) -> Preloader:
    """Start the process-wide preload (once; later calls return the same one)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = Preloader(modules).start()
        return _shared


def wait(timeout: float = DEFAULT_WAIT_S) -> bool:
    """Wait for the process-wide preload (if started) and the open gates; True when all finished."""
    deadline = time.monotonic() + timeout
    pre = _shared
    ok = pre is None or pre.wait(timeout)
    for ev in list(_gates):
        ok = ev.wait(max(0.0, deadline - time.monotonic())) and ok
    if not ok:
        log.warning("preload still running after %.0f s; starting the control loop anyway", timeout)
    return ok
