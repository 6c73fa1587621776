"""``python main.py train expert …``: train the action expert headless (the GUI runs this as a
subprocess and plots its ``--progress json`` lines). Multi-GPU / multi-process:
``torchrun --nproc_per_node=N main.py train expert …`` — the same command, no flags to change.
"""
from __future__ import annotations

import argparse
import sys


def _floats(n: int):
    def parse(text: str) -> tuple[float, ...]:
        try:
            vals = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}") from None
        if len(vals) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return vals
    return parse


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train models headless (action expert)")
    sub = p.add_subparsers(dest="model", metavar="MODEL", required=True)
    e = sub.add_parser("expert", help="the waypoint-guided point-cloud diffusion action expert",
                       description="Stage 1 (pretrain): action pre-training with the cloud masked, on synthetic "
                                   "B-spline trajectories and/or episodes. Stage 2 (finetune): with point clouds "
                                   "from recorded episodes, usually --init from a stage-1 checkpoint. "
                                   "Stage la-pretrain: language-action pre-training (LA4VLA) on --la-data, "
                                   "instruction + state -> actions, no cloud, no waypoints.")
    e.add_argument("--stage", choices=("pretrain", "finetune", "la-pretrain"), default="pretrain")
    e.add_argument("--out", default="runs/expert", help="run folder for checkpoints (default %(default)s)")
    e.add_argument("--episodes", nargs="*", default=[], help="episode files or folders (*.h5)")
    e.add_argument("--synthetic", type=int, default=None,
                   help="number of synthetic B-spline trajectories (default 500 for pretrain, 0 for finetune)")
    e.add_argument("--la-data", nargs="*", default=[], metavar="FILE_OR_DIR",
                   help="language-action data: `main.py export la` .jsonl files, or episode files/folders "
                        "whose verified segments are read directly")
    e.add_argument("--min-quality", type=float, default=2.0,
                   help="segments scored at least this are used (default %(default)s)")
    e.add_argument("--la-unscored", action="store_true",
                   help="also use segments nobody has scored yet (auto proposals, e.g. of scripted sim demos)")
    e.add_argument("--la-synthetic", type=int, default=0, metavar="N",
                   help="add N synthetic language-action segments (straight motions in all six directions "
                        "from random states) to --la-data")
    e.add_argument("--init", default=None, help="start from this checkpoint's weights and normaliser")
    e.add_argument("--resume", default=None, help="continue a run from its checkpoint (step count kept)")
    e.add_argument("--steps", type=int, default=2000)
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--lr", type=float, default=1e-3)
    e.add_argument("--goal-noise", type=float, default=0.1,
                   help="std of Gaussian noise on the guidance pose, normalised units (default %(default)s)")
    e.add_argument("--waypoint-noise", type=float, default=0.0, metavar="M",
                   help="finetune on extra copies of every episode whose guidance comes from waypoints moved "
                        "by Gaussian noise of std up to M metres (targets unchanged): teaches the expert to "
                        "correct imprecise waypoints from the cloud (default 0 = off)")
    e.add_argument("--noise-variants", type=int, default=4, metavar="K",
                   help="noisy copies per episode with --waypoint-noise (default %(default)s)")
    e.add_argument("--guidance-knots", choices=("keyframes", "gripper"), default="keyframes",
                   help="episodes' guidance spline through their keyframes (and a scripted demo's plan "
                        "waypoints), or through the gripper transitions only — for the sparse waypoints of "
                        "`rollout --waypoints oracle-sparse` (default %(default)s)")
    e.add_argument("--keypoint-weight", type=float, default=0.1,
                   help="weight of the keypoint head's auxiliary loss (default %(default)s)")
    e.add_argument("--distractor-copies", type=float, default=0.0, metavar="P",
                   help="finetune: with probability P per sample, paste a copy of the next contact's object "
                        "7-12 cm away in the cloud, so the expert learns to pick the one the guidance leads to "
                        "(default 0 = off)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    e.add_argument("--log-every", type=int, default=10)
    e.add_argument("--ckpt-every", type=int, default=500)
    e.add_argument("--progress", choices=("json", "bar", "none"), default="bar",
                   help="json: one JSON object per line on stdout (for the GUI); bar: a progress bar")
    e.add_argument("--crop", type=_floats(6), default=None, metavar="X0,Y0,Z0,X1,Y1,Z1",
                   help="workspace box (base frame, m) clouds are cropped to and synthetic data drawn from")
    m = e.add_argument_group("model (fresh runs only; checkpoints carry their own)")
    m.add_argument("--horizon", type=int, default=16)
    m.add_argument("--n-action-steps", type=int, default=8)
    m.add_argument("--n-obs", type=int, default=1)
    m.add_argument("--n-guide", type=int, default=4)
    m.add_argument("--n-points", type=int, default=1024)
    m.add_argument("--unet-dims", type=_ints, default=(32, 64))
    m.add_argument("--prediction", choices=("epsilon", "sample"), default="sample")
    m.add_argument("--frame", choices=("relative", "absolute"), default="relative",
                   help="positions relative to the arm's current position (default) or in the base frame")
    m.add_argument("--pointnet-dims", type=_ints, default=(64, 128, 256))
    m.add_argument("--cloud-focus", type=float, default=0.0, metavar="M",
                   help="add a PointNet over the cloud within M metres of the guidance's last pose, seen from it "
                        "(default 0 = off)")
    m.add_argument("--keypoint-feat", type=int, default=0, metavar="D",
                   help="add a keypoint head that finds the next grasp/release point in the cloud (auxiliary "
                        "loss against the demo's own), its position through a D-wide MLP into the condition "
                        "(default 0 = off)")
    m.add_argument("--keypoint-skip", action="store_true",
                   help="with --keypoint-feat: add the keypoint, gated per chunk step, to the predicted positions "
                        "(the network predicts the residual from it)")
    m.add_argument("--lang-dim", type=int, default=None,
                   help="instruction-feature size; 0 = no language (default: 384, the sentence encoder's, "
                        "for la-pretrain, else 0)")
    e.set_defaults(func=run_expert)


def _lang_dim(args) -> int:
    if args.lang_dim is not None:
        if args.lang_dim < 0:
            raise ValueError("--lang-dim must be >= 0")
        return args.lang_dim
    if args.stage == "la-pretrain":
        from policies.text import DIM

        return DIM
    return 0


def run_expert(args) -> int:
    from policies.action_expert import ExpertConfig
    from policies.datasets import DEFAULT_WORKSPACE, Windows, episode_windows, open_episodes, synthetic_windows
    from policies.train import TrainConfig, train

    try:
        mcfg = ExpertConfig(horizon=args.horizon, n_action_steps=args.n_action_steps, n_obs=args.n_obs,
                            n_guide=args.n_guide, n_points=args.n_points, unet_dims=args.unet_dims,
                            prediction_type=args.prediction, relative=args.frame == "relative",
                            pointnet_dims=args.pointnet_dims, lang_dim=_lang_dim(args),
                            cloud_focus=args.cloud_focus, keypoint_feat=args.keypoint_feat,
                            keypoint_skip=args.keypoint_skip)
        if args.resume or args.init:
            from policies.action_expert import ActionExpert

            mcfg = ExpertConfig.from_dict(ActionExpert.read_checkpoint(args.resume or args.init)["config"])
        workspace = (args.crop[:3], args.crop[3:]) if args.crop else DEFAULT_WORKSPACE
        cfg = TrainConfig(stage=args.stage, out_dir=args.out, steps=args.steps, batch_size=args.batch_size,
                          lr=args.lr, goal_noise=args.goal_noise, keypoint_weight=args.keypoint_weight,
                          distractor_copies=args.distractor_copies,
                          seed=args.seed, device=args.device,
                          log_every=args.log_every, ckpt_every=args.ckpt_every)
        n_syn = args.synthetic if args.synthetic is not None else (500 if args.stage == "pretrain" else 0)
        if args.waypoint_noise < 0 or args.noise_variants < 0:
            raise ValueError("--waypoint-noise and --noise-variants must be >= 0")
        parts = []
        if n_syn > 0:
            parts.append(synthetic_windows(n_syn, mcfg, seed=args.seed, workspace=workspace))
        if args.episodes:
            with_clouds = args.stage == "finetune"
            text = None
            import numpy as np

            rng = np.random.default_rng(args.seed)
            for ep in open_episodes(args.episodes):
                w = episode_windows(ep, mcfg, with_clouds=with_clouds, workspace=workspace,
                                    waypoint_noise=args.waypoint_noise, noise_variants=args.noise_variants, rng=rng,
                                    knots=args.guidance_knots)
                if mcfg.lang_dim > 0:  # each frame carries the instruction of the segment it lies in
                    import torch

                    from policies.datasets import episode_lang_features
                    from policies.text import TextEncoder

                    text = text or TextEncoder()
                    lang = torch.as_tensor(episode_lang_features(ep, text, args.min_quality, args.la_unscored))
                    w.lang = lang.repeat(len(w) // len(lang), 1)  # the noisy-guidance copies share it
                parts.append(w)
        if args.la_data or args.la_synthetic > 0:
            from policies.datasets import la_windows, load_la_records, synthetic_la_records

            recs = load_la_records(args.la_data, args.min_quality, args.la_unscored) if args.la_data else []
            recs += synthetic_la_records(args.la_synthetic, mcfg.rate_hz, args.seed, workspace)
            parts.append(la_windows(recs, mcfg))
        if not parts:
            raise ValueError("no training data: give --episodes and/or --synthetic N")
        windows = Windows.concat(parts)
        result = train(cfg, windows, mcfg, init_checkpoint=args.init, resume=args.resume, progress=args.progress)
    except Exception as exc:  # noqa: BLE001 — bad data or options: one line, no traceback (EpisodeError included)
        expected = isinstance(exc, (ValueError, OSError, RuntimeError, FloatingPointError)) \
            or type(exc).__name__ == "EpisodeError"
        text = (str(exc).splitlines() or [""])[0]
        print(f"train expert: {text if expected else f'{type(exc).__name__}: {text}'}", file=sys.stderr)
        return 2
    if args.progress != "json":
        state = "cancelled" if result.cancelled else "done"
        print(f"{state} at step {result.step}, loss {result.loss:.4f}, checkpoint {result.checkpoint}", file=sys.stderr)
    return 0
