"""`python main.py sim-rerender EPISODES… [--out DIR]`: rebuild a sim episode's RGB-D per tick.

The live sim camera delivers a few frames per second on a loaded machine, so a 20 Hz recording repeats
images; sim episodes (sim-xarm6, sim-franka) keep the simulator state of every tick, and this renders
each tick's view again with the same camera (robots/sim/rerender.py). Without --out the episodes are
rewritten in place.
Exit code 0 when every episode was re-rendered, 1 if any failed (each failure is one line).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("sim-rerender", help="re-render sim episodes' camera images from their recorded state",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="episode .h5 files or folders of episodes")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the re-rendered copies (default: rewrite the episodes in place)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from recorder.export import ExportError, find_episodes
    from recorder.schema import EpisodeError
    from robots.sim.rerender import RerenderError, rerender_episode

    try:
        episodes = find_episodes(args.paths)
    except ExportError as exc:
        print(str(exc))
        return 1
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in episodes:
        try:
            res = rerender_episode(path, None if args.out is None else args.out / path.name)
            print(f"{path.name}: {res.frames} frames re-rendered (the recording held {res.distinct_before} "
                  f"distinct images) in {res.seconds:.0f} s", flush=True)
        except (RerenderError, EpisodeError, OSError) as exc:
            failed += 1
            print(f"{path.name}: {' '.join(str(exc).split())}", flush=True)
    print(f"{len(episodes) - failed} of {len(episodes)} episodes re-rendered")
    return 1 if failed else 0
