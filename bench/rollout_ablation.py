"""Issue-5 experiments: the action expert against its ablations on a sim task, one table.

    # (b) needs its own fine-tune: guidance slots filled with the current pose (no waypoint information)
    python -m bench.rollout_ablation train-noguide --init runs/pick_stage1/last.pt \\
        --episodes data/pick_cube_50 --steps 600 --batch-size 32 --out runs/pick_noguide
    # every variant: 20 seeded trials each (same seeds), one sim session, a markdown table at the end
    python -m bench.rollout_ablation eval --task pick_cube --trials 20 --out runs/ablation \\
        --variant "expert=expert:runs/pick_expert/last.pt:oracle" \\
        --variant "(a) waypoints + IK=spline-ik::oracle" \\
        --variant "(b) no guidance=expert:runs/pick_noguide/last.pt:none" \\
        --variant "(c) no stage 1=expert:runs/pick_nostage1/last.pt:oracle"
    # waypoints from the keypoint predictor instead of the oracle (policies/keypoints.py)
    python -m bench.rollout_ablation eval --task pick_cube --trials 20 --out runs/kp_pick \
        --variant "spline-ik oracle=spline-ik::oracle" \
        --variant "spline-ik predicted=spline-ik::predicted:assets/checkpoints/keypoints_multitask.pt"

A variant is ``LABEL=POLICY:CHECKPOINT:WAYPOINTS[:NOISE_M]``; NOISE_M perturbs the waypoint positions
at test time (imprecise waypoints). Each variant's run folder (report.json/csv/png + trial episodes) is
OUT/<slug>; OUT/ablation.json and OUT/ablation.md hold the table. Rollouts run in real time on the
simulated xArm6 (the same loop, safety filter and recorder as `main.py rollout`), so figures from a
loaded machine include its timing noise: the table states the load average at the start and end.
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


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "variant"


def parse_variant(text: str) -> dict:
    label, sep, spec = text.partition("=")
    # "predicted:PATH" names the keypoint checkpoint inside the waypoint field; keep it one field.
    spec = re.sub(r":predicted:([^:]+)", lambda m: ":predicted=" + m.group(1), spec)
    parts = [p.replace("predicted=", "predicted:", 1) for p in spec.split(":")]
    if not sep or len(parts) not in (3, 4) or not label.strip():
        raise ValueError(f"variant must be LABEL=POLICY:CHECKPOINT:WAYPOINTS[:NOISE_M], got {text!r}")
    noise = float(parts[3]) if len(parts) == 4 else 0.0
    return {"label": label.strip(), "policy": parts[0], "checkpoint": parts[1] or None, "waypoints": parts[2],
            "noise": noise}


# ------------------------------------------------------------------ (b) training without guidance


def noguide_windows(windows):
    """The same windows with every guidance pose replaced by the current state (what PolicyRuntime
    feeds a checkpoint run with ``--waypoints none``): the model learns from state and cloud alone."""
    from policies.datasets import Windows

    cur = windows.state[:, -1:, :]
    guide = cur.expand(-1, windows.guide.shape[1], -1).clone()
    return Windows(windows.state, guide, windows.action, windows.cloud_index, windows.clouds, target=windows.target)


def train_noguide(args) -> int:
    import torch

    from policies.action_expert import ActionExpert, ExpertConfig
    from policies.datasets import Windows, episode_windows, open_episodes
    from policies.train import TrainConfig, train

    torch.set_num_threads(1)
    mcfg = ExpertConfig.from_dict(ActionExpert.read_checkpoint(args.init)["config"])
    eps = [e for e in open_episodes(args.episodes) if args.all or e.meta.get("outcome") == "success"]
    w = noguide_windows(Windows.concat([episode_windows(e, mcfg) for e in eps]))
    cfg = TrainConfig(stage="finetune", out_dir=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      goal_noise=0.0, seed=args.seed, log_every=20, ckpt_every=200)
    res = train(cfg, w, mcfg, init_checkpoint=args.init, progress="json")
    print(f"no-guidance expert: {len(eps)} episodes, {len(w)} windows, step {res.step}, loss {res.loss:.4f}, "
          f"{res.checkpoint}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ evaluation


def run_eval(args) -> int:
    import torch

    from app.rollout import RolloutConfig, RolloutRunner
    from app.session import DeviceSession
    from app.success import summarize

    torch.set_num_threads(1)
    variants = [parse_variant(v) for v in args.variant]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    rows = []
    with DeviceSession(args.robot, "sim", "none", 20.0, task=args.task, seed=args.seed) as session:
        for v in variants:
            cfg = RolloutConfig(task=args.task, checkpoint=v["checkpoint"], policy=v["policy"],
                                waypoints=v["waypoints"], trials=args.trials, seed=args.seed,
                                ddim_steps=args.ddim_steps, max_seconds=args.max_seconds,
                                waypoint_noise=v["noise"], out_dir=str(out / _slug(v["label"])))
            t0 = time.monotonic()
            trials = RolloutRunner(session, cfg).run()
            s = summarize(trials)[args.task]
            lat = [t.latency_p50_ms for t in trials if np.isfinite(t.latency_p50_ms)]
            rows.append({**v, "successes": s.successes, "trials": s.trials, "rate": s.rate, "ci_low": s.ci_low,
                         "ci_high": s.ci_high, "reasons": s.reasons, "wall_s": round(time.monotonic() - t0, 1),
                         "latency_p50_ms": float(np.median(lat)) if lat else None})
            print(f"{v['label']}: {s.successes}/{s.trials} [{s.ci_low * 100:.0f}–{s.ci_high * 100:.0f} %] "
                  f"{s.reasons}", flush=True)
            _write_table(out, rows, args, load0)
    _write_table(out, rows, args, load0)
    print((out / "ablation.md").read_text())
    return 0


def _write_table(out: Path, rows: list[dict], args, load0: float) -> None:
    load1 = os.getloadavg()[0]
    base = next((r for r in rows if r["policy"] == "spline-ik" and r["noise"] == 0), None)
    lines = [f"{args.task}, {args.trials} seeded trials each (seeds {args.seed}…{args.seed + args.trials - 1}), "
             f"{args.robot}, DDIM {args.ddim_steps}; load average {load0:.1f} → {load1:.1f} on 2 shared cores", "",
             "| variant | waypoints | success | Wilson 95 % CI | vs (a) | failure reasons | policy p50 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        wp = r["waypoints"] + (f" + {r['noise'] * 100:g} cm noise" if r["noise"] else "")
        vs = f"{(r['rate'] - base['rate']) * 100:+.0f} pts" if base is not None and r is not base else "–"
        fails = ", ".join(f"{k} {n}" for k, n in r["reasons"].items() if k != "success") or "–"
        lat = f"{r['latency_p50_ms']:.0f}" if r["latency_p50_ms"] is not None else "–"
        lines.append(f"| {r['label']} | {wp} | {r['successes']}/{r['trials']} ({r['rate'] * 100:.0f} %) | "
                     f"{r['ci_low'] * 100:.0f}–{r['ci_high'] * 100:.0f} % | {vs} | {fails} | {lat} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    (out / "ablation.json").write_text(json.dumps({"task": args.task, "trials": args.trials, "seed": args.seed,
                                                   "load_start": load0, "load_end": load1, "rows": rows}, indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rollout_ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train-noguide", help="fine-tune the no-guidance ablation (b)")
    t.add_argument("--init", required=True, help="stage-1 checkpoint")
    t.add_argument("--episodes", nargs="+", required=True)
    t.add_argument("--all", action="store_true", help="also train on failed demos (default: successes only)")
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True)
    t.set_defaults(func=train_noguide)
    e = sub.add_parser("eval", help="roll out every variant and print the table")
    e.add_argument("--variant", action="append", required=True, help="LABEL=POLICY:CHECKPOINT:WAYPOINTS[:NOISE_M]")
    e.add_argument("--task", default="pick_cube")
    e.add_argument("--robot", default="sim-xarm6")
    e.add_argument("--trials", type=int, default=20)
    e.add_argument("--seed", type=int, default=1000)
    e.add_argument("--ddim-steps", type=int, default=10)
    e.add_argument("--max-seconds", type=float, default=15.0)
    e.add_argument("--out", default="runs/ablation")
    e.set_defaults(func=run_eval)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"rollout_ablation: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
