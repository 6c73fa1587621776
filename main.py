"""ActStudio entry point.

    python main.py                      open the app on the simulated lab
    python main.py <command> --help     headless commands (record, info, export, train, rollout, ...)
"""
from __future__ import annotations

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
