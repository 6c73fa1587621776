"""Subcommand modules of main.py; each exposes ``register(subparsers)`` (see app/cli.py)."""
from __future__ import annotations

import argparse
from typing import Callable


def add_to_train(subparsers, name: str, help: str, description: str | None,
                 add_arguments: Callable[[argparse.ArgumentParser], None], run: Callable) -> None:
    """Add ``main.py train <name>`` under the existing ``train`` command (registered earlier in
    COMMAND_MODULES) without editing its module; nothing happens if there is no ``train``."""
    train = subparsers.choices.get("train")
    if train is None or train._subparsers is None:
        return
    for action in train._subparsers._group_actions:
        if isinstance(action, argparse._SubParsersAction) and name not in action.choices:
            q = action.add_parser(name, help=help, description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
            add_arguments(q)
            q.set_defaults(func=run)
