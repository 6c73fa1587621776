"""Run a test file's GL checks in a child process on Qt's xcb platform.

Qt's ``offscreen`` platform (the suite's default) has no GL widgets, so a test that must see vispy draw
runs ``python <file> --gl-checks [args]`` under xcb — on the X server there is, else under ``xvfb-run``
— and reads the JSON object the child prints last. No X server and no xvfb-run: the test is skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_gl_checks(script: str, *args: str, timeout: float = 180) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, script, "--gl-checks", *args]
    if not os.environ.get("DISPLAY"):
        if not shutil.which("xvfb-run"):
            pytest.skip("no X server and no xvfb-run")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1])
    print(result)
    return result


def child_app():
    """In the child process: the QApplication and ``pump(seconds)``, which processes Qt events for that
    long (vispy draws on them)."""
    import time

    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])

    def pump(seconds: float = 0.05) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    return app, pump
