"""Evaluate tab: run rollouts (checkpoint × task × waypoint source × N trials) and watch success live.

Shows per-task success with its Wilson 95 % interval, the cumulative success curve with the running
interval as a band (pyqtgraph), the trial table, the policy latency, and takes the operator's S/F keys
(outcome on hardware; in sim they override the predicate) and the reset confirmation (Enter).

The runner (app.rollout.RolloutRunner) works on a plain thread; ``RolloutWorker`` bridges it to Qt with
signals, and the view redraws from ``runner.snapshot()`` on a timer, so the UI thread never waits on the
robot, the simulator or the network.

Size (~590 lines): the tab's form, plots, trial and subtask tables and two thread workers;
the rollout logic is in app/rollout.py, app/subtasks.py and app/corrections.py.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from app import preload
from app.rollout import POLICIES, WAYPOINT_SOURCES, LiveState, RolloutConfig, RolloutRunner
from app.success import cumulative_curve, latency_stats, subtask_summary, summarize, wilson_interval

log = logging.getLogger(__name__)

TASKS = ("pick_cube", "place_in_bin", "stack_cubes", "press_button")
BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"
# One expert and one waypoint predictor for every sim task on both arms (assets/checkpoints/README.md).
DEFAULT_CHECKPOINT = BUNDLED / "expert_multitask.pt"
DEFAULT_KEYPOINTS = BUNDLED / "keypoints_multitask.pt"
COLUMNS = ("trial", "seed", "outcome", "reason", "failed at", "diagnosis", "seconds", "latency p50 ms", "chunks",
           "episode")
SUBTASK_COLUMNS = ("subtask", "reached", "done", "rate", "Wilson 95 %", "failed here")


class _ThreadWorker(QtCore.QObject):
    """A QObject whose ``_run`` runs once on its own daemon thread (the GUI never waits on it)."""

    thread_name = "worker"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def wait(self, timeout: float = 10.0) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class RolloutWorker(_ThreadWorker):
    """Runs a RolloutRunner on a worker thread (opening its own DeviceSession unless one is given)."""

    updated = QtCore.Signal()
    finished = QtCore.Signal(str)  # "" when the run ended normally, else the error line
    thread_name = "rollout"

    def __init__(self, config: RolloutConfig, robot: str = "sim-xarm6", camera: str = "sim", rate_hz: float = 20.0,
                 session=None, policy=None, parent=None, lab=None):
        super().__init__(parent)
        self.config = config
        self.lab = lab  # the bench's TCP offset + workspace (robots.lab_config.LabConfig); defaults if None
        self.robot, self.camera, self.rate_hz = robot, camera, rate_hz
        self._session = session
        self._policy = policy
        self.runner: RolloutRunner | None = None
        self._thread: threading.Thread | None = None
        self._cancelled = threading.Event()

    def _run(self) -> None:
        from app.session import DeviceSession

        error = ""
        own = None
        try:
            session = self._session
            if session is None:
                own = session = DeviceSession(self.robot, self.camera, "none", self.rate_hz, task=self.config.task,
                                              seed=self.config.seed, lab=self.lab).open()
            if self._cancelled.is_set():
                return
            self.runner = RolloutRunner(session, self.config, policy=self._policy, on_update=self.updated.emit)
            if self._cancelled.is_set():
                self.runner.cancel()
            self.runner.run()
        except Exception as exc:  # shown in the tab, never a traceback in the GUI
            log.exception("rollout failed")
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            if own is not None:
                own.close()
            self.finished.emit(error)

    def cancel(self) -> None:
        self._cancelled.set()
        if self.runner is not None:
            self.runner.cancel()


class FailureExportWorker(_ThreadWorker):
    """Turns a run folder's failed trials into a correction dataset on a worker thread: in the sim the
    scripted expert takes over each failed trial (app.corrections.record_corrections, its own
    DeviceSession), on hardware the failed episodes are copied."""

    progress = QtCore.Signal(str)
    finished = QtCore.Signal(str)  # the summary line, or "error: …"
    thread_name = "export-failures"

    def __init__(self, run_dir: str, out_dir: str, robot: str = "sim-xarm6", rate_hz: float = 20.0, session=None,
                 parent=None):
        super().__init__(parent)
        self.run_dir, self.out_dir, self.robot, self.rate_hz = run_dir, out_dir, robot, rate_hz
        self._session = session
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        from app.corrections import copy_failures, failed_trials, record_corrections

        own = None
        try:
            _, failed = failed_trials(self.run_dir)
            if not failed:
                self.finished.emit("no failed trials with an episode to export")
                return
            if not self.robot.startswith("sim"):
                n = len(copy_failures(self.run_dir, self.out_dir))
                self.finished.emit(f"{n} failed episodes copied to {self.out_dir} (correct them in Annotate)")
                return
            from app.session import DeviceSession

            session = self._session
            if session is None:
                own = session = DeviceSession(self.robot, "sim", "none", self.rate_hz, task=failed[0].task,
                                              seed=failed[0].seed).open()
            done = record_corrections(session, self.run_dir, self.out_dir, progress=self.progress.emit,
                                      cancel=self._cancel)
            kept = sum(c.path is not None for c in done)
            self.finished.emit(f"{kept}/{len(done)} failed trials corrected by the expert → {self.out_dir}")
        except Exception as exc:  # a line in the tab, never a traceback in the GUI
            log.exception("export of failed trials failed")
            self.finished.emit(f"error: {type(exc).__name__}: {exc}".splitlines()[0])
        finally:
            if own is not None:
                own.close()

    def cancel(self) -> None:
        self._cancel.set()


class EvaluateTab(QtWidgets.QWidget):
    chunkChanged = QtCore.Signal(object)  # (H, 7) latest predicted action chunk, for the 3D view
    runFinished = QtCore.Signal(str)

    def __init__(self, settings=None, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.worker: RolloutWorker | None = None
        self.export_worker: FailureExportWorker | None = None
        self._last_chunk_id = None
        self._shown_trials = -1
        self._build()
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.refresh)
        self._load_settings()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        form = QtWidgets.QGridLayout()
        self.checkpoint = QtWidgets.QLineEdit(str(DEFAULT_CHECKPOINT))
        browse = QtWidgets.QPushButton("…")
        browse.setFixedWidth(28)
        browse.clicked.connect(self._browse)
        self.policy = QtWidgets.QComboBox()
        self.policy.addItems(POLICIES)
        self.task = QtWidgets.QComboBox()
        self.task.addItems(TASKS)
        self.waypoints = QtWidgets.QComboBox()
        self.waypoints.addItems(WAYPOINT_SOURCES)
        self.trials = QtWidgets.QSpinBox()
        self.trials.setRange(1, 1000)
        self.trials.setValue(20)
        self.seed = QtWidgets.QSpinBox()
        self.seed.setRange(0, 10 ** 6)
        self.seed.setValue(1000)
        self.robot = QtWidgets.QLineEdit("sim-xarm6")
        self.out = QtWidgets.QLineEdit("runs/eval")
        # Instruction → waypoints → expert: what the operator asks for, in words (predicted waypoints).
        self.instruction = QtWidgets.QLineEdit()
        self.instruction.setObjectName("instruction")
        self.instruction.setToolTip("what to do, in words: the waypoint predictor picks its plan from it and "
                                    "conditions every waypoint on it (waypoints 'predicted'); empty = the task's own")
        self.keypoints = QtWidgets.QLineEdit(str(DEFAULT_KEYPOINTS))
        self.keypoints.setToolTip("waypoint-predictor checkpoint for waypoints 'predicted'")
        from robots.sim.variations import VARIATIONS

        self.variation = QtWidgets.QComboBox()
        self.variation.addItems(VARIATIONS)
        self.variation.setToolTip("sim only: a scene change no demo showed, on every trial (distractor cubes, "
                                  "unseen cube colours, table 2 cm higher or lower)")
        self.task.currentTextChanged.connect(self._task_changed)
        self.waypoints.currentTextChanged.connect(self._waypoints_changed)
        self._task_changed(self.task.currentText())
        self._waypoints_changed(self.waypoints.currentText())
        self.start_btn = QtWidgets.QPushButton("Start")
        self.start_btn.setObjectName("startRollout")
        self.cancel_btn = QtWidgets.QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self.cancel)
        row = [("checkpoint", self.checkpoint), ("", browse), ("policy", self.policy), ("task", self.task),
               ("waypoints", self.waypoints)]
        row2 = [("trials", self.trials), ("first seed", self.seed), ("robot", self.robot), ("run folder", self.out)]
        for c, (label, w) in enumerate(row):
            if label:
                form.addWidget(QtWidgets.QLabel(label), 0, 2 * c)
            form.addWidget(w, 0, 2 * c + 1)
        for c, (label, w) in enumerate(row2):
            form.addWidget(QtWidgets.QLabel(label), 1, 2 * c)
            form.addWidget(w, 1, 2 * c + 1)
        form.addWidget(self.start_btn, 1, 8)
        form.addWidget(self.cancel_btn, 1, 9)
        form.addWidget(QtWidgets.QLabel("instruction"), 2, 0)
        form.addWidget(self.instruction, 2, 1, 1, 3)
        form.addWidget(QtWidgets.QLabel("keypoints"), 2, 4)
        form.addWidget(self.keypoints, 2, 5, 1, 3)
        form.addWidget(QtWidgets.QLabel("scene"), 2, 8)
        form.addWidget(self.variation, 2, 9)
        form.setColumnStretch(1, 3)

        self.summary = QtWidgets.QLabel("no trials yet")
        self.summary.setObjectName("successSummary")
        f = self.summary.font()
        f.setPointSize(f.pointSize() + 3)
        f.setBold(True)
        self.summary.setFont(f)
        self.status = QtWidgets.QLabel("idle")
        self.latency = QtWidgets.QLabel("policy latency: –")
        self.success_btn = QtWidgets.QPushButton("Success (S)")
        self.failure_btn = QtWidgets.QPushButton("Failure (F)")
        self.reset_btn = QtWidgets.QPushButton("Scene reset (Enter)")
        self.success_btn.clicked.connect(lambda: self.operator_outcome(True))
        self.failure_btn.clicked.connect(lambda: self.operator_outcome(False))
        self.reset_btn.clicked.connect(self.confirm_reset)
        self.export_btn = QtWidgets.QPushButton("Export failed trials…")
        self.export_btn.setObjectName("exportFailures")
        self.export_btn.setToolTip("write the run's failed trials as a correction dataset (DAgger-style): in the sim "
                                   "the scripted expert takes over each failed trial where it failed; the episodes "
                                   "open in Annotate and train with 'train expert --episodes'")
        self.export_btn.clicked.connect(self._ask_export)
        keys = QtWidgets.QHBoxLayout()
        for w in (self.status, self.latency):
            keys.addWidget(w)
        keys.addStretch(1)
        for w in (self.export_btn, self.reset_btn, self.success_btn, self.failure_btn):
            keys.addWidget(w)

        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setLabel("bottom", "trial")
        self.plot.setLabel("left", "cumulative success (%)")
        self.plot.setYRange(0, 100)
        self.plot.setXRange(0.5, 20.5)  # before the first trial: the default run's trials, not ±400
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.curve = self.plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2), symbol="o", symbolSize=6,
                                    symbolBrush="#1f77b4")
        self.ci_low = self.plot.plot([], [], pen=pg.mkPen(None))
        self.ci_high = self.plot.plot([], [], pen=pg.mkPen(None))
        self.band = pg.FillBetweenItem(self.ci_low, self.ci_high, brush=pg.mkBrush(31, 119, 180, 50))
        self.plot.addItem(self.band)

        # Success by subtask: completed/reached per atomic action with its Wilson interval (table + bars).
        self.subtask_table = QtWidgets.QTableWidget(0, len(SUBTASK_COLUMNS))
        self.subtask_table.setObjectName("subtaskTable")
        self.subtask_table.setHorizontalHeaderLabels(SUBTASK_COLUMNS)
        self.subtask_table.verticalHeader().setVisible(False)
        self.subtask_table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.subtask_table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        self.subtask_table.horizontalHeader().setStretchLastSection(True)
        self.subtask_plot = pg.PlotWidget()
        self.subtask_plot.setBackground("w")
        self.subtask_plot.setLabel("left", "completed / reached (%)")
        self.subtask_plot.setYRange(0, 100)
        self.subtask_plot.setXRange(-0.6, 0.6)
        self.subtask_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.subtask_plot.showGrid(y=True, alpha=0.3)
        self.subtask_plot.setTitle("success by subtask (Wilson 95 %)", color="#333", size="9pt")
        self.subtask_bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush="#1f77b4")
        self.subtask_err = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), pen=pg.mkPen("k", width=1.5), beam=0.2)
        self.subtask_plot.addItem(self.subtask_bars)
        self.subtask_plot.addItem(self.subtask_err)
        subtasks = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        subtasks.addWidget(self.subtask_table)
        subtasks.addWidget(self.subtask_plot)
        subtasks.setSizes([360, 260])

        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)

        # Trials table and the 3D view share the right side; the 3D view (a GL widget) is built the
        # first time its page is opened, as in the Collect and Annotate tabs.
        self.view_tabs = QtWidgets.QTabWidget()
        self.view_tabs.addTab(self.table, "Trials")
        self._scene3d_page = QtWidgets.QWidget()
        QtWidgets.QVBoxLayout(self._scene3d_page).setContentsMargins(0, 0, 0, 0)
        self.view_tabs.addTab(self._scene3d_page, "3D view")
        self.view_tabs.setTabToolTip(1, "the cloud the policy saw, the trial's waypoints and guidance spline, the "
                                        "predicted action chunk (orange) and the expert's keypoint (magenta)")
        self.view_tabs.currentChanged.connect(self._on_view_tab)
        self.scene3d = None  # widgets.pointcloud_view.PointCloudView once the 3D page was opened
        self._scene3d_shown = False
        self._shown_plan: np.ndarray | None = None
        self._framed = False
        left = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        left.addWidget(self.plot)
        left.addWidget(subtasks)
        left.setSizes([300, 260])
        split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(self.view_tabs)
        split.setSizes([500, 600])
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.summary)
        lay.addLayout(keys)
        lay.addWidget(split, 1)

        # S / F / Enter: the action registry's "evaluate" context (app/actions.py); the buttons name
        # the keys as the user has them.
        from widgets.shortcuts import hint_button, keymap_for, make_action
        for name, button, label in (("trial_success", self.success_btn, "Success"),
                                    ("trial_failure", self.failure_btn, "Failure"),
                                    ("confirm_reset", self.reset_btn, "Scene reset")):
            make_action(keymap_for(self.settings), name, self, self)
            hint_button(keymap_for(self.settings), button, name, label)
        self._set_running(False)

    def _browse(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Checkpoint", str(Path(self.checkpoint.text()).parent),
                                                        "Checkpoints (*.pt)")
        if path:
            self.checkpoint.setText(path)

    def _load_settings(self) -> None:
        if self.settings is None:
            return
        self.checkpoint.setText(self.settings.get("evaluate/checkpoint", str(DEFAULT_CHECKPOINT)))
        self.out.setText(self.settings.get("evaluate/out", "runs/eval"))
        self.trials.setValue(self.settings.get("evaluate/trials", 20))
        self.keypoints.setText(self.settings.get("evaluate/keypoints", str(DEFAULT_KEYPOINTS)))
        self.instruction.setText(self.settings.get("evaluate/instruction", ""))

    def _save_settings(self) -> None:
        if self.settings is None:
            return
        self.settings.set("evaluate/checkpoint", self.checkpoint.text())
        self.settings.set("evaluate/out", self.out.text())
        self.settings.set("evaluate/trials", self.trials.value())
        self.settings.set("evaluate/keypoints", self.keypoints.text())
        self.settings.set("evaluate/instruction", self.instruction.text())

    # ------------------------------------------------------------------ actions
    def _task_changed(self, task: str) -> None:
        from robots.sim.tasks import TASKS as SIM_TASKS

        t = SIM_TASKS.get(task)
        self.instruction.setPlaceholderText(f"{t.instruction} (the task's own)" if t else "")

    def _waypoints_changed(self, source: str) -> None:
        predicted = source == "predicted"
        self.instruction.setEnabled(predicted)
        self.keypoints.setEnabled(predicted)

    def config(self) -> RolloutConfig:
        predicted = self.waypoints.currentText() == "predicted"
        return RolloutConfig(task=self.task.currentText(), checkpoint=self.checkpoint.text().strip() or None,
                             policy=self.policy.currentText(), waypoints=self.waypoints.currentText(),
                             trials=self.trials.value(), seed=self.seed.value(), out_dir=self.out.text().strip(),
                             keypoints=(self.keypoints.text().strip() or None) if predicted else None,
                             instruction=(self.instruction.text().strip() or None) if predicted else None,
                             variation=self.variation.currentText())

    def start(self, session=None, policy=None) -> bool:
        """Start a run from the form (``session``/``policy`` inject ready objects: tests, the main window)."""
        if self.worker is not None and self.worker.running:
            return False
        try:
            cfg = self.config()
        except ValueError as exc:
            self.status.setText(f"cannot start: {exc}")
            return False
        self._save_settings()
        self.table.setRowCount(0)
        self._shown_trials = -1
        robot = self.robot.text().strip()
        lab = None
        if self.settings is not None:
            from app.lab_settings import load_lab_config

            try:
                lab = load_lab_config(robot, self.settings)
            except ValueError:
                lab = None  # an unknown robot string fails with its own message when the session opens
        self.worker = RolloutWorker(cfg, robot=robot, session=session, policy=policy, parent=self, lab=lab)
        self.worker.finished.connect(self._on_finished)
        self.status.setText("starting…")
        self._set_running(True)
        self.worker.start()
        self._timer.start()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("cancelling…")

    def operator_outcome(self, success: bool) -> None:
        runner = self.worker.runner if self.worker is not None else None
        if runner is not None:
            runner.operator_outcome(success, "" if success else "operator")

    def confirm_reset(self) -> None:
        runner = self.worker.runner if self.worker is not None else None
        if runner is not None:
            runner.confirm_reset()

    def _on_finished(self, error: str) -> None:
        self._timer.stop()
        self.refresh()
        if error:
            self.status.setText(f"error: {error}")
        self._set_running(False)
        self.runFinished.emit(error)

    def _ask_export(self) -> None:
        out = QtWidgets.QFileDialog.getExistingDirectory(self, "Folder for the correction episodes",
                                                         str(Path(self.out.text().strip() or ".") / "corrections"))
        if out:
            self.export_failures(out)

    def export_failures(self, out_dir: str, session=None) -> bool:
        """Export the run folder's failed trials into ``out_dir`` (see FailureExportWorker)."""
        busy = (self.worker is not None and self.worker.running) or (
            self.export_worker is not None and self.export_worker.running)
        if busy:
            return False
        run = self.out.text().strip()
        if not (Path(run) / "report.json").is_file():
            self.status.setText(f"export: no rollout report in {run}")
            return False
        self.export_worker = FailureExportWorker(run, out_dir, robot=self.robot.text().strip(), session=session,
                                                 parent=self)
        self.export_worker.progress.connect(lambda m: self.status.setText(f"export: {m}"))
        self.export_worker.finished.connect(self._on_export_finished)
        self.export_btn.setEnabled(False)
        self.start_btn.setEnabled(False)
        self.status.setText("export: starting…")
        self.export_worker.start()
        return True

    def _on_export_finished(self, message: str) -> None:
        self.status.setText(f"export: {message}")
        self.export_btn.setEnabled(True)
        self.start_btn.setEnabled(self.worker is None or not self.worker.running)

    def _set_running(self, running: bool) -> None:
        self.export_btn.setEnabled(not running)
        self.start_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        for w in (self.checkpoint, self.policy, self.task, self.waypoints, self.trials, self.seed, self.robot, self.out,
                  self.variation):
            w.setEnabled(not running)
        predicted = self.waypoints.currentText() == "predicted"
        self.instruction.setEnabled(not running and predicted)
        self.keypoints.setEnabled(not running and predicted)

    # ------------------------------------------------------------------ view
    def snapshot(self) -> LiveState | None:
        runner = self.worker.runner if self.worker is not None else None
        return runner.snapshot() if runner is not None else None

    def refresh(self) -> None:
        s = self.snapshot()
        if s is None:
            return
        self.show_state(s)

    def show_state(self, s: LiveState) -> None:
        t = f"{s.phase}"
        if s.phase in ("running", "awaiting_outcome", "awaiting_reset"):
            t += f" — trial {s.trial + 1}/{s.n_trials}, {s.trial_t:.1f} s"
        self.status.setText(t + (f" · {s.message}" if s.message else ""))
        lat = latency_stats(s.latencies_s)
        self.latency.setText("policy latency: –" if not lat["n"] else
                             f"policy latency p50 {lat['p50_ms']:.0f} ms · p99 {lat['p99_ms']:.0f} ms ({lat['n']} chunks)")
        self.reset_btn.setEnabled(s.phase == "awaiting_reset")
        if s.chunk is not None and id(s.chunk) != self._last_chunk_id:
            self._last_chunk_id = id(s.chunk)
            self.chunkChanged.emit(s.chunk)
            self._show_3d(s)
        if s.plan is None and s.chunk is None and self._shown_plan is not None:
            self._show_3d(s)  # a new trial: clear the last one's chunk, keypoint and plan
        if len(s.trials) == self._shown_trials:
            return
        self._shown_trials = len(s.trials)
        parts = []
        for task, sm in summarize(s.trials).items():
            parts.append(f"{task}: {sm.successes}/{sm.trials} = {sm.rate * 100:.0f} %  "
                         f"(Wilson 95 % CI {sm.ci_low * 100:.0f}–{sm.ci_high * 100:.0f} %)")
        self.summary.setText("   ".join(parts) or "no trials yet")
        ok = [t.success for t in s.trials]
        x = np.arange(1, len(ok) + 1, dtype=float)
        self.curve.setData(x, cumulative_curve(ok) * 100)
        k = np.cumsum(ok)
        ci = np.array([wilson_interval(int(k[i]), i + 1) for i in range(len(ok))]).reshape(-1, 2) * 100
        self.ci_low.setData(x, ci[:, 0])
        self.ci_high.setData(x, ci[:, 1])
        self.plot.setXRange(0.5, max(s.n_trials, len(ok)) + 0.5)
        self.table.setRowCount(len(s.trials))
        for r, tr in enumerate(s.trials):
            vals = (tr.index + 1, tr.seed, tr.outcome, tr.reason, tr.failed_at, tr.diagnosis, f"{tr.duration_s:.1f}",
                    "–" if not np.isfinite(tr.latency_p50_ms) else f"{tr.latency_p50_ms:.0f}", tr.chunks,
                    Path(tr.episode).name if tr.episode else "")
            for c, v in enumerate(vals):
                item = QtWidgets.QTableWidgetItem(str(v))
                if c in (2, 4):
                    item.setForeground(QtGui.QColor("#2ca02c" if tr.success else "#d62728"))
                if c in (4, 5) and tr.diagnosis:
                    item.setToolTip(f"{tr.failed_at}: {tr.diagnosis} (episode frame {tr.failed_frame})")
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        diag = COLUMNS.index("diagnosis")
        self.table.setColumnWidth(diag, min(self.table.columnWidth(diag), 380))  # the full text is in the tooltip
        self.table.scrollToBottom()
        self._show_subtasks(s.trials)

    def _show_subtasks(self, trials) -> None:
        rows = subtask_summary(trials)
        several = len({r.task for r in rows}) > 1
        self.subtask_table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            rate = "–" if not r.reached else f"{r.rate * 100:.0f} %"
            vals = (f"{r.task}: {r.subtask}" if several else r.subtask, r.reached, r.completed, rate,
                    f"{r.ci_low * 100:.0f}–{r.ci_high * 100:.0f} %", r.failed_here)
            for c, v in enumerate(vals):
                item = QtWidgets.QTableWidgetItem(str(v))
                if c == 5 and r.failed_here:
                    item.setForeground(QtGui.QColor("#d62728"))
                self.subtask_table.setItem(i, c, item)
        x = np.arange(len(rows), dtype=float)
        rate = np.array([0.0 if not r.reached else r.rate * 100 for r in rows])
        lo = np.array([r.ci_low * 100 for r in rows])
        hi = np.array([r.ci_high * 100 for r in rows])
        brushes = [pg.mkBrush("#2ca02c" if r.reached and r.completed == r.reached else
                              "#d62728" if r.failed_here else "#1f77b4") for r in rows]
        self.subtask_bars.setOpts(x=x, height=rate, width=0.6, brushes=brushes)
        self.subtask_err.setData(x=x, y=rate, top=np.clip(hi - rate, 0, None), bottom=np.clip(rate - lo, 0, None))
        ax = self.subtask_plot.getAxis("bottom")
        ax.setTicks([[(float(i), r.subtask) for i, r in enumerate(rows)]])
        self.subtask_plot.setXRange(-0.6, max(len(rows), 1) - 0.4)

    def _on_view_tab(self, index: int) -> None:
        if index != 1 or self.scene3d is not None and self._scene3d_shown:
            return
        self.build_3d_page()
        self._scene3d_shown = True
        s = self.snapshot()
        if s is not None:
            self._show_3d(s)

    def build_3d_page(self) -> None:
        """The 3D page's view (the main window builds it before connecting: see _start_prebuild)."""
        preload.wait_imports()  # never import torch/diffusers/vispy beside the preload thread
        if self.scene3d is not None:
            return
        # Imported when the page is first opened: vispy needs GL, and the waypoint/workspace helpers
        # pull in torch and diffusers (importing this tab went from 1 s to 5 s with them at the top).
        from policies.datasets import DEFAULT_WORKSPACE
        from widgets.pointcloud_view import PointCloudView

        # No toolbar: its crop fields are for editing episodes, and its width would squeeze the
        # success plot; colour by height, as the policy's cloud has no colours.
        self.scene3d = PointCloudView(self._scene3d_page, show_toolbar=False)
        self.scene3d.set_color_mode("height")
        self.scene3d.set_crop_visible(False)
        self.scene3d.set_crop(DEFAULT_WORKSPACE[0], DEFAULT_WORKSPACE[1])
        self._scene3d_page.layout().addWidget(self.scene3d)

    def _show_3d(self, s: LiveState) -> None:
        """Feed the 3D view from a snapshot: cheap (the policy's cloud is its FPS sample, ~10³ points)."""
        view = self.scene3d
        if view is None or self.view_tabs.currentIndex() != 1:
            return
        if s.cloud is not None:
            view.set_cloud(np.asarray(s.cloud, np.float32))
            if not self._framed:  # frame the scene once; the user's camera moves stay after that
                view.reset_view()
                self._framed = True
        view.set_predicted_actions(None if s.chunk is None else s.chunk[:, :3])
        view.set_keypoint(s.keypoint)
        same_plan = (s.plan is None and self._shown_plan is None) or (
            s.plan is not None and self._shown_plan is not None and np.array_equal(s.plan, self._shown_plan))
        if not same_plan:  # once per trial: the spline is rebuilt only when the waypoints change
            self._shown_plan = s.plan
            if s.plan is not None:
                # The trial's own trajectory (timing, dwells and noise included), sampled by the runner
                # with policies.waypoints.trajectory_curve: exactly the curve the guidance comes from.
                curve = None if s.plan_curve is None else np.asarray(s.plan_curve, float)
                if curve is None:  # a state without it (older runner): the policy's curve through the points
                    from policies.waypoints import position_curve

                    curve = position_curve(s.plan)
                view.set_spline_fn(lambda _pts, c=curve: c)
            view.set_waypoints(s.plan)
        view.set_trajectory(None if s.guidance is None else s.guidance[:, :3])

    def shutdown(self) -> None:
        """Cancel a running rollout and wait for it (the arm is halted by the runner's loop stop)."""
        self._timer.stop()
        if self.export_worker is not None:
            self.export_worker.cancel()
            self.export_worker.wait(30.0)
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait(15.0)
