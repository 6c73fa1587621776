"""`python main.py record` and `python main.py sim-demos`: record episodes headless.

    record     any robot / camera / input (SpaceMouse, keyboard, the sim's scripted operator);
               on hardware the operator types the outcome after each episode
    sim-demos  the simulated lab's scripted expert drives the arm directly (a target source, no
               twist integration) — the quickest way to a dataset for training
"""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from app.config import add_device_args, add_lab_args, lab_config_from_args
from app.episodes import EpisodeResult, run_episode
from app.recording import RecordingService
from app.session import DeviceSession
from robots.base import DeviceError


def register(subparsers) -> None:
    p = subparsers.add_parser("record", help="record episodes with a teleop input",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(p, default_input="scripted")
    add_lab_args(p)
    _common(p)
    p.add_argument("--episodes", type=int, default=1, help="number of episodes (default %(default)s)")
    p.set_defaults(func=run_record)

    q = subparsers.add_parser("sim-demos", help="record scripted-expert demonstrations in the simulated lab",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(q, devices=("robot", "camera", "rate"), sim_only=True)
    _common(q)
    q.add_argument("--n", type=int, default=10, help="number of demonstrations (default %(default)s)")
    q.set_defaults(func=run_sim_demos)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="pick_cube",
                   help="task name: pick_cube | place_in_bin | stack_cubes | press_button (default %(default)s)")
    p.add_argument("--instruction", default=None, help="language instruction (default: the task's own)")
    p.add_argument("--out", required=True, help="dataset folder to write episodes into")
    p.add_argument("--seed", type=int, default=0, help="first layout seed; episode i uses seed+i")
    p.add_argument("--operator", default="", help="operator name stored in the episodes")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longest episode (default %(default)s)")


def _ask_outcome(result: EpisodeResult) -> tuple[str, str]:
    if not sys.stdin.isatty():
        return "unknown", f"ended: {result.reason}"
    while True:
        answer = input(f"episode {result.path.name if result.path else ''} ended ({result.reason}): "
                       "[s]uccess, [f]ailure, [d]iscard? ").strip().lower()
        if answer[:1] in ("s", "f", "d"):
            outcome = {"s": "success", "f": "failure", "d": "discard"}[answer[:1]]
            notes = "" if outcome == "discard" else input("notes (optional): ")
            return outcome, notes


def _record_many(session: DeviceSession, args, n: int, use_expert: bool) -> int:
    recorder = RecordingService(args.out, robot=str(session.robot_uri), camera=session.camera,
                                operator=args.operator)
    results: list[EpisodeResult] = []
    bar = tqdm(range(n), desc=f"{args.task}", unit="ep", file=sys.stderr)
    for i in bar:
        source = None
        if use_expert:
            from robots.sim.expert import ScriptedExpert

            source = ScriptedExpert(session.lab, session.arm, rate_hz=session.rate_hz)
        result = run_episode(session, recorder, args.task, args.seed + i, source=source,
                             max_seconds=args.max_seconds, instruction=args.instruction,
                             decide_outcome=_ask_outcome)
        results.append(result)
        ok = sum(r.outcome == "success" for r in results)
        bar.set_postfix(success=f"{ok}/{len(results)}", dropped=sum(r.dropped for r in results))
        tqdm.write(f"  {result.path.name if result.path else '(discarded)'}: {result.outcome}, "
                   f"{result.frames} frames, {result.dropped} dropped, {result.reason}", file=sys.stderr)
    ok = sum(r.outcome == "success" for r in results)
    print(f"recorded {sum(r.path is not None for r in results)} episodes into {args.out}: "
          f"{ok} success, {sum(r.outcome == 'failure' for r in results)} failure, "
          f"{sum(r.dropped for r in results)} frames dropped")
    return 0


def run_record(args) -> int:
    try:
        lab = lab_config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with DeviceSession(args.robot, args.camera, args.input, args.rate, task=args.task,
                           seed=args.seed, lab=lab) as session:
            for w in session.warnings:
                print(f"warning: {w}", file=sys.stderr)
            return _record_many(session, args, args.episodes, use_expert=False)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_sim_demos(args) -> int:
    if not args.robot.startswith("sim-"):
        print(f"error: sim-demos needs a simulated robot (sim-franka | sim-xarm6), not {args.robot!r}",
              file=sys.stderr)
        return 2
    try:
        with DeviceSession(args.robot, args.camera, "none", args.rate, task=args.task,
                           seed=args.seed) as session:
            return _record_many(session, args, args.n, use_expert=True)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
