"""Sim tasks: seeded layouts, success predicates and the oracle's keyframe waypoints.

A task is declarative: which objects matter, how the scene is randomised from a seed, when it counts as
solved, and the keyframes a competent operator would pass through (phases named with the atomic-action
vocabulary of DESIGN.md: move, lower, grasp, lift, transport, place, press). Everything here is pure
geometry on object poses, so it runs in the sim process and in tests alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from robots.sim.world import (
    BIN_INNER_HALF,
    BIN_WALL_HEIGHT,
    BUTTON_HOUSING_HEIGHT,
    CUBE_HALF,
    CUBES,
)

# Tool pointing straight down, fingers closing along the base y axis (FR3 and xArm6 home orientation).
TOOL_DOWN = Rotation.from_quat([1.0, 0.0, 0.0, 0.0])
BUTTON_CAP_TOP = BUTTON_HOUSING_HEIGHT + 0.016
SAFE_Z = 0.17  # carry height: cube bottom clears the 6 cm bin walls and the other cubes
OPEN, CLOSED = 1.0, 0.0


@dataclass
class Waypoint:
    pose: np.ndarray  # (7,) xyz + quat xyzw, base frame, TCP
    gripper: float  # 0 closed … 1 open, commanded on arrival
    phase: str  # atomic-action name of the motion that ends here
    dwell: float = 0.0  # seconds to hold after arriving (gripper actuation)


@dataclass(frozen=True)
class Placement:
    x: float
    y: float
    yaw: float = 0.0


# Footprint radii for non-overlapping layouts, metres.
FOOTPRINT_RADIUS = {"bin": 0.105, "button": 0.05, **{c: 0.035 for c in CUBES}}
# Reach: both arms grasp a cube top-down within ~0.55 m of the base axis (xArm6 is the tighter one).
_REGION_X = (0.30, 0.56)
_REGION_Y = (-0.28, 0.28)
_MAX_RADIUS = {"bin": 0.50, "button": 0.54, **{c: 0.54 for c in CUBES}}
_MIN_RADIUS = 0.30


def sample_layout(seed: int, order: tuple[str, ...] = ("bin", "button", *CUBES)) -> dict[str, Placement]:
    """Non-overlapping placements of every object, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    placed: dict[str, Placement] = {}
    for name in order:
        for _ in range(2000):
            x = rng.uniform(*_REGION_X)
            y = rng.uniform(*_REGION_Y)
            r = math.hypot(x, y)
            if not _MIN_RADIUS <= r <= _MAX_RADIUS[name]:
                continue
            gap = lambda o: FOOTPRINT_RADIUS[name] + FOOTPRINT_RADIUS[o] + 0.015  # noqa: E731
            if all(math.hypot(x - p.x, y - p.y) >= gap(o) for o, p in placed.items()):
                yaw = rng.uniform(-math.pi / 4, math.pi / 4) if name.startswith("cube") else 0.0
                placed[name] = Placement(x, y, yaw)
                break
        else:  # pragma: no cover - the region is several times larger than the footprints
            raise RuntimeError(f"could not place {name} for seed {seed}")
    return placed


def pose7(xyz, rot: Rotation) -> np.ndarray:
    return np.concatenate([np.asarray(xyz, float), rot.as_quat()])


def grasp_rotation(obj_pose: np.ndarray) -> Rotation:
    """Top-down tool rotation aligned with a cube's faces (yaw folded into ±45° by the 4-fold symmetry)."""
    yaw = Rotation.from_quat(obj_pose[3:]).as_euler("ZYX")[0]
    yaw = (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
    return Rotation.from_euler("z", yaw) * TOOL_DOWN


def table_z(p: dict[str, np.ndarray]) -> float:
    """Height of the table top in the base frame: 0 unless a scene variation moved it
    (robots/sim/variations.py; the lab reports it as the pseudo-object "table")."""
    t = p.get("table")
    return 0.0 if t is None else float(t[2])


def _pick(cube: np.ndarray, tz: float = 0.0) -> list[Waypoint]:
    rot = grasp_rotation(cube)
    x, y, z = cube[:3]
    return [
        Waypoint(pose7([x, y, z + 0.12], rot), OPEN, "move"),
        Waypoint(pose7([x, y, z + 0.002], rot), OPEN, "lower"),
        Waypoint(pose7([x, y, z + 0.002], rot), CLOSED, "grasp", dwell=0.8),
        Waypoint(pose7([x, y, SAFE_Z + tz], rot), CLOSED, "lift", dwell=0.2),
    ]


def _place_at(xy, release_z: float, rot: Rotation, tz: float = 0.0) -> list[Waypoint]:
    x, y = xy
    return [
        Waypoint(pose7([x, y, SAFE_Z + tz], rot), CLOSED, "transport"),
        Waypoint(pose7([x, y, release_z], rot), CLOSED, "lower", dwell=0.2),
        Waypoint(pose7([x, y, release_z], rot), OPEN, "place", dwell=0.6),
        Waypoint(pose7([x, y, SAFE_Z + tz + 0.03], rot), OPEN, "move"),
    ]


def _inside_bin(cube: np.ndarray, bin_pose: np.ndarray) -> bool:
    d = np.abs(cube[:2] - bin_pose[:2])
    return bool(np.all(d < BIN_INNER_HALF - 0.5 * CUBE_HALF) and cube[2] < bin_pose[2] + BIN_WALL_HEIGHT)


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    objects: tuple[str, ...]
    waypoints: Callable[[dict[str, np.ndarray]], list[Waypoint]]
    success: Callable[[dict[str, np.ndarray], dict], bool]
    max_duration: float = 12.0  # seconds an expert episode may take
    extras: dict = field(default_factory=dict)


def _pick_waypoints(p):
    return _pick(p["cube_red"], table_z(p))


def _pick_success(p, s):
    return bool(p["cube_red"][2] > table_z(p) + CUBE_HALF + 0.05)


def _bin_waypoints(p):
    rot = grasp_rotation(p["cube_red"])
    # Release with the cube bottom ~1 cm below the wall tops: it cannot bounce out.
    tz = table_z(p)
    return _pick(p["cube_red"], tz) + _place_at(p["bin"][:2], p["bin"][2] + BIN_WALL_HEIGHT + CUBE_HALF - 0.005, rot, tz)


def _bin_success(p, s):
    return _inside_bin(p["cube_red"], p["bin"]) and not s.get("red_in_gripper", False)


def _stack_waypoints(p):
    # Place with the green cube's yaw so the faces line up.
    rot = grasp_rotation(p["cube_green"])
    top = p["cube_green"][2] + 2 * CUBE_HALF + 0.004
    tz = table_z(p)
    return _pick(p["cube_red"], tz) + _place_at(p["cube_green"][:2], top, rot, tz)


def _stack_success(p, s):
    red, green = p["cube_red"], p["cube_green"]
    dz = red[2] - green[2]
    return bool(
        np.linalg.norm(red[:2] - green[:2]) < 0.02
        and abs(dz - 2 * CUBE_HALF) < 0.006
        and green[2] < table_z(p) + CUBE_HALF + 0.005
        and not s.get("red_in_gripper", False)
    )


def _press_waypoints(p):
    b = p["button"]
    rot = TOOL_DOWN
    x, y, top = b[0], b[1], BUTTON_CAP_TOP + table_z(p)
    return [
        Waypoint(pose7([x, y, top + 0.10], rot), CLOSED, "move"),
        Waypoint(pose7([x, y, top + 0.015], rot), CLOSED, "lower"),
        Waypoint(pose7([x, y, top - 0.010], rot), CLOSED, "press", dwell=0.3),
        Waypoint(pose7([x, y, top + 0.10], rot), CLOSED, "move"),
    ]


def _press_success(p, s):
    return bool(s.get("button_pressed", False))


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("pick_cube", "pick up the red cube", ("cube_red",), _pick_waypoints, _pick_success, 8.0),
        Task("place_in_bin", "put the red cube in the bin", ("cube_red", "bin"), _bin_waypoints, _bin_success),
        Task("stack_cubes", "stack the red cube on the green cube", ("cube_red", "cube_green"),
             _stack_waypoints, _stack_success),
        Task("press_button", "press the button", ("button",), _press_waypoints, _press_success, 8.0),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown sim task {name!r}; expected one of: {', '.join(TASKS)}") from None
