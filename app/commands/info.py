"""`python main.py info FILE_OR_DIR`: one summary line per episode, or the one-line reason it is bad.

Opening a folder also recovers episodes left behind by a crashed recorder (as the app does on start).
Exit code 0 when every episode is valid, 1 otherwise.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="summarise episode files (validate, recover, migrate)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, help="an episode .h5 file or a folder of episodes")
    p.add_argument("--no-recover", action="store_true", help="do not repair crashed recordings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recorder.dataset import Dataset, summarize
    from recorder.recovery import recover_file, writer_alive
    from recorder.episode import marker_path, read_marker

    path: Path = args.path
    if path.is_dir():
        ds = Dataset(path, recover=not args.no_recover)
        for r in ds.recovered:
            print(str(r))
        for info in ds:
            print(info.line())
        n_bad = len(ds.bad)
        print(f"{len(ds)} episodes, {len(ds) - n_bad} ok, {n_bad} bad")
        return 1 if n_bad else 0
    if not path.exists():
        print(f"{path.name}: file: not found")
        return 1
    if not args.no_recover and marker_path(path).exists() and not writer_alive(read_marker(path)):
        try:
            print(str(recover_file(path)))
        except Exception as exc:  # recover_file raises EpisodeError; the summary below says the rest
            print(exc)
    info = summarize(path)
    print(info.line())
    return 0 if info.ok else 1
