"""`python main.py` / `python main.py gui`: the desktop app, on the simulated lab by default.

    python main.py                                  sim-franka + sim camera + scripted operator
    python main.py --robot sim-xarm6 --input keyboard --dataset ~/data/pick
    python main.py --robot franka:172.16.0.2 --camera realsense --input spacemouse

Device flags pre-fill the device bar (and override the remembered choice); with --connect the
window connects on start. Without flags the last used devices are offered.
"""
from __future__ import annotations

import argparse
import sys

from app.config import add_device_args


def register(subparsers) -> None:
    p = subparsers.add_parser("gui", help="the desktop app (default command)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults are None so "not given" falls back to the remembered devices, not to a constant; the
    # first-run values named in the help are app/settings.py's DEFAULTS (not imported: it loads Qt).
    add_device_args(p, remembered=True, defaults={"input": "scripted"})
    p.add_argument("--dataset", default=None, help="dataset folder to record into (default: last used)")
    p.add_argument("--connect", action="store_true", help="connect the devices right away")
    p.add_argument("--settings", default=None, help="settings ini file (default: the user's QSettings)")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="connect, wait for live frames, save a screenshot of the window and quit")
    p.set_defaults(func=run_gui)


def run_gui(args) -> int:
    from PySide6 import QtCore, QtWidgets

    from app.settings import Settings
    from robots.factory import UriError, parse_arm, parse_camera, parse_input
    from widgets.main_window import MainWindow, apply_theme

    try:
        for text, parse in ((args.robot, parse_arm), (args.camera, parse_camera), (args.input, parse_input)):
            if text is not None:
                parse(text)
    except UriError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("ActStudio")
    app.setOrganizationName("ActStudio")
    apply_theme(app)
    settings = Settings(args.settings) if args.settings else Settings()
    given = (args.robot, args.camera, args.input, args.rate)
    devices = None
    if any(v is not None for v in given):
        devices = (args.robot or settings.get("devices/robot"), args.camera or settings.get("devices/camera"),
                   args.input or settings.get("devices/input"),
                   args.rate if args.rate is not None else settings.get("devices/rate_hz"))
    win = MainWindow(settings, dataset=args.dataset, devices=devices)
    win.show()
    if args.connect or args.screenshot:
        QtCore.QTimer.singleShot(0, win.device_bar.connect_button.click)
    if args.screenshot:
        _schedule_screenshot(win, args.screenshot)
    return int(app.exec())


def _schedule_screenshot(win, path: str) -> None:
    """Save the window once live frames have arrived for a while (or after 60 s anyway)."""
    import time

    from PySide6 import QtCore

    state = {"frames": 0, "t0": time.monotonic()}
    win.controller.frameReady.connect(lambda _f: state.__setitem__("frames", state["frames"] + 1))
    timer = QtCore.QTimer(win)

    def check():
        if state["frames"] >= 10 or time.monotonic() - state["t0"] > 60:
            timer.stop()
            win.grab().save(path)
            print(f"saved {path} after {state['frames']} frames", file=sys.stderr)
            win.close()

    timer.timeout.connect(check)
    timer.start(200)
