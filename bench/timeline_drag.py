"""Synthetic mouse input on a widgets.timeline.Timeline, shared by the scrubbing benchmarks."""
from __future__ import annotations

from PySide6 import QtCore, QtGui


def timeline_mouse(tl):
    """(at(frame) -> viewport QPoint, send(kind, pos, buttons)) for dragging on ``tl``'s plot."""
    vp = tl.plot.viewport()

    def at(frame):
        return tl.plot.mapFromScene(tl.vb.mapViewToScene(QtCore.QPointF(frame, 0.5)))

    def send(kind, pos, buttons):
        ev = QtGui.QMouseEvent(kind, QtCore.QPointF(pos), QtCore.QPointF(vp.mapToGlobal(pos)),
                               QtCore.Qt.LeftButton, buttons, QtCore.Qt.NoModifier)
        QtCore.QCoreApplication.sendEvent(vp, ev)

    return at, send
