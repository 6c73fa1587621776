"""The checkpoints shipped in assets/checkpoints/, found by what they are for.

``assets/checkpoints/bundled.json`` says, per file, its kind (expert, keypoints, encoder), the task
it was trained on and the arm families its demos came from. ``main.py rollout`` uses it when no
checkpoint is given, so ``rollout --task pick_cube`` works out of the box and a task or robot the
bundle was never trained for gets a one-line answer instead of a wrong model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"
MANIFEST = "bundled.json"


class NoBundledCheckpoint(ValueError):
    """No shipped checkpoint fits; the message says what ships and how to pass one."""


@dataclass(frozen=True)
class Bundled:
    path: Path
    kind: str
    task: str
    robots: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.path.name} ({self.kind}, {self.task} on {'/'.join(self.robots)})"


def robot_family(robot: str) -> str:
    """'sim-xarm6' / 'xarm6:192.168.1.208' → 'xarm6'; 'sim-franka' / 'franka:<ip>' → 'franka'."""
    from robots.factory import parse_arm

    return parse_arm(robot).kind.removeprefix("sim-")


def bundled_checkpoints(folder: Path = BUNDLED_DIR) -> list[Bundled]:
    """Every manifest entry whose file is present."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return []
    entries = json.loads(manifest.read_text())["checkpoints"]
    out = [Bundled(folder / e["file"], e["kind"], e["task"], tuple(e["robots"])) for e in entries]
    return [b for b in out if b.path.is_file()]


def bundled_checkpoint(kind: str, task: str, robot: str, folder: Path = BUNDLED_DIR) -> Path:
    """The shipped ``kind`` checkpoint for ``task`` on ``robot``'s arm family, or
    ``NoBundledCheckpoint`` naming what does ship (and the flag to pass instead)."""
    family = robot_family(robot)
    of_kind = [b for b in bundled_checkpoints(folder) if b.kind == kind]
    for b in of_kind:
        if b.task in (task, "*") and family in b.robots:
            return b.path
    flag = {"expert": "--checkpoint", "keypoints": "--keypoints"}.get(kind, "a checkpoint path")
    shipped = ", ".join(b.describe() for b in of_kind) or "none"
    raise NoBundledCheckpoint(f"no bundled {kind} checkpoint for task '{task}' on {family} "
                              f"(bundled: {shipped}); train one and pass {flag} PATH")
