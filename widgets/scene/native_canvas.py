"""A vispy canvas drawn into a native ``QOpenGLWindow`` (embedded with ``createWindowContainer``)
instead of vispy's default ``QOpenGLWidget``.

Why: a QOpenGLWidget renders into an FBO that Qt then composites with the rest of the window
through its own GL pass every frame. On software GL (llvmpipe under Xvfb, the lab's headless boxes)
that composition is ~26 ms of a ~55 ms orbit frame at 300 k points (bench/gui.py). A native GL
window swaps straight to its X window; nothing else is redrawn.

Costs of a native child window: Qt widgets cannot be drawn over it (the view's HUD is a native
label stacked above it) and ``QWidget.grab()`` does not see its pixels (PointCloudView.grab paints
``canvas.render()`` in). A top-level view given deleteLater() and never deleted because no event
loop ran again crashes PySide's exit cleanup (it deletes the Python-made window before Qt destroys
its container): scripts that do that flush the delete (bench/gui.py). Used where Qt has a windowing system (xcb); under the ``offscreen``
platform, or with ACTSTUDIO_GL_WINDOW=widget, the view keeps the QOpenGLWidget.
"""
from __future__ import annotations

import os

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtOpenGL import QOpenGLWindow
from vispy.app.backends import _qt

ENV = "ACTSTUDIO_GL_WINDOW"   # "native" | "widget": force one path (bench/gui.py compares both)


def native_window_wanted() -> bool:
    choice = os.environ.get(ENV, "").strip().lower()
    if choice in ("native", "widget"):
        return choice == "native"
    if choice:
        raise ValueError(f"{ENV} must be 'native' or 'widget', got {choice!r}")
    return QtGui.QGuiApplication.platformName() == "xcb"


class NativeCanvasBackend(_qt.QtBaseCanvasBackend, QOpenGLWindow):
    """vispy's Qt canvas backend on a QOpenGLWindow; ``container`` is the QWidget to lay out."""

    def _init_specific(self, p, kwargs):
        glformat = _qt._set_config(p.context.config)
        glformat.setSwapInterval(1 if p.vsync else 0)
        p.context.shared.add_ref("qt", self)
        QOpenGLWindow.__init__(self, QOpenGLWindow.NoPartialUpdate)
        self.setFormat(glformat)
        self.container = QtWidgets.QWidget.createWindowContainer(self, p.parent)
        self.container.setFocusPolicy(QtCore.Qt.WheelFocus)
        self.container.setMinimumSize(50, 50)
        self._dirty = False   # an update() is pending that no paint has served yet
        self._initialized = True

    # QWidget calls QtBaseCanvasBackend makes, mapped onto QWindow / the container.
    def setMouseTracking(self, on: bool) -> None:   # a QWindow always gets move events
        pass

    def setWindowTitle(self, title: str) -> None:
        self.setTitle(title)

    def setFixedSize(self, *size) -> None:
        self.container.setFixedSize(*size)

    def repaint(self) -> None:
        """Draw and swap now (what QWidget.repaint does for the QOpenGLWidget path)."""
        # Through QPaintDeviceWindow's own update path (paintGL + swap) and at once: it clears
        # the dirty region, so the update already requested by the camera move draws nothing more.
        self.update()
        QtCore.QCoreApplication.sendEvent(self, QtCore.QEvent(QtCore.QEvent.UpdateRequest))

    def update(self) -> None:
        self._dirty = True
        QOpenGLWindow.update(self)

    def event(self, ev) -> bool:
        # Qt delivers one UpdateRequest per requestUpdate(); after a synchronous repaint() the
        # one the camera move queued would draw the same frame again (measured: 2–3 draws per
        # orbit step). Nothing changed since the last paint: skip it.
        if ev.type() == QtCore.QEvent.UpdateRequest and not self._dirty:
            return True
        return _qt.QtBaseCanvasBackend.event(self, ev)

    def _vispy_set_visible(self, visible):
        self.container.setVisible(visible)

    def _vispy_close(self):
        self.container.close()
        if self._vispy_canvas is not None:
            self._vispy_canvas.app.process_events()

    def _vispy_set_current(self):
        if self._vispy_canvas is not None and self.isValid():
            self.makeCurrent()

    def _vispy_swap_buffers(self):
        # QOpenGLWindow swaps after paintGL itself.
        pass

    def _vispy_get_fb_bind_location(self):
        return self.defaultFramebufferObject()

    def initializeGL(self):
        if self._vispy_canvas is not None:
            self._vispy_canvas.events.initialize()

    def resizeGL(self, w, h):
        if self._vispy_canvas is None:
            return
        ratio = self.devicePixelRatio()
        pw, ph = int(self.width() * ratio), int(self.height() * ratio)
        self._vispy_set_physical_size(pw, ph)
        self._vispy_canvas.events.resize(size=(self.width(), self.height()), physical_size=(pw, ph))

    def paintGL(self):
        self._dirty = False
        if self._vispy_canvas is None:
            return
        self._vispy_canvas.set_current()
        self._vispy_canvas.events.draw(region=None)


def make_canvas(canvas_cls, **kwargs):
    """``canvas_cls(**kwargs)`` (a vispy SceneCanvas) on a NativeCanvasBackend. vispy takes the
    backend class from its app's backend module, so it is swapped in for this one construction."""
    import vispy.app

    module = vispy.app.use_app().backend_module
    default = module.CanvasBackend
    module.CanvasBackend = NativeCanvasBackend
    try:
        return canvas_cls(**kwargs)
    finally:
        module.CanvasBackend = default
