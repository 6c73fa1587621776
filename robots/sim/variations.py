"""Scene variations that no training demo shows, for generalization tests (issue 14 item 3).

A variation changes a seeded layout (robots/sim/tasks.py ``sample_layout``) after the fact, from the
same seed, so "seed 1003 with distractors" is the held-out layout 1003 plus a change:

* ``distractors`` — the cubes that are not part of the task move next to the task's first object
  (7.5–9.5 cm centre to centre), where a policy that locks onto "a cube near the waypoint" is misled;
* ``colour`` — the task's cubes (every cube for a task without one) get colours the demos never had
  (orange, purple, pink, teal, white) and the instruction names the new colour ("pick up the orange cube");
* ``table+2cm`` / ``table-2cm`` — the table top and everything on it 2 cm higher / lower relative to
  the arm base (the robot base stays put, as when a lab's table is swapped).

Pure data here; robots/sim/process.py applies it to the MuJoCo scene.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from robots.sim.tasks import FOOTPRINT_RADIUS, Placement

VARIATIONS = ("none", "distractors", "colour", "table+2cm", "table-2cm")
UNSEEN_COLOURS = {"orange": (0.95, 0.45, 0.05), "purple": (0.50, 0.20, 0.70), "pink": (0.95, 0.45, 0.70),
                  "teal": (0.05, 0.60, 0.60), "white": (0.92, 0.92, 0.92)}
DISTRACTOR_RING = (0.075, 0.095)  # m from the task object's centre


@dataclass(frozen=True)
class Variation:
    name: str = "none"
    table_dz: float = 0.0  # m, table top height above the base's z = 0
    colours: dict = field(default_factory=dict)  # cube → (colour name, rgb)
    layout: dict | None = None  # object → Placement, replacing the seeded layout

    def instruction(self, text: str) -> str:
        """The task instruction with recoloured cubes named by their new colour."""
        for cube, (name, _) in self.colours.items():
            text = text.replace(cube.removeprefix("cube_"), name)
        return text


def parse_variation(name: str | None) -> str:
    n = (name or "none").strip().lower()
    if n not in VARIATIONS:
        raise ValueError(f"unknown scene variation {name!r}; expected one of: {', '.join(VARIATIONS)}")
    return n


def make_variation(name: str | None, seed: int, layout: dict[str, Placement], task_objects: tuple[str, ...],
                   cubes: tuple[str, ...]) -> Variation:
    """The variation ``name`` of ``layout`` (seeded by ``seed``, independent of the layout's draws)."""
    name = parse_variation(name)
    rng = np.random.default_rng([int(seed), 14])
    if name == "none":
        return Variation()
    if name.startswith("table"):
        return Variation(name, table_dz=table_dz(name))
    if name == "colour":
        task_cubes = [c for c in task_objects if c in cubes] or list(cubes)  # no cube in the task: all of them
        picks = rng.choice(list(UNSEEN_COLOURS), size=len(task_cubes), replace=False)
        return Variation(name, colours={c: (str(k), UNSEEN_COLOURS[str(k)]) for c, k in zip(task_cubes, picks)})
    # distractors: every cube not in the task, on a ring around the task's first object
    anchor = layout[task_objects[0]]
    out = dict(layout)
    for cube in (c for c in cubes if c not in task_objects):
        for _ in range(500):
            r, a = rng.uniform(*DISTRACTOR_RING), rng.uniform(-math.pi, math.pi)
            x, y = anchor.x + r * math.cos(a), anchor.y + r * math.sin(a)
            if math.hypot(x, y) > 0.56 or not 0.25 <= x:  # stay on the table, in front of the base
                continue
            clear = all(math.hypot(x - p.x, y - p.y) >= FOOTPRINT_RADIUS[cube] + FOOTPRINT_RADIUS[o] + 0.005
                        for o, p in out.items() if o != cube)
            if clear:
                out[cube] = replace(layout[cube], x=x, y=y)
                break
    return Variation(name, layout=out)



def table_dz(variation: str | None) -> float:
    """Table-top height change of a variation, m."""
    return {"table+2cm": 0.02, "table-2cm": -0.02}.get(parse_variation(variation), 0.0)


def limits_for(limits, variation: str | None):
    """The arm limits for a scene variation: a lowered table lowers the workspace floor with it (the
    floor keeps the fingers 5 mm off the table top, as a lab re-measures it after swapping tables);
    everything else unchanged."""
    dz = table_dz(variation)
    if dz >= 0:
        return limits
    ws = limits.workspace
    return replace(limits, workspace=replace(ws, lo=(ws.lo[0], ws.lo[1], ws.lo[2] + dz)))


def colour_instructions(instruction: str, task_objects: tuple[str, ...]) -> list[str]:
    """Every instruction the ``colour`` variation can produce for a task (to encode ahead of time)."""
    from itertools import permutations

    cubes = [c for c in task_objects if c.startswith("cube_")]
    out = []
    for names in permutations(UNSEEN_COLOURS, len(cubes)):
        out.append(Variation("colour", colours={c: (n, UNSEEN_COLOURS[n]) for c, n in zip(cubes, names)}).instruction(instruction))
    return sorted(set(out))
