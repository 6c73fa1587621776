"""`python main.py annotate-propose DIR_OR_FILES…`: keyframes + auto segment proposals into episodes.

Each episode gets /keyframes and an "auto" annotator document (source=auto, unscored) that the
Annotate view shows for verification. Human annotators' documents are never touched.
Exit code 0 when every episode was processed, 1 if any failed (each failure is one line).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("annotate-propose", help="write keyframes and auto segment proposals into episodes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="episode .h5 files or folders of episodes")
    p.add_argument("--annotator", default="auto", help="document name for the proposals (default %(default)s)")
    p.add_argument("--keep", action="store_true", help="skip episodes that already have this document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recorder.annotations import AnnotationError, load_annotations
    from recorder.export import ExportError, find_episodes
    from recorder.proposals import propose_file
    from recorder.schema import EpisodeError

    try:
        episodes = find_episodes(args.paths)
    except ExportError as exc:
        print(str(exc))
        return 1
    failed = 0
    for path in episodes:
        try:
            if args.keep and args.annotator in load_annotations(path):
                print(f"{path.name}: kept existing {args.annotator!r} proposals")
                continue
            kfs, doc = propose_file(path, annotator=args.annotator)
            print(f"{path.name}: {len(kfs)} keyframes, {len(doc)} segments: "
                  + " ".join(s.primitive for s in doc.segments))
        except (EpisodeError, AnnotationError, OSError, ValueError) as exc:
            failed += 1
            print(f"{path.name}: {' '.join(str(exc).split())}")
    print(f"{len(episodes) - failed} of {len(episodes)} episodes proposed")
    return 1 if failed else 0
