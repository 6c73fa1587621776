"""Live / recorded camera frames: RGB and colour-mapped depth, scaled to fit with the aspect kept.

Frames are numpy arrays; a QImage is built over the array's own buffer (no copy when the array
is C-contiguous uint8) and painted with QPainter, which is the cheapest path Qt offers without GL
and works on the offscreen platform too. Overlays: frame rate, "no signal" when frames stop
arriving, and a dropped-frame counter that the owner feeds (it is never silent).
"""
from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from widgets import style


def _turbo_lut() -> np.ndarray:
    """(256,3) uint8 Turbo colour map from the published polynomial fit (see pointcloud_view)."""
    t = np.linspace(0.0, 1.0, 256)
    v4 = np.stack([np.ones_like(t), t, t * t, t ** 3])
    v2 = np.stack([t ** 4, t ** 5])
    r = np.array([0.13572138, 4.61539260, -42.66032258, 132.13108234]) @ v4 + \
        np.array([-152.94239396, 59.28637943]) @ v2
    g = np.array([0.09140261, 2.19418839, 4.84296658, -14.18503333]) @ v4 + \
        np.array([4.27729857, 2.82956604]) @ v2
    b = np.array([0.10667330, 12.64194608, -60.58204836, 110.36276771]) @ v4 + \
        np.array([-89.90310912, 27.34824973]) @ v2
    return (np.clip(np.stack([r, g, b], axis=1), 0, 1) * 255).astype(np.uint8)


DEPTH_LUT = _turbo_lut()
NO_DEPTH_RGB = np.array([20, 20, 24], np.uint8)   # zero depth = no return, drawn near-black
BADGE_TOP, DROPPED_BADGE_TOP = 8, 32   # y of the title badge and of the dropped-frame badge
BADGE_BAND_H = 64                      # both badges (9 pt text + padding) fit above this line


@lru_cache(maxsize=8)
def _raw_depth_luts(depth_scale: float, near: float, far: float) -> tuple[np.ndarray, np.ndarray]:
    """Colour of every possible uint16 depth value, as (65536,3) uint8 and as (65536,) uint32
    0xffRRGGBB. One table gather per frame replaces a float image, a clip and a mask: ~0.5 ms
    instead of ~10–20 ms at 640×480 on the UI thread (bench/gui_collect.py --blame found it)."""
    # Same arithmetic as before the table (float32, truncation), so colours are unchanged.
    near_raw, far_raw = near / depth_scale, far / depth_scale
    idx = (np.arange(65536, dtype=np.float32) - near_raw) * (255.0 / max(far_raw - near_raw, 1e-6))
    np.clip(idx, 0, 255, out=idx)
    rgb = DEPTH_LUT[idx.astype(np.uint8)]
    rgb[0] = NO_DEPTH_RGB
    argb = (0xFF000000 | (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8)
            | rgb[:, 2].astype(np.uint32))
    for table in (rgb, argb):
        table.flags.writeable = False   # shared by every view through the cache
    return rgb, argb


def _check_depth(depth: np.ndarray) -> np.ndarray:
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H,W), got {depth.shape}")
    if depth.dtype != np.uint16:
        depth = np.clip(np.nan_to_num(depth), 0, 65535).astype(np.uint16)
    return depth


def colorize_depth(depth: np.ndarray, depth_scale: float = 0.001, near: float = 0.2,
                   far: float = 1.5) -> np.ndarray:
    """uint16 depth (H,W) → (H,W,3) uint8 via the Turbo map over [near, far] metres (near is
    blue, far is red); zero depth (no measurement) stays near-black."""
    depth = _check_depth(depth)
    return _raw_depth_luts(float(depth_scale), float(near), float(far))[0][depth]


def depth_qimage(depth: np.ndarray, depth_scale: float = 0.001, near: float = 0.2,
                 far: float = 1.5) -> tuple[QtGui.QImage, np.ndarray]:
    """``colorize_depth`` straight into a 32-bit QImage (the raster engine's native format, so
    painting it scaled needs no per-paint conversion); returns the image and its buffer."""
    depth = _check_depth(depth)
    argb = np.take(_raw_depth_luts(float(depth_scale), float(near), float(far))[1], depth)
    h, w = argb.shape
    return QtGui.QImage(argb.data, w, h, 4 * w, QtGui.QImage.Format_RGB32), argb


def fit_rect(src_w: int, src_h: int, dst: QtCore.QRect) -> QtCore.QRect:
    """Largest rect with the source aspect ratio centred in ``dst`` (letterbox / pillarbox)."""
    if src_w <= 0 or src_h <= 0 or dst.width() <= 0 or dst.height() <= 0:
        return QtCore.QRect(dst.topLeft(), QtCore.QSize(0, 0))
    scale = min(dst.width() / src_w, dst.height() / src_h)
    w, h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    return QtCore.QRect(dst.x() + (dst.width() - w) // 2, dst.y() + (dst.height() - h) // 2, w, h)


def rgb_qimage(rgb: np.ndarray) -> tuple[QtGui.QImage, np.ndarray]:
    """QImage over an (H,W,3) uint8 array's buffer; returns the array the image points into
    (the caller must keep it alive as long as the image)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H,W,3) uint8, got {rgb.shape} {rgb.dtype}")
    if not rgb.flags.c_contiguous:
        rgb = np.ascontiguousarray(rgb)
    h, w, _ = rgb.shape
    image = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888)
    return image, rgb


class CameraView(QtWidgets.QWidget):
    """Shows ``mode`` = "rgb", "depth" or "both" (side by side) of the latest frame."""

    MODES = ("rgb", "depth", "both")

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, title: str = "",
                 no_signal_after: float = 1.0, depth_range: tuple[float, float] = (0.2, 1.5)):
        super().__init__(parent)
        self.setAttribute(QtCore.Qt.WA_OpaquePaintEvent, True)
        self.setMinimumSize(160, 120)
        self.title = title
        self.no_signal_after = float(no_signal_after)
        self.depth_range = depth_range
        self.depth_scale = 0.001
        self._mode = "rgb"
        self._rgb: tuple[QtGui.QImage, np.ndarray] | None = None
        self._depth: tuple[QtGui.QImage, np.ndarray] | None = None
        self._last_arrival: float | None = None
        self._arrivals: list[float] = []
        self._dropped = 0
        self._lag = 0
        self._frame_label = ""
        self.smooth = False   # nearest-neighbour scaling: faster, and pixels stay inspectable

        self._stale_timer = QtCore.QTimer(self)
        self._stale_timer.timeout.connect(self._check_stale)
        self._stale_timer.start(250)
        self._stale = True

    # -- input ---------------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"camera view mode must be one of {self.MODES}, got {mode!r}")
        self._mode = mode
        self.update()

    def mode(self) -> str:
        return self._mode

    def set_frame(self, rgb: np.ndarray | None, depth: np.ndarray | None = None, *,
                  depth_scale: float | None = None, label: str = "") -> None:
        """Show a new frame (either part may be None). ``label`` e.g. "frame 120 · 6.00 s"."""
        if rgb is not None:
            self._rgb = rgb_qimage(rgb)
        if depth is not None:
            if depth_scale is not None:
                self.depth_scale = float(depth_scale)
            self._depth = depth_qimage(depth, self.depth_scale, *self.depth_range)
        self._frame_label = label
        now = time.monotonic()
        self._last_arrival = now
        self._arrivals.append(now)
        del self._arrivals[:-31]
        if self._stale:
            self._stale = False
        self.update()

    def set_rgb(self, rgb: np.ndarray, label: str = "") -> None:
        self.set_frame(rgb, None, label=label)

    def set_depth(self, depth: np.ndarray, depth_scale: float | None = None) -> None:
        self.set_frame(None, depth, depth_scale=depth_scale)

    def set_dropped(self, dropped: int, lag: int = 0) -> None:
        """Dropped frames / writer lag as counted by the owner; shown while non-zero."""
        if (dropped, lag) != (self._dropped, self._lag):
            self._dropped, self._lag = int(dropped), int(lag)
            # Only the badge band: the writer's lag changes at the controller's poll rate while
            # recording, and between camera frames a full update would redraw both images for it.
            self.update(self.badge_band())

    def clear(self) -> None:
        self._rgb = self._depth = None
        self._last_arrival = None
        self._arrivals.clear()
        self._stale = True
        self.update()

    # -- state -------------------------------------------------------------------------------

    def fps(self) -> float:
        """Arrival rate over the last frames (0 when stale)."""
        if self._stale or len(self._arrivals) < 2:
            return 0.0
        span = self._arrivals[-1] - self._arrivals[0]
        return (len(self._arrivals) - 1) / span if span > 0 else 0.0

    def is_stale(self) -> bool:
        return self._stale

    def _check_stale(self) -> None:
        stale = self._last_arrival is None or time.monotonic() - self._last_arrival > self.no_signal_after
        if stale != self._stale:
            self._stale = stale
            self.update()

    def image_rects(self) -> list[QtCore.QRect]:
        """Where the visible images are drawn, in widget coordinates."""
        images = self._visible_images()
        if not images:
            return []
        area = self.rect()
        if len(images) == 1:
            img = images[0][0]
            return [fit_rect(img.width(), img.height(), area)]
        half = area.width() // 2
        left = QtCore.QRect(area.x(), area.y(), half - 1, area.height())
        right = QtCore.QRect(area.x() + half + 1, area.y(), area.width() - half - 1, area.height())
        return [fit_rect(img.width(), img.height(), r) for (img, _), r in zip(images, (left, right))]

    def badge_band(self) -> QtCore.QRect:
        """The strip at the top that holds the title and dropped-frame badges."""
        return QtCore.QRect(0, 0, self.width(), BADGE_BAND_H)

    def _visible_images(self):
        if self._mode == "rgb":
            parts = [self._rgb]
        elif self._mode == "depth":
            parts = [self._depth]
        else:
            parts = [self._rgb, self._depth]
        return [p for p in parts if p is not None]

    # -- painting ----------------------------------------------------------------------------

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor(style.BACKGROUND))
        p.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, self.smooth)
        images = self._visible_images()
        for (img, _), rect in zip(images, self.image_rects()):
            p.drawImage(rect, img)
        self._paint_overlays(p, bool(images))
        p.end()

    def _paint_overlays(self, p: QtGui.QPainter, has_image: bool) -> None:
        font = p.font()
        font.setPointSizeF(9.0)
        p.setFont(font)
        parts = [self.title] if self.title else []
        if self._frame_label:
            parts.append(self._frame_label)
        fps = self.fps()
        if fps > 0:
            parts.append(f"{fps:.1f} fps")
        if parts:
            self._badge(p, QtCore.QPoint(8, BADGE_TOP), "  ·  ".join(parts), style.TEXT)
        if self._dropped or self._lag:
            text = f"dropped {self._dropped}" + (f" · lag {self._lag}" if self._lag else "")
            self._badge(p, QtCore.QPoint(8, DROPPED_BADGE_TOP), text, style.ERROR)
        if self._stale:
            font.setPointSizeF(14.0)
            font.setBold(True)
            p.setFont(font)
            text = "NO SIGNAL"
            if has_image:
                # Keep the last frame visible but dimmed: operators want to see what it was.
                p.fillRect(self.rect(), QtGui.QColor(0, 0, 0, 140))
            p.setPen(QtGui.QColor(style.WARNING))
            p.drawText(self.rect(), QtCore.Qt.AlignCenter, text)

    @staticmethod
    def _badge(p: QtGui.QPainter, at: QtCore.QPoint, text: str, color: str) -> None:
        metrics = p.fontMetrics()
        box = metrics.boundingRect(text).adjusted(-6, -3, 6, 3)
        box.moveTopLeft(at)
        p.fillRect(box, QtGui.QColor(20, 22, 26, 190))
        p.setPen(QtGui.QColor(color))
        p.drawText(box, QtCore.Qt.AlignCenter, text)

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802
        return QtCore.QSize(640, 480)
