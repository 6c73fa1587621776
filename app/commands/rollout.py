"""`python main.py rollout`: evaluate a policy over N trials and write the report.

    python main.py rollout --checkpoint assets/checkpoints/expert_multitask.pt --robot sim-xarm6 \\
        --task pick_cube --waypoints oracle --trials 20 --out runs/eval_pick
    python main.py rollout --task pick_cube --out runs/eval_pick    # the same: bundled checkpoint, sim-xarm6

Without --checkpoint (policy expert) the bundled checkpoint for the task and the robot's arm is used
(assets/checkpoints/bundled.json); none fits → a one-line message naming what ships.

Every trial is saved as an episode under OUT/episodes; OUT/report.json, trials.csv and report.png are
rewritten after each trial. In the simulated lab the outcome comes from the task's success predicate;
on hardware the operator confirms each reset (Enter) and types the outcome (s/f + reason).
Each trial is segmented into the task's atomic actions (report: success by subtask, where and why each
failed trial failed); --save-failures DIR turns the failed trials into a correction dataset.
Exit code 0 when all trials ran, 2 on bad arguments or a device error, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys
import threading

from app.config import add_device_args, add_lab_args, lab_config_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser("rollout", help="evaluate a policy checkpoint over N trials (success report)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="action-expert checkpoint (.pt); default: the bundled one for --task on --robot's arm "
                        "(assets/checkpoints/bundled.json)")
    p.add_argument("--policy", choices=("expert", "spline-ik"), default="expert",
                   help="expert: the checkpoint; spline-ik: execute the waypoint spline directly (baseline)")
    add_device_args(p, devices=("robot", "camera", "rate"), defaults={"robot": "sim-xarm6"})
    p.add_argument("--task", default="pick_cube")
    p.add_argument("--waypoints", default="oracle", metavar="{oracle,oracle-sparse,none,keyframes,predicted[:PATH]}",
                   help="guidance source: the sim task's oracle, only its gripper-change waypoints (oracle-sparse), none, the keyframes of --demo, or the keypoint "
                        "predictor's (checkpoint from --keypoints or after 'predicted:')")
    p.add_argument("--keypoints", default=None, help="keypoint-predictor checkpoint for --waypoints predicted "
                                                     "(default: the bundled one for --task)")
    p.add_argument("--instruction", default=None,
                   help="what to do, in words, for --waypoints predicted: picks the predictor's plan and conditions "
                        "its keypoints (default: the task's own instruction)")
    p.add_argument("--variation", default="none",
                   choices=("none", "distractors", "colour", "table+2cm", "table-2cm"),
                   help="sim only: a scene change no demo showed, on every trial (robots/sim/variations.py)")
    p.add_argument("--demo", default=None, help="episode file whose keyframes are the waypoints")
    p.add_argument("--waypoint-noise", type=float, default=0.0,
                   help="std (m) of Gaussian noise added to each waypoint position (default 0)")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=1000, help="trial i uses layout seed SEED+i (default %(default)s)")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=15.0, help="trial timeout (default %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device for the policy (cpu | cuda)")
    p.add_argument("--out", required=True, help="run folder for the report and the trial episodes")
    p.add_argument("--save-failures", default=None, metavar="DIR",
                   help="after the run, write a correction dataset of the failed trials into DIR: in the sim the "
                        "scripted expert takes over each failed trial where it failed (DAgger-style, app/corrections.py); "
                        "on hardware the failed episodes are copied for correcting in Annotate")
    p.add_argument("--home", action=argparse.BooleanOptionalAction, default=None,
                   help="home the arm before every trial (default: on hardware yes; the sim's reset homes it)")
    add_lab_args(p)
    p.set_defaults(func=run_rollout)


def _ask_reset(i: int) -> bool:
    if not sys.stdin.isatty():
        print("error: hardware rollouts need an operator at a terminal (reset confirmation)", file=sys.stderr)
        return False
    return input(f"trial {i + 1}: reset the scene, then press Enter (q to stop) ").strip().lower() != "q"


def _ask_outcome(i: int, ended: str) -> tuple[str, str]:
    if not sys.stdin.isatty():
        return "failure", "operator"
    while True:
        a = input(f"trial {i + 1} ended ({ended}): [s]uccess or [f]ailure? ").strip().lower()
        if a[:1] in ("s", "f"):
            reason = "success" if a[0] == "s" else (input("reason (timeout, dropped_object, …): ").strip() or "operator")
            return ("success" if a[0] == "s" else "failure"), reason


def _bundled_defaults(args) -> None:
    """Fill --checkpoint / --keypoints with the bundled checkpoints for the task and arm, and say so."""
    from policies.bundled import bundled_checkpoint

    if args.policy == "expert" and not args.checkpoint:
        args.checkpoint = str(bundled_checkpoint("expert", args.task, args.robot))
        print(f"rollout: no --checkpoint, using the bundled {args.checkpoint}", file=sys.stderr)
    if args.waypoints == "predicted" and not args.keypoints:
        args.keypoints = str(bundled_checkpoint("keypoints", args.task, args.robot))
        print(f"rollout: no --keypoints, using the bundled {args.keypoints}", file=sys.stderr)


def _save_failures(session, run_dir: str, out_dir: str) -> None:
    from app.corrections import copy_failures, record_corrections

    if session.lab is None:
        paths = copy_failures(run_dir, out_dir)
        print(f"failures: {len(paths)} failed episodes copied to {out_dir}")
        return
    done = record_corrections(session, run_dir, out_dir, progress=lambda m: print(f"correction: {m}", flush=True))
    kept = [c for c in done if c.path is not None]
    print(f"failures: {len(kept)}/{len(done)} failed trials corrected by the expert -> {out_dir} "
          f"(train: python main.py train expert --episodes {out_dir} …)")


def run_rollout(args) -> int:
    from app.rollout import RolloutConfig, RolloutRunner
    from app.session import DeviceSession
    from robots.base import DeviceError

    try:
        _bundled_defaults(args)
        cfg = RolloutConfig(task=args.task, checkpoint=args.checkpoint, policy=args.policy, waypoints=args.waypoints,
                            demo=args.demo, trials=args.trials, seed=args.seed, ddim_steps=args.ddim_steps,
                            max_seconds=args.max_seconds, waypoint_noise=args.waypoint_noise, out_dir=args.out,
                            device=args.device, keypoints=args.keypoints, home_between=args.home,
                            instruction=args.instruction, variation=args.variation)
        lab = lab_config_from_args(args)
    except ValueError as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 2
    printed = [0]
    lock = threading.Lock()
    try:
        with DeviceSession(args.robot, args.camera, "none", args.rate, task=args.task, seed=args.seed,
                           lab=lab) as session:
            for w in session.warnings:
                print(f"warning: {w}", file=sys.stderr)
            runner = RolloutRunner(session, cfg, ask_reset=_ask_reset, ask_outcome=_ask_outcome)

            def on_update() -> None:
                s = runner.snapshot()
                with lock:
                    for t in s.trials[printed[0]:]:
                        k = sum(x.success for x in s.trials[: t.index + 1])
                        print(f"trial {t.index + 1:3d}/{cfg.trials} seed {t.seed}: {t.outcome:7s} {t.reason:16s} "
                              f"{t.duration_s:5.1f} s  latency p50 {t.latency_p50_ms:5.1f} ms  "
                              f"running {k}/{t.index + 1}"
                              + (f"  failed at {t.failed_at}: {t.diagnosis}" if t.failed_at else ""), flush=True)
                    printed[0] = len(s.trials)

            runner.on_update = on_update
            trials = runner.run()
            if args.save_failures:
                _save_failures(session, args.out, args.save_failures)
    except (DeviceError, ValueError, FileNotFoundError) as exc:
        print(f"rollout: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    from app.success import summarize, wilson_interval

    for task, s in summarize(trials).items():
        lo, hi = wilson_interval(s.successes, s.trials)
        print(f"{task}: {s.successes}/{s.trials} = {s.rate * 100:.0f} % (Wilson 95 % CI {lo * 100:.0f}–{hi * 100:.0f} %), "
              f"reasons {s.reasons}")
    from app.success import subtask_summary

    for st in subtask_summary(trials):
        print(f"  {st.task} {st.subtask:10s} {st.completed}/{st.reached} completed"
              f" (Wilson 95 % CI {st.ci_low * 100:.0f}–{st.ci_high * 100:.0f} %), failed here {st.failed_here}")
    print(f"report: {args.out}/report.json, trials.csv, subtasks.csv, report.png")
    return 0
