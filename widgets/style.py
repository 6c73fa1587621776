"""Shared look of the ActStudio views: one dark palette, primitive colours, small helpers.

Kept in one place so the timeline bars, the 3D view and the main window agree on what colour
"grasp" is, and so screenshots of different tabs look like one tool.
"""
from __future__ import annotations

import hashlib

# Dark palette tuned for long annotation sessions (low glare, curves still distinct).
BACKGROUND = "#1e2127"
PANEL = "#262a31"
GRID = "#3a3f4b"
TEXT = "#d7dae0"
TEXT_DIM = "#8b93a1"
ACCENT = "#4fa3ff"
WARNING = "#ffb347"
ERROR = "#ff5c5c"
PREDICTED = "#d959f2"  # predicted keypoints: magenta, apart from the accent and warning colours
PLAYHEAD = "#ffffff"

# Curves on the timeline: gripper, speed, height (plus anything else the owner adds).
CURVE_COLORS = {
    "gripper": "#f2c14e",
    "speed": "#4fa3ff",
    "height": "#6fd08c",
}
EXTRA_CURVE_COLORS = ["#c678dd", "#56b6c2", "#e06c75", "#d19a66"]

KEYFRAME_COLORS = {
    "static": "#9aa4b2",
    "gripper_open": "#6fd08c",
    "gripper_close": "#ff7b72",
}

# The primitive vocabulary of DESIGN.md, each with a colour that stays readable under white text.
PRIMITIVE_COLORS = {
    "grasp": "#d1495b",
    "place": "#2e86ab",
    "lift": "#3bb273",
    "lower": "#7768ae",
    "transport": "#e1a140",
    "wrist_rotate": "#00a6a6",
    "reorient": "#c05299",
    "push": "#8c6d46",
    "pull": "#5d7f3b",
    "press": "#b83b5e",
    "move": "#4d6a8f",
    "rotate_free": "#4f9d9d",
    "reorient_free": "#9b5de5",
    "wait": "#5c6370",
}


def primitive_color(name: str | None) -> str:
    """Colour for a primitive; unknown names get a stable colour derived from the name."""
    if not name:
        return PRIMITIVE_COLORS["wait"]
    if name in PRIMITIVE_COLORS:
        return PRIMITIVE_COLORS[name]
    # A hash keeps a user-defined primitive the same colour across sessions and machines.
    h = int(hashlib.md5(name.encode()).hexdigest()[:6], 16)
    hue = h % 360
    return _hsv_hex(hue, 0.55, 0.75)


def _hsv_hex(h: float, s: float, v: float) -> str:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h / 360.0, s, v)
    return "#{:02x}{:02x}{:02x}".format(int(r * 255), int(g * 255), int(b * 255))


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def hex_to_rgbf(color: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    r, g, b = hex_to_rgb(color)
    return r / 255.0, g / 255.0, b / 255.0, alpha


# Style sheet for the small tool rows the views carry (spin boxes, combo boxes, buttons).
TOOLBAR_QSS = f"""
QWidget#viewToolbar {{ background: {PANEL}; }}
QWidget#viewToolbar QLabel {{ color: {TEXT_DIM}; }}
QWidget#viewToolbar QToolButton, QWidget#viewToolbar QPushButton {{
    color: {TEXT}; background: #313640; border: 1px solid {GRID}; border-radius: 3px;
    padding: 2px 8px;
}}
QWidget#viewToolbar QToolButton:checked {{ background: {ACCENT}; color: #0b0d10; }}
QWidget#viewToolbar QDoubleSpinBox, QWidget#viewToolbar QSpinBox, QWidget#viewToolbar QComboBox {{
    color: {TEXT}; background: #1b1e23; border: 1px solid {GRID}; border-radius: 3px; padding: 1px 3px;
}}
QWidget#viewToolbar QCheckBox {{ color: {TEXT}; }}
"""
