"""Screenshot of the Evaluate tab showing a finished run's success by subtask and where each failed
trial failed (docs/screenshots/evaluate_subtasks.png).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshot_evaluate_subtasks.py RUN_DIR [RUN_DIR …] \\
        [--out docs/screenshots/evaluate_subtasks.png]

RUN_DIR is a rollout run folder (report.json from `main.py rollout` or the tab); the trials of every
folder given are shown together, as the tab shows a run's trials live.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots" / "evaluate_subtasks.png"))
    args = ap.parse_args()

    from PySide6 import QtWidgets

    from app.rollout import LiveState
    from app.success import TrialRecord, read_report
    from widgets.evaluate_tab import EvaluateTab
    from widgets.main_window import apply_theme

    app = QtWidgets.QApplication(sys.argv)
    apply_theme(app)
    fields = set(TrialRecord.__dataclass_fields__)
    trials, meta = [], {}
    for run in args.runs:
        doc = read_report(run)
        meta = doc["meta"]
        for t in doc["trials"]:
            trials.append(TrialRecord(**{k: v for k, v in t.items() if k in fields}))
    tab = EvaluateTab(None)
    tab.resize(1400, 760)
    cfg = meta.get("config", {})
    tab.policy.setCurrentText(cfg.get("policy", "expert"))
    tab.task.setCurrentText(cfg.get("task", "pick_cube"))
    tab.checkpoint.setText(str(cfg.get("checkpoint") or ""))
    tab.out.setText(str(args.runs[0]))
    tab.trials.setValue(len(trials))
    tab.show()
    tab.show_state(LiveState(phase="done", trial=len(trials) - 1, n_trials=len(trials), trials=trials,
                             message=meta.get("title", "")))
    for _ in range(20):
        app.processEvents()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tab.grab().save(args.out)
    print(f"saved {args.out} ({len(trials)} trials)")
    tab.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
