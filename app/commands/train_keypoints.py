"""``python main.py train keypoints …`` (also ``train-keypoints``): train the CLAP-style keypoint
predictor (policies/keypoints.py) on annotated episodes, hold out whole episodes, and print the
keypoint error (cm, median / 90th percentile) on them.

    python main.py train keypoints --episodes data/pick_cube_50 --out runs/keypoints_pick

Writes OUT/keypoints.pt (weights + config + text features + the task plans) and OUT/metrics.json.
``--progress json`` prints one JSON object per line (events start / step / eval / done) for the GUI.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "train the CLAP-style keypoint predictor (predicted waypoints)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--episodes", nargs="+", required=True, help="episode files or folders (*.h5) with segments")
    p.add_argument("--out", default="runs/keypoints", help="run folder (default %(default)s)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--holdout", type=float, default=0.2, help="share of episodes held out for the error figures")
    p.add_argument("--final", action="store_true",
                   help="after the held-out evaluation, retrain on every episode for the saved checkpoint")
    p.add_argument("--all", action="store_true", help="also use failed episodes (default: successes only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default %(default)s: shared boxes)")
    p.add_argument("--width", type=int, default=64, help="network width (fresh runs)")
    p.add_argument("--task-text", action="store_true",
                   help="condition on the task instruction even with one task (on by default with several)")
    p.add_argument("--no-colour-cues", action="store_true",
                   help="do not give the model per-point cues of the colours the task instruction names")
    p.add_argument("--colour-swap", type=float, default=0.5, metavar="P",
                   help="per sample, swap the cubes' colours in its cloud and its texts alike with probability P "
                        "(teaches the colour words; inert when no text names red, green or blue; default %(default)s)")
    p.add_argument("--progress", choices=("json", "text", "none"), default="text")


def register(subparsers) -> None:
    p = subparsers.add_parser("train-keypoints", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    from app.commands import add_to_train

    add_to_train(subparsers, "keypoints", HELP, __doc__, add_arguments, run)


def _fmt(s: dict) -> str:
    return f"{s['median_cm']:.1f} / {s['p90_cm']:.1f} cm (n={s['n']})" if s.get("n") else "–"


def run(args) -> int:
    import torch

    from policies.datasets import open_episodes
    from policies.keypoints import (KeypointConfig, KeypointError, KeypointTrainConfig, TextTable, build_dataset,
                                    evaluate, save_checkpoint, split_by_episode, train_keypoints)
    from policies.text import TextEncoderError
    from recorder.schema import EpisodeError

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    emit_json = args.progress == "json"

    def say(text: str) -> None:
        if args.progress != "none":
            print(text, file=sys.stderr, flush=True)

    def progress(ev: dict) -> None:
        if emit_json:
            print(json.dumps(ev), flush=True)
        elif args.progress == "text":
            say(f"step {ev['step']}/{ev['steps']}  loss {ev['loss']:.3f}  train median err {ev['train_err_cm']:.1f} cm"
                f"  ({ev['elapsed_s']:.0f} s)")

    try:
        if args.steps < 1 or args.batch_size < 1 or not 0 < args.holdout < 1:
            raise ValueError("--steps and --batch-size must be positive, --holdout in (0, 1)")
        eps = open_episodes(args.episodes)
        data = build_dataset(eps, successes_only=not args.all, log=None if emit_json else say)
        train, test = split_by_episode(data, args.holdout, args.seed)
        say(f"{len(data.episode_names)} episodes, {len(data)} samples: {len(set(train.episode.tolist()))} episodes train"
            f" / {len(set(test.episode.tolist()))} held out; plans {json.dumps(data.plans)}")
        text = TextTable(data.texts)
        # More than one task: condition on the task instruction (one predictor for all of them).
        task_text = len(data.plans) > 1 or args.task_text
        # Colour words read through the colour table (policies/colour_swap.py) whenever the task
        # instruction is an input.
        mcfg = KeypointConfig(width=args.width, task_text=task_text, colour_cues=task_text and not args.no_colour_cues)
        if not 0 <= args.colour_swap <= 1:
            raise ValueError("--colour-swap is a probability in [0, 1]")
        tcfg = KeypointTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                   colour_swap=args.colour_swap)
        if emit_json:
            print(json.dumps({"event": "start", "samples": len(data), "episodes": len(data.episode_names)}), flush=True)
        res = train_keypoints(train, mcfg, tcfg, text, progress=progress)
        ev = evaluate(res.model, test, text)
        errs = ev.pop("errors_cm")
        metrics = {"held_out": ev, "held_out_episodes": sorted({test.episode_names[i] for i in set(test.episode.tolist())}),
                   "train_seconds": round(res.seconds, 1), "steps": args.steps, "samples": len(data),
                   "episodes": len(data.episode_names)}
        model = res.model
        if args.final:
            say("retraining on every episode for the saved checkpoint")
            model = train_keypoints(data, mcfg, tcfg, text, progress=progress).model
            metrics["final_on_all_episodes"] = True
        out = Path(args.out)
        ckpt = save_checkpoint(out / "keypoints.pt", model, data.texts, text.features, data.plans, metrics,
                               data.task_instructions)
        (out / "metrics.json").write_text(json.dumps({**metrics, "errors_cm": [round(float(e), 3) for e in errs]},
                                                     indent=2, default=float))
    except (KeypointError, TextEncoderError, EpisodeError, ValueError, OSError) as exc:
        print("train keypoints: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    if emit_json:
        print(json.dumps({"event": "done", "checkpoint": str(ckpt), "held_out": ev}, default=float), flush=True)
    print(f"held-out keypoint error (median / 90th): all {_fmt(ev['all'])}; from the step's own cloud "
          f"{_fmt(ev['step_start_cloud'])}; plan from the first frame {_fmt(ev['first_frame_plan'])}; "
          f"gripper accuracy {ev['gripper_accuracy'] * 100:.0f} %, yaw median {ev['yaw_median_deg']:.1f}°",
          flush=True)
    for k, s in ev["per_step"].items():
        print(f"  step {k}: {_fmt(s)}", flush=True)
    print(f"checkpoint {ckpt}", flush=True)
    return 0
