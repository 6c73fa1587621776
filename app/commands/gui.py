"""`python main.py` / `python main.py gui`: the desktop app.

The Qt main window is not built yet; until it lands this runs the headless teleop demo on the
simulated lab (scripted operator by default, since keyboard input needs a window to receive keys)
and says so.
"""
from __future__ import annotations

from app.commands.demo import add_demo_args, run_demo
from app.config import add_device_args

NOT_BUILT = ("ActStudio: the GUI is not built yet - running the headless teleop demo on the "
             "simulated lab instead (see `python main.py demo --help`).")


def register(subparsers) -> None:
    p = subparsers.add_parser("gui", help="the desktop app (for now: the headless teleop demo)",
                              description=__doc__)
    add_device_args(p, default_input="scripted")
    add_demo_args(p)
    p.set_defaults(func=lambda args: run_demo(args, banner=NOT_BUILT))
