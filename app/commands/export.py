"""`python main.py export KIND PATHS… -o OUT`: training exports of annotated episodes.

  la         language-action episodes (JSON lines, verified segments, no images) as in LA4VLA
  clips      encoder clips: 16 frames per verified segment (.npz) + captions.jsonl
  robomimic  whole episodes as a robomimic HDF5 dataset (SequenceDataset loads it)
  lerobot    whole episodes as a LeRobotDataset v3.0 folder (parquet + AV1 mp4; LeRobotDataset loads it),
             verified segments as LeRobot "subtask" rows of its language_persistent column

Verified = quality >= --min-quality (mean over annotators scoring the same span).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export annotated episodes (la | clips | robomimic | lerobot)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("la", "clips", "robomimic", "lerobot"))
    p.add_argument("paths", nargs="+", type=Path, help="episode .h5 files or folders of episodes")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output: .jsonl file (la), folder (clips), .hdf5 file (robomimic), new folder (lerobot)")
    p.add_argument("--min-quality", type=float, default=2.0, help="keep segments scored at least this (default 2)")
    p.add_argument("--annotator", default=None, help="use only this annotator's segments")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--images", action="store_true", help="robomimic: include agentview_image")
    p.add_argument("--only-success", action="store_true", help="robomimic, lerobot: successful episodes only")
    p.add_argument("--vcodec", default=None,
                   help="lerobot: video codec (default libsvtav1, LeRobot's own; libx264 if this PyAV lacks it)")
    p.add_argument("--depth", action="store_true",
                   help="lerobot: add observation.images.depth as LeRobot depth video (12-bit log depth, lossless HEVC)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recorder.annotations import AnnotationError
    from recorder.export import (ExportError, export_encoder_clips, export_language_action, export_robomimic,
                                 find_episodes)
    from recorder.schema import EpisodeError

    try:
        episodes = find_episodes(args.paths)
        if not episodes:
            print("no episodes found")
            return 1
        if args.kind == "la":
            n = export_language_action(episodes, args.out, args.min_quality, args.annotator)
            what = "language-action episodes"
        elif args.kind == "clips":
            n = export_encoder_clips(episodes, args.out, args.frames, args.min_quality, args.annotator)
            what = "clips"
        elif args.kind == "lerobot":
            from recorder.export_lerobot import export_lerobot
            res = export_lerobot(episodes, args.out, min_quality=args.min_quality, annotator=args.annotator,
                                 vcodec=args.vcodec, only_success=args.only_success, depth=args.depth)
            n = res.episodes
            what = f"episodes ({res.frames} frames, {res.subtasks} subtasks, {len(res.tasks)} tasks)"
        else:
            n = export_robomimic(episodes, args.out, images=args.images, only_success=args.only_success)
            what = "demos"
    except (ExportError, EpisodeError, AnnotationError, OSError) as exc:
        print(" ".join(str(exc).split()))
        return 1
    print(f"{n} {what} from {len(episodes)} episodes -> {args.out}")
    return 0
