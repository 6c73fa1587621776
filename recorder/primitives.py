"""Atomic-action vocabulary (LA4VLA Table 2 / Table 8) and vision-agnostic instruction templates.

Instructions describe action type, base-frame direction and object status only — never object
identity or appearance — so language-action episodes stay usable with the visual input masked.
"""
from __future__ import annotations

import numpy as np

# Order matters only for display (GUI palettes, export label ids): keep new names at the end.
PRIMITIVES: tuple[str, ...] = (
    "grasp", "place", "lift", "lower", "transport", "wrist_rotate", "reorient",
    "push", "pull", "press", "move", "rotate_free", "reorient_free", "wait",
)

# Interaction context of each primitive (LA4VLA Table 2 columns).
CATEGORY: dict[str, str] = {
    "grasp": "object", "place": "object", "lift": "object", "lower": "object",
    "transport": "object", "wrist_rotate": "object", "reorient": "object",
    "push": "contact", "pull": "contact", "press": "contact",
    "move": "free", "rotate_free": "free", "reorient_free": "free", "wait": "free",
}

DEFINITION: dict[str, str] = {
    "grasp": "Align with a target object and close the gripper to establish a grasp.",
    "place": "Bring a held object to its support and open the gripper to release it.",
    "lift": "Move a held object primarily upward (+z).",
    "lower": "Move a held object primarily downward (-z).",
    "transport": "Move a held object in the horizontal plane along base-frame directions.",
    "wrist_rotate": "Rotate a held object around the tool axis.",
    "reorient": "Adjust a held object's orientation toward a target state.",
    "push": "Contact motion that moves an object away from the end effector.",
    "pull": "Contact motion that moves an object toward the end effector.",
    "press": "Apply downward contact to activate or depress a target.",
    "move": "Move the empty gripper in free space along base-frame directions.",
    "rotate_free": "Rotate the empty gripper in free space around its axis.",
    "reorient_free": "Adjust the empty gripper orientation toward a target state.",
    "wait": "Hold still.",
}

# Base-frame direction words (LA4VLA 7.5: +x forward, -x backward, +y left, -y right, +z up, -z down).
AXIS_WORDS = (("forward", "backward"), ("left", "right"), ("upward", "downward"))

# Verb phrase used in encoder captions ("Robot <action> <object>, action is <action>").
CAPTION_VERB: dict[str, str] = {
    "grasp": "grasps", "place": "places", "lift": "lifts", "lower": "lowers",
    "transport": "transports", "wrist_rotate": "rotates", "reorient": "reorients",
    "push": "pushes", "pull": "pulls", "press": "presses", "move": "moves toward",
    "rotate_free": "rotates toward", "reorient_free": "reorients toward", "wait": "waits near",
}


class VocabularyError(ValueError):
    """A primitive name outside the vocabulary (one-line message)."""


def check_primitive(name: str) -> str:
    if name not in PRIMITIVES:
        raise VocabularyError(f"unknown primitive {name!r}; expected one of: {', '.join(PRIMITIVES)}")
    return name


def direction_words(displacement: np.ndarray, min_share: float = 0.35) -> list[str]:
    """Base-frame direction words of a displacement (3,), dominant axis first.

    An axis is named when it carries at least ``min_share`` of the largest component, so a
    mostly-forward move with a small sideways drift reads "forward", not "forward and left".
    """
    d = np.asarray(displacement, dtype=float)[:3]
    mag = np.abs(d)
    if not np.isfinite(mag).all() or mag.max() <= 0:
        return []
    words = []
    for axis in np.argsort(-mag):
        if mag[axis] >= min_share * mag.max():
            words.append(AXIS_WORDS[axis][0 if d[axis] > 0 else 1])
    return words


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def instruction(primitive: str, displacement: np.ndarray | None = None, *,
                holding: bool = False, rotation_sense: str = "") -> str:
    """Vision-agnostic instruction for a segment, e.g. "lift the object upward while holding it".

    ``displacement`` is the segment's end-minus-start position (base frame); ``rotation_sense`` is
    "clockwise"/"counterclockwise" for wrist rotations seen from above the tool.
    """
    check_primitive(primitive)
    dirs = _join(direction_words(displacement)) if displacement is not None else ""
    sense = f" {rotation_sense}" if rotation_sense else ""
    if primitive == "grasp":
        return "align with and grasp the object"
    if primitive == "place":
        return "place the object and release it"
    if primitive == "lift":
        return "lift the object upward while holding it"
    if primitive == "lower":
        return "lower the object downward while holding it"
    if primitive == "transport":
        return f"transport the object {dirs or 'horizontally'} while holding it"
    if primitive == "wrist_rotate":
        return f"rotate the held object{sense} around the wrist axis"
    if primitive == "reorient":
        return "reorient the held object"
    if primitive == "push":
        return f"push the object {dirs or 'forward'}"
    if primitive == "pull":
        return f"pull the object {dirs or 'backward'}"
    if primitive == "press":
        return "press downward on the target"
    if primitive == "move":
        tail = " while holding the object" if holding else ""
        return f"move the gripper {dirs or 'in free space'}{tail}"
    if primitive == "rotate_free":
        return f"rotate the empty gripper{sense} around its axis"
    if primitive == "reorient_free":
        return "reorient the empty gripper"
    return "hold still"


def caption(primitive: str, obj: str = "") -> str:
    """Encoder caption "Robot <action> <object>, action is <action>" (RoboAct-CLIP style)."""
    check_primitive(primitive)
    target = obj.strip() or "the object"
    return f"Robot {CAPTION_VERB[primitive]} {target}, action is {primitive}"


# How the scripted expert's phase names (robots/sim/tasks.py Waypoint.phase: the motion that ends
# at the waypoint, dwell included) map onto primitives for scoring proposals. The expert already
# speaks the vocabulary; older/other names map to their closest primitive. Context (a "lower" of
# the empty gripper is a "move") is applied by recorder.segments.phases_to_primitives.
PHASE_TO_PRIMITIVE: dict[str, str] = {
    **{p: p for p in PRIMITIVES},
    "approach": "move", "pregrasp": "move", "descend": "move", "retreat": "move", "home": "move",
    "release": "place",
}
