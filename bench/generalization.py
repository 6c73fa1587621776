"""Issue-14 generalization table: one expert, every sim task, both arms, held-out layouts and scene
variations, against executing the waypoints directly (spline + IK).

    python -m bench.generalization --robots sim-xarm6 sim-franka --trials 20 --out runs/generalization \\
        --checkpoint assets/checkpoints/expert_multitask.pt --keypoints assets/checkpoints/keypoints_multitask.pt
    # variations only (held-out layouts are the default "none"), predicted waypoints
    python -m bench.generalization --conditions expert:predicted spline-ik:predicted \\
        --variations distractors colour table+2cm table-2cm --trials 10 --out runs/generalization_var

A condition is ``POLICY:WAYPOINTS[:NOISE_M]`` (policy expert | spline-ik; waypoints oracle |
predicted | none); "expert:oracle:0.02" is the expert guided by the oracle's waypoints displaced by
2 cm (Gaussian, per axis, drawn from the trial's seed: the same displaced waypoints for every policy).
Every cell runs the same seeds (held-out layouts: the demos used seeds 0-39), in real time, through
the same runner as ``main.py rollout`` (safety filter, recorder, subtask tracking). Each cell's run
folder (report.json/csv/png, trial episodes) is OUT/<robot>/<variation>/<task>/<condition>; OUT/table.md
and OUT/table.json are rewritten after every cell, so a stopped run keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

TASKS = ("pick_cube", "place_in_bin", "stack_cubes", "press_button")
DEFAULT_CONDITIONS = ("expert:predicted", "spline-ik:predicted", "expert:oracle:0.02", "spline-ik:oracle:0.02",
                      "expert:oracle", "spline-ik:oracle")


def parse_condition(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("expert", "spline-ik"):
        raise ValueError(f"condition {text!r}: expected POLICY:WAYPOINTS[:NOISE_M], POLICY expert or spline-ik")
    noise = float(parts[2]) if len(parts) == 3 else 0.0
    return {"label": text, "policy": parts[0], "waypoints": parts[1], "noise": noise}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def run(args) -> int:
    import torch

    from app.rollout import RolloutConfig, RolloutRunner
    from app.session import DeviceSession
    from app.success import summarize

    torch.set_num_threads(1)
    conditions = [parse_condition(c) for c in args.conditions]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = _load(out)
    load0 = os.getloadavg()[0]
    for robot in args.robots:
        with DeviceSession(robot, "sim", "none", 20.0, task=args.tasks[0], seed=args.seed) as session:
            for variation in args.variations:
                for task in args.tasks:
                    for c in conditions:
                        key = (robot, variation, task, c["label"])
                        if key in done:
                            continue
                        cfg = RolloutConfig(task=task, checkpoint=args.checkpoint, policy=c["policy"],
                                            waypoints=c["waypoints"], keypoints=args.keypoints, trials=args.trials,
                                            seed=args.seed, ddim_steps=args.ddim_steps, max_seconds=args.max_seconds,
                                            waypoint_noise=c["noise"], variation=variation,
                                            out_dir=str(out / _slug(robot) / variation / task / _slug(c["label"])))
                        t0 = time.monotonic()
                        trials = RolloutRunner(session, cfg).run()
                        s = summarize(trials)[task]
                        fails = {}
                        for t in trials:
                            if not t.success:
                                k = f"{t.failed_at or '?'}: {t.diagnosis or t.reason}"
                                fails[k] = fails.get(k, 0) + 1
                        done[key] = {"robot": robot, "variation": variation, "task": task, **c,
                                     "successes": s.successes, "trials": s.trials, "rate": s.rate,
                                     "ci_low": s.ci_low, "ci_high": s.ci_high, "reasons": s.reasons,
                                     "failures": fails, "wall_s": round(time.monotonic() - t0, 1),
                                     "load": round(os.getloadavg()[0], 1)}
                        print(f"{robot} {variation} {task} {c['label']}: {s.successes}/{s.trials} "
                              f"[{s.ci_low * 100:.0f}–{s.ci_high * 100:.0f} %] {fails or ''}", flush=True)
                        _write(out, done, args, load0)
    _write(out, done, args, load0)
    print((out / "table.md").read_text())
    return 0


def _load(out: Path) -> dict:
    f = out / "table.json"
    if not f.is_file():
        return {}
    rows = json.loads(f.read_text())["rows"]
    return {(r["robot"], r["variation"], r["task"], r["label"]): r for r in rows}


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    return f"{r['successes']}/{r['trials']} ({r['ci_low'] * 100:.0f}–{r['ci_high'] * 100:.0f})"


def _write(out: Path, done: dict, args, load0: float) -> None:
    rows = list(done.values())
    labels = list(dict.fromkeys([*args.conditions, *(r["label"] for r in rows)]))
    lines = [f"{args.trials} seeded trials per cell (seeds {args.seed}…{args.seed + args.trials - 1}: held-out layouts), "
             f"DDIM {args.ddim_steps}, trials ≤ {args.max_seconds:g} s; success k/n (Wilson 95 %, %); "
             f"load average {load0:.1f} → {os.getloadavg()[0]:.1f} on 2 shared cores", ""]
    for robot in dict.fromkeys(r["robot"] for r in rows):
        for variation in dict.fromkeys(r["variation"] for r in rows if r["robot"] == robot):
            lines += [f"**{robot}, scene: {variation}**", "",
                      "| task | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
            for task in dict.fromkeys(r["task"] for r in rows if r["robot"] == robot and r["variation"] == variation):
                cells = [_cell(done.get((robot, variation, task, lab))) for lab in labels]
                lines.append(f"| {task} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["Failures (subtask: diagnosis × count):", ""]
    for r in rows:
        if r["failures"]:
            f = "; ".join(f"{k} ×{n}" for k, n in r["failures"].items())
            lines.append(f"- {r['robot']} {r['variation']} {r['task']} {r['label']}: {f}")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps({"args": vars(args), "load_start": load0, "rows": rows}, indent=1,
                                               default=str))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generalization", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robots", nargs="+", default=["sim-xarm6", "sim-franka"])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS), help="POLICY:WAYPOINTS[:NOISE_M]")
    p.add_argument("--variations", nargs="+", default=["none"],
                   choices=("none", "distractors", "colour", "table+2cm", "table-2cm"))
    p.add_argument("--checkpoint", default="assets/checkpoints/expert_multitask.pt")
    p.add_argument("--keypoints", default="assets/checkpoints/keypoints_multitask.pt")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=20.0)
    p.add_argument("--out", default="runs/generalization")
    args = p.parse_args(argv)
    try:
        for c in args.conditions:
            parse_condition(c)
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"generalization: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
