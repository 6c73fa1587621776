"""``python main.py train-encoder …`` (also ``train encoder …`` when the ``train`` command is present):
train the RoboAct-CLIP atomic-action encoder headless. The Train tab runs it as a subprocess and plots
its ``--progress json`` lines (events start / step / epoch / done, as the expert trainer).

Data: a clip folder (``export clips`` or one built here), or episodes — clips are then built into
``OUT/clips`` with labels from the sim expert's phases (``--labels expert``, default) or an annotator's
verified segments (``--labels NAME``). Ablations: ``--no-temporal`` (F_1, F_n only), ``--no-disentangle``,
and each loss can be switched off. ``--backbone PATH`` uses a local transformers CLIP checkpoint
(frozen); never downloaded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train the RoboAct-CLIP atomic-action encoder (label suggestions)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--clips", default=None, help="encoder-clip folder (captions.jsonl + clip_*.npz)")
    src.add_argument("--episodes", nargs="+", default=None, help="episode files or folders to build clips from")
    p.add_argument("--labels", default="expert",
                   help="with --episodes: 'expert' (sim expert phases) or an annotator name (default %(default)s)")
    p.add_argument("--out", default="runs/encoder", help="run folder; checkpoint OUT/encoder.pt (default %(default)s)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--holdout", type=float, default=0.25, help="share of episodes per task held out for evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-balance", dest="balance", action="store_false",
                   help="plain epochs instead of drawing every primitive equally often")
    p.add_argument("--resume", default=None, help="continue from this checkpoint (optimiser and epoch kept)")
    p.add_argument("--progress", choices=("json", "text", "none"), default="text",
                   help="json: one JSON object per line on stdout (for the GUI)")
    m = p.add_argument_group("model (fresh runs only)")
    m.add_argument("--backbone", default="cnn", help="cnn (trained here) or a local CLIP checkpoint folder")
    m.add_argument("--frame-size", default="48x64", help="HxW the frames are resized to (default %(default)s)")
    m.add_argument("--d-model", type=int, default=128)
    m.add_argument("--layers", type=int, default=2)
    for flag, what in (("temporal", "temporal-difference transformer (ablation 1)"),
                       ("disentangle", "subject/action/object heads (ablation 2)"),
                       ("contrastive", "CLIP contrastive loss"), ("ortho", "orthogonality + L2 loss"),
                       ("recomb", "feature-bank recombination loss"), ("aux", "auxiliary classifiers")):
        m.add_argument(f"--no-{flag}", dest=flag, action="store_false", help=f"without the {what}")


def register(subparsers) -> None:
    p = subparsers.add_parser("train-encoder", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    from app.commands import add_to_train

    add_to_train(subparsers, "encoder", HELP, __doc__, add_arguments, run)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--frame-size must look like 48x64, got {text!r}") from None
    if h < 16 or w < 16:
        raise ValueError("--frame-size must be at least 16x16")
    return h, w


def run(args) -> int:
    from policies.clip_data import ClipDataError, ClipDataset, build_clips
    from policies.encoder import EncoderError
    from policies.encoder_train import EncoderTrainConfig, train_encoder
    from policies.text import TextEncoderError
    from recorder.export import ExportError, find_episodes
    from recorder.schema import EpisodeError

    try:
        size = _size(args.frame_size)
        if args.episodes:
            eps = find_episodes(args.episodes)
            if not eps:
                print("error: no episodes found", file=sys.stderr)
                return 2
            clips = Path(args.out) / "clips"
            n = build_clips(eps, clips, labels=args.labels, size=size)
            print(f"built {n} clips from {len(eps)} episodes into {clips}", file=sys.stderr)
        else:
            clips = Path(args.clips)
        data = ClipDataset(clips, size)
        cfg = EncoderTrainConfig(out_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 holdout=args.holdout, seed=args.seed, threads=args.threads,
                                 balance=args.balance)
        opts = {"backbone": args.backbone, "d_model": args.d_model, "n_layers": args.layers,
                **{k: getattr(args, k) for k in ("temporal", "disentangle", "contrastive", "ortho", "recomb", "aux")}}
        res = train_encoder(data, cfg, opts, progress=args.progress, resume=args.resume)
    except (ClipDataError, EncoderError, TextEncoderError, ExportError, EpisodeError, ValueError, OSError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    if res.metrics:
        print(f"held-out: macro {res.metrics['macro']:.3f}, accuracy {res.metrics['accuracy']:.3f} "
              f"on {res.metrics['n']} clips; checkpoint {res.checkpoint}", file=sys.stderr)
    return 130 if res.cancelled else 0
