"""Command-line front end. Each subcommand lives in app/commands/<name>.py and exposes
``register(subparsers)`` which adds its parser and sets ``func`` to a callable(args) -> exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules under app/commands that provide subcommands; missing ones are skipped with a note so a
# partially installed tree still starts.
COMMAND_MODULES = [
    "gui",
    "demo",
    "info",
    "record",
    "propose",
    "export",
    "train",
    "train_encoder",  # after "train": also hooks `train encoder` into it
    "rollout",
    "train_keypoints",  # after "train": also hooks `train keypoints` into it
    "eval_language",
    "sim_rerender",
    "migrate",
    "robot",
    "calibrate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="ActStudio: collect, annotate and learn robot demonstrations.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"app.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"app.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    # No subcommand: the GUI on the simulated lab (device flags may still be given).
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["gui", *argv]
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
