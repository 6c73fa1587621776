"""Browsing the tabs while connected must not stall the control loop or drop camera frames.

Seen: with the sim connected (not recording), opening a tab's 3D page stalled the loop
(``control: loop_stalled``, overruns) and the dropped-frame counter rose. Cause: the page imported
torch / diffusers on the UI thread (3-9 s, loading torch's libraries holds the GIL) and built its
vispy view there (~0.3 s of work inside PySide6 C++ calls, which hold the GIL), so the control
thread could not run. Cure: app/preload.py imports them off the UI thread and the window builds
the 3D pages, both before the control loop starts.

The check runs bench/gui_collect.py in a fresh interpreter (a module imported earlier in this
pytest process would hide the first-import stall) and reads its JSON row for the tab phase. The
UI thread's own CPU time per stall is load-independent (old code: > 3000 ms, then ~300 ms for the
vispy build; now < 35 ms); loop stalls and overruns are counted over the whole visit of every tab
and sub-tab.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_switching_every_tab_while_connected_does_not_stall_the_loop():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
               PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "bench.gui_collect", "--episodes", "0", "--tabs", "1", "--tab-s", "0.4",
           "--baseline-s", "0.5", "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1])
    row = next(r for r in out["rows"] if r["phase"].startswith("switching every tab"))
    print(json.dumps(out, indent=1))
    visited = {t["tab"] for t in out["tabs"]}
    assert {"Collect", "Annotate", "Train", "Evaluate", "Evaluate / 3D view", "Collect / 3D",
            "Annotate / 3D"} <= visited
    # No long UI-thread job on a tab switch (the UI thread's CPU time, not inflated by load).
    assert row["cpu_max"] < 150, row
    # The loop did not notice: old code 5-20 loop_stalled and 27-122 overruns per visit; after the
    # fix 0-1 and 0-2 on a 2-core box at load 5-7 (one stall allowed for the box, not the app).
    assert row["stalls"] <= 1 and row["overruns"] <= 10, row
    # Camera frames: the sim renders at 15 Hz with jitter under load, so a few index gaps happen
    # with or without tab switching (0-7 seen either way); a stall of a second would lose 15.
    assert row["dropped"] <= 8, row
