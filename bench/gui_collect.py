"""UI-thread stalls of the main window while a scripted episode records with live views on.

A 5 ms QTimer on the UI thread records the gap between its firings; any gap much above 5 ms is
time the UI thread spent elsewhere (painting, decoding, or — the bug this guards against — waiting
on a device or a file). Baseline: the same window, idle and not connected, in the same run.

    python -m bench.gui_collect [--robot sim-xarm6] [--episodes 1] [--tabs 2]

Prints: phase, timer samples, max gap, p99 gap, the UI thread's own CPU time inside the gaps
("busy": its work, without waiting for a core — the part a loaded box does not inflate much),
UI image updates per second, frames dropped. Each episode has two rows: the take itself, and the
end of it (the window's outcome dialog opening, the episode finalised, the list updated) — the bench
answers the dialog at once, so that row is what an operator's click would wait behind.
``--tabs N`` adds a phase that visits every tab and sub-tab N times while connected and not
recording (the operator browsing Annotate / Train / Evaluate between takes): the control loop and
the camera run on their own threads and must not notice, so that row also counts the loop's
``loop_stalled`` holds, its overruns, its longest period and the camera frames dropped.
With ``--blame`` a watchdog thread snapshots the UI thread's stack every 5 ms while the timer is
late by more than ``--blame-ms`` and prints the functions seen most often inside stalls: where the
UI thread spent the time (the GIL makes a busy worker thread show up as the UI thread waiting in
whatever line it was on, so read the list together with the load average).
Run it on an otherwise idle machine for figures to quote; on a shared box note the load.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
import traceback

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="sim-xarm6", help="sim-franka | sim-xarm6 (default %(default)s)")
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--baseline-s", type=float, default=5.0)
    ap.add_argument("--tabs", type=int, default=1, help="rounds through every tab while connected (0: skip)")
    ap.add_argument("--tab-s", type=float, default=1.0, help="seconds on each tab")
    ap.add_argument("--json", action="store_true", help="also print the rows as one JSON line (tests)")
    ap.add_argument("--blame", action="store_true", help="sample the UI thread's stack during stalls")
    ap.add_argument("--blame-ms", type=float, default=25.0)
    ap.add_argument("--blame-top", type=int, default=12)
    args = ap.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from app.settings import Settings
    from widgets.main_window import MainWindow, apply_theme

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    apply_theme(app)
    tmp = tempfile.mkdtemp(prefix="bench-gui-collect-")
    settings = Settings(os.path.join(tmp, "s.ini"))
    settings.set("annotate/annotator", "bench")  # else opening Annotate asks for a name (modal)
    win = MainWindow(settings, dataset=os.path.join(tmp, "data"),
                     devices=(args.robot, "sim", "scripted", 20.0))
    win.resize(1480, 900)
    win.show()
    ctl = win.controller

    gaps: list[float] = []
    busy: list[float] = []     # UI-thread CPU seconds inside each gap
    last = [time.perf_counter()]
    last_cpu = [time.thread_time()]

    def on_timer():
        now, cpu = time.perf_counter(), time.thread_time()
        gaps.append(now - last[0])
        busy.append(cpu - last_cpu[0])
        last[0], last_cpu[0] = now, cpu

    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.PreciseTimer)
    timer.timeout.connect(on_timer)
    frames = [0]
    ctl.frameReady.connect(lambda _f: frames.__setitem__(0, frames[0] + 1))
    stalls = [0]
    ctl.message.connect(lambda m: stalls.__setitem__(0, stalls[0] + (m == "control: loop_stalled")))

    def run_until(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.AllEvents, 5)
            if pred():
                return True
            time.sleep(0.001)
        return False

    def summarize(phase: str, g_s, b_s, n_frames: int, dt: float) -> dict:
        g = np.asarray(g_s) * 1e3 if len(g_s) else np.zeros(1)
        b = np.asarray(b_s) * 1e3 if len(b_s) else np.zeros(1)
        st = ctl.stats()
        loop = ctl.loop
        return {"phase": phase, "n": len(g_s), "max": float(g.max()), "p99": float(np.percentile(g, 99)),
                "cpu_max": float(b.max()), "cpu_p99": float(np.percentile(b, 99)),
                "ui_hz": n_frames / dt if dt else 0.0, "dropped": st.dropped, "seconds": dt,
                "stalls": stalls[0], "overruns": loop.overruns if loop is not None else 0}

    def measure(phase: str, body, split: tuple[str, list] | None = None) -> list[dict]:
        """One row for ``phase``; with ``split=(name, marks)`` the gaps after the first mark the
        body's signals append (a gap index, a monotonic time and a frame count) get their own row."""
        gaps.clear()
        busy.clear()
        frames[0] = 0
        stalls[0] = 0
        last[0], last_cpu[0] = time.perf_counter(), time.thread_time()
        t0 = time.monotonic()
        timer.start(5)
        measuring.set()
        body()
        measuring.clear()
        timer.stop()
        t1, n1 = time.monotonic(), frames[0]
        # gaps[0] is the wait for the timer's first firing, not a stall.
        if split is None or not split[1]:
            return [summarize(phase, gaps[1:], busy[1:], n1, t1 - t0)]
        k, tk, nk = split[1][0]
        k = max(k, 1)
        return [summarize(phase, gaps[1:k], busy[1:k], nk, tk - t0),
                summarize(split[0], gaps[k:], busy[k:], n1 - nk, t1 - tk)]

    blame: collections.Counter = collections.Counter()
    others: collections.Counter = collections.Counter()
    ui_ident = threading.get_ident()
    sampling = threading.Event()
    measuring = threading.Event()   # not timer.isActive(): Qt objects are the UI thread's only

    def watchdog():
        # Reads ``last`` without a lock: a float store is atomic under the GIL, and a stale read
        # only shifts one sample by 5 ms.
        while sampling.is_set():
            time.sleep(0.005)
            late = (time.perf_counter() - last[0]) * 1e3
            if late < args.blame_ms or not measuring.is_set():
                continue
            frames = sys._current_frames()
            frame = frames.get(ui_ident)
            if frame is None:
                continue
            blame[where(frame)] += 1
            # The UI thread waiting for the GIL looks like it sits in its own line: what the
            # other Python threads were doing at the same moment tells who held it.
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, f in frames.items():
                if ident not in (ui_ident, threading.get_ident()):
                    others[(names.get(ident, "?"),) + where(f)] += 1

    def where(frame) -> tuple[str, str]:
        stack = traceback.extract_stack(frame)
        # Innermost project frame (skip the library internals) plus the innermost overall.
        own = [f for f in stack if "/work/" in f.filename and ".venv" not in f.filename]
        return (f"{os.path.relpath(own[-1].filename)}:{own[-1].lineno} {own[-1].name}" if own else "-",
                f"{os.path.basename(stack[-1].filename)}:{stack[-1].lineno} {stack[-1].name}")

    if args.blame:
        sampling.set()
        threading.Thread(target=watchdog, name="stall-watchdog", daemon=True).start()

    rows = measure("idle, not connected", lambda: run_until(lambda: False, args.baseline_s))
    win.device_bar.connect_button.click()
    rows += measure("connecting (sim process start)", lambda: run_until(lambda: ctl.connected, 120))
    if not ctl.connected:
        print("error: could not connect", file=sys.stderr)
        return 2
    run_until(lambda: False, 1.0)
    rows += measure("connected, live view", lambda: run_until(lambda: False, args.baseline_s))
    if args.tabs:
        loop = ctl.loop
        before = (ctl.stats().dropped, loop.overruns, len(loop.periods))

        per_tab = []  # (tab path, overruns, longest period ms, stalls, UI gap max ms)

        def visit(switch, label) -> None:
            # From before the switch: the tab's first-show work runs inside setCurrentIndex.
            o0, k0, s0, g0 = loop.overruns, loop.ticks, stalls[0], len(gaps)
            switch()
            run_until(lambda: False, args.tab_s)
            ps = list(loop.periods)[-(loop.ticks - k0):] if loop.ticks > k0 else []
            per_tab.append((label, loop.overruns - o0, 1e3 * max(ps) if ps else float("nan"), stalls[0] - s0,
                            1e3 * max(gaps[g0:], default=0.0)))

        def switch_tabs():
            for _ in range(args.tabs):
                for tabs in [win.tabs] + [t for t in win.findChildren(QtWidgets.QTabWidget) if t is not win.tabs]:
                    sub = tabs is not win.tabs
                    page = tabs
                    while sub and page.parentWidget() is not None and page.parentWidget().parentWidget() is not win.tabs:
                        page = page.parentWidget()
                    k = win.tabs.indexOf(page) if sub else -1
                    for i in range(tabs.count()):
                        def switch(i=i, k=k, tabs=tabs):
                            if k >= 0:  # a sub-tab is only visible with its page's top-level tab current
                                win.tabs.setCurrentIndex(k)
                            tabs.setCurrentIndex(i)
                        visit(switch, (win.tabs.tabText(k) + " / " if k >= 0 else "") + tabs.tabText(i))
            win.tabs.setCurrentIndex(0)

        rows += measure("switching every tab (not recording)", switch_tabs)
        periods = list(loop.periods)[before[2]:]
        rows[-1]["dropped"] = ctl.stats().dropped - before[0]
        rows[-1]["overruns"] = loop.overruns - before[1]
        rows[-1]["period_max"] = 1e3 * max(periods) if periods else float("nan")
    saved = []
    ended: list = []   # (gap index, time, frames shown) when the take ended and the outcome was asked

    def on_outcome(req) -> None:
        # The window's outcome dialog is built in the same emission (it connected first); the gap
        # that holds it is the first one of the "saving" row.
        ended.append((len(gaps), time.monotonic(), frames[0]))
        ctl.resolve_outcome(req.default or "failure", "bench")

    ctl.outcomeRequested.connect(on_outcome)
    ctl.episodeSaved.connect(saved.append)
    for i in range(args.episodes):
        def episode():
            ended.clear()
            ctl.run_scripted_episode()
            run_until(lambda: len(saved) > i, 90)
        rows += measure(f"recording scripted episode {i + 1}", episode,
                        split=(f"  outcome dialog + save {i + 1}", ended))
    win.close()

    base = rows[0]["max"] or 1.0
    load = os.getloadavg()[0]
    print(f"\nUI-thread gaps of a 5 ms QTimer ({args.robot}, load average {load:.1f} on {os.cpu_count()} cores)")
    print("gap = wall time between firings; busy = the UI thread's own CPU time inside a gap (its work,")
    print("without the time it waited for a core or the GIL, which is what a loaded box adds)")
    print(f"{'phase':34s} {'samples':>7s} {'max ms':>8s} {'p99 ms':>8s} {'max/base':>8s} {'busy max':>8s} "
          f"{'busy p99':>8s} {'UI img/s':>8s} {'dropped':>7s} {'stalls':>6s} {'overrun':>7s}")
    for r in rows:
        print(f"{r['phase']:34s} {r['n']:7d} {r['max']:8.1f} {r['p99']:8.1f} {r['max'] / base:8.2f} "
              f"{r['cpu_max']:8.1f} {r['cpu_p99']:8.1f} {r['ui_hz']:8.1f} {r['dropped']:7d} "
              f"{r['stalls']:6d} {r['overruns']:7d}")
    if args.tabs:
        print(f"\n{'tab visited':40s} {'overruns':>8s} {'period max ms':>13s} {'stalls':>6s} {'UI gap max ms':>13s}")
        for label, o, pm, st_, gm in per_tab:
            print(f"{label:40s} {o:8d} {pm:13.0f} {st_:6d} {gm:13.0f}")
    for r in rows:
        if "period_max" in r:
            print(f"{r['phase']}: control loop's longest period {r['period_max']:.0f} ms "
                  f"(nominal {1e3 / ctl.session.rate_hz if ctl.session else 50:.0f} ms), "
                  f"{r['stalls']} loop_stalled, {r['overruns']} overruns, {r['dropped']} frames dropped")
    print(f"episodes saved: {len(saved)} ({', '.join(e.outcome for e in saved)})")
    if args.json:
        import json

        print(json.dumps({"load": load, "rows": rows,
                          "tabs": [dict(zip(("tab", "overruns", "period_max", "stalls", "gap_max"), t))
                                   for t in (per_tab if args.tabs else [])]}))
    if args.blame:
        sampling.clear()
        total = sum(blame.values()) or 1
        print(f"\nUI thread inside stalls > {args.blame_ms:.0f} ms: {total} samples of 5 ms")
        for (own, inner), k in blame.most_common(args.blame_top):
            print(f"{100 * k / total:5.1f}%  {own}  <- {inner}")
        print("other threads at the same samples (idle waits included):")
        for (name, own, inner), k in others.most_common(args.blame_top):
            print(f"{100 * k / total:5.1f}%  [{name}] {own}  <- {inner}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
