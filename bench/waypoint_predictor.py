"""How far are predicted waypoints from the oracle's, per task and scene variation?

    python -m bench.waypoint_predictor --keypoints A.pt [B.pt …] [--robot sim-xarm6] [--seeds 6]

For held-out layouts (seeds 1000+) of every task under every scene variation
(robots/sim/variations.py), the simulated lab is reset (lock-step: no real time needed), the camera's
first frame after the reset goes to each keypoint checkpoint through ``PredictedSource`` with the
trial's instruction (the colour variation names the new colours), and the contact waypoints
(grasp, place, press) are compared with the oracle's. Cells: median / max contact error in cm over the
seeds' contacts, and how many trials had every contact within 2 cm (what a grasp of a 4 cm cube
tolerates). Offline and minutes long: run it before spending real-time rollouts on a predictor.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

CONTACTS = ("grasp", "place", "press")


def reset_and_look(lab, cam, task: str, seed: int, variation: str | None = None):
    """Reset the lab and return the first camera frame rendered after the reset. The camera's
    buffer may still hold a frame of the scene before (its stamp says so): a predictor given that
    one placed seed 1001's grasp on seed 1000's cube, 51 cm away."""
    since = time.monotonic()
    lab.reset(task, seed, variation=variation)
    while True:
        lab.advance(0.2)
        frame = cam.wait_frame(5.0)
        if frame.stamp > since:
            return frame


def measure(predictors: dict, robot: str, tasks, variations, seeds: int) -> dict:
    from policies.keypoints import KeypointError, PredictedSource
    from robots.sim.lab import SimLab

    out: dict = {}
    lab = SimLab.start(robot.removeprefix("sim-"), realtime=False, render_hz=5.0)
    try:
        cam = lab.camera()
        cam.start()
        for var in variations:
            for task in tasks:
                for s in range(seeds):
                    frame = reset_and_look(lab, cam, task, 1000 + s, var)
                    oracle = [w for w in lab.oracle_waypoints() if w.phase in CONTACTS]
                    instruction = lab.task_info["instruction"]
                    for name, pred in predictors.items():
                        cell = out.setdefault((name, var, task), {"errors": [], "ok": 0, "n": 0, "wrong_task": 0})
                        cell["n"] += 1
                        try:
                            src = PredictedSource(pred, task=task, instruction=instruction)
                            wps = [w for w in src.waypoints(frame) if w.label in CONTACTS]
                        except KeypointError:
                            cell["wrong_task"] += 1
                            continue
                        if src.task != task or [w.label for w in wps] != [w.phase for w in oracle]:
                            cell["wrong_task"] += 1
                            continue
                        errs = [float(np.linalg.norm(g.pose[:3] - o.pose[:3])) * 100 for g, o in zip(wps, oracle)]
                        cell["errors"] += errs
                        cell["ok"] += int(max(errs) <= 2.0)
                        if max(errs) > 2.0:
                            off = [f"{o.phase} {e:.1f} cm (predicted {np.round(g.pose[:3], 3).tolist()}"
                                   f" vs {np.round(o.pose[:3], 3).tolist()})"
                                   for g, o, e in zip(wps, oracle, errs) if e > 2.0]
                            cell.setdefault("misses", []).append(f"seed {1000 + s}: " + ", ".join(off))
    finally:
        lab.close()
    return out


def main(argv: list[str] | None = None) -> int:
    from policies.keypoints import KeypointPredictor
    from robots.sim.tasks import TASKS
    from robots.sim.variations import VARIATIONS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keypoints", nargs="+", required=True)
    ap.add_argument("--robot", default="sim-xarm6", choices=("sim-xarm6", "sim-franka"))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--variations", nargs="+", default=list(VARIATIONS), choices=list(VARIATIONS))
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    predictors = {p: KeypointPredictor.load(p) for p in args.keypoints}
    t0 = time.monotonic()
    res = measure(predictors, args.robot, args.tasks, args.variations, args.seeds)
    print(f"{args.robot}, seeds 1000-{999 + args.seeds} per cell, {time.monotonic() - t0:.0f} s; contact waypoint "
          "error vs the oracle, cm: median / max, and trials with every contact within 2 cm")
    print("| keypoints | variation | " + " | ".join(args.tasks) + " |")
    print("|---|---|" + "---|" * len(args.tasks))
    for name in args.keypoints:
        for var in args.variations:
            cells = []
            for task in args.tasks:
                c = res[(name, var, task)]
                e = np.asarray(c["errors"])
                txt = f"{np.median(e):.1f} / {e.max():.1f}, {c['ok']}/{c['n']}" if len(e) else f"–, 0/{c['n']}"
                if c["wrong_task"]:
                    txt += f" ({c['wrong_task']} wrong plan)"
                cells.append(txt)
            print(f"| {name} | {var} | " + " | ".join(cells) + " |")
    print("\nContacts more than 2 cm off:")
    for (name, var, task), c in res.items():
        for m in c.get("misses", []):
            print(f"- {name}, {var}, {task}, {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
