"""Screenshots of the main window on a 1280 × 800 screen (issue 12: the window must fit it).

    xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb MUJOCO_GL=egl \\
        .venv/bin/python scripts/screenshot_main.py [--connect] [--out docs/screenshots]

Opens the window as a first run would (no saved geometry), on a dataset with a few synthetic
episodes, optionally connects the simulated lab (sim-xarm6 + sim camera) so Collect shows live
frames, and saves main_1280x800.png (Collect) plus main_1280x800_<tab>.png for the other tabs.
Prints the window, minimum and E-STOP geometry so a too-wide window shows in the log too.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connect", action="store_true", help="connect sim-xarm6 + sim camera first")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = ap.parse_args()

    from PySide6 import QtCore, QtWidgets

    from app.settings import Settings
    from widgets.main_window import MainWindow, apply_theme

    app = QtWidgets.QApplication(sys.argv)
    apply_theme(app)
    tmp = Path(tempfile.mkdtemp(prefix="shot_"))
    data = tmp / "pick_cube_demo"
    data.mkdir()
    from test_annotate_controller import make_episode

    first = make_episode(data / "pick_cube_000.h5", seed=0, width=160, height=120)
    for i in (1, 2):
        shutil.copy(first, data / f"pick_cube_{i:03d}.h5")
    settings = Settings(tmp / "settings.ini")
    settings.set("annotate/annotator", "alice")
    win = MainWindow(settings, dataset=data, devices=("sim-xarm6", "sim", "scripted", 20.0))
    win.show()

    def spin(seconds: float, until=None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until()):
            app.processEvents()
            time.sleep(0.01)

    spin(2.0)
    if args.connect:
        win.device_bar.connect_button.click()
        spin(120, lambda: win.controller.connected)
        spin(20, lambda: win.collect_tab.camera_view.fps() > 5)   # live frames, not "NO SIGNAL"
        spin(1.0)
    screen = win.screen().availableGeometry()
    estop = win.device_bar.estop_button
    top_left = estop.mapTo(win, QtCore.QPoint(0, 0))
    print(f"screen {screen.width()}x{screen.height()}  window {win.width()}x{win.height()}  "
          f"minimum {win.minimumSizeHint().width()}x{win.minimumSizeHint().height()}  "
          f"E-STOP at x {top_left.x()}..{top_left.x() + estop.width()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(win.tabs.count()):
        win.tabs.setCurrentIndex(i)
        spin(2.5 if i else 0.3)
        name = win.tabs.tabText(i).lower()
        path = out / ("main_1280x800.png" if i == 0 else f"main_1280x800_{name}.png")
        win.grab().save(str(path))
        print(f"saved {path}")
    win.tabs.setCurrentIndex(0)
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
