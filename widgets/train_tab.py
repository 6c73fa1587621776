"""Train tab: pick a model (action expert stage 1 / stage 2, encoder), data and hyperparameters, run
``python main.py train … --progress json`` in a subprocess and watch it: progress bar, step rate, ETA,
live loss curve (pyqtgraph), log. Cancel makes the trainer save its checkpoint; Resume continues
from it; when a run ends its checkpoint can go straight to Evaluate (expert) or to Annotate's label
suggestions (encoder).

The process and its event stream belong to app.train_controller.TrainController; this is the view.
Each model keeps its own last settings (QSettings), so switching the model does not lose the
stage-1 batch size when the encoder is tried.
"""
from __future__ import annotations

import math
import shlex

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets
from scipy.signal import lfilter

from app.train_controller import MODELS, RunState, TrainController, TrainSpec
from widgets import style
from widgets.dialogs import show_error

# Sensible starting points per model (the CLI's defaults; stage 2 and the encoder want smaller batches).
DEFAULT_SPECS = {
    "pretrain": TrainSpec(model="pretrain", synthetic=500, steps=2000, batch_size=256, lr=1e-3,
                          out="runs/expert_stage1"),
    "finetune": TrainSpec(model="finetune", synthetic=0, steps=4000, batch_size=32, lr=1e-3,
                          out="runs/expert_stage2", correct_waypoints=True),
    "encoder": TrainSpec(model="encoder", epochs=30, batch_size=16, lr=1e-3, out="runs/encoder"),
}
SETTINGS_MODEL = "train/model"


def _spec_key(model: str) -> str:
    return f"train/spec_{model}"


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _path_row(edit: QtWidgets.QLineEdit, pick) -> QtWidgets.QWidget:
    w = QtWidgets.QWidget()
    lay = QtWidgets.QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(2)
    lay.addWidget(edit, 1)
    b = QtWidgets.QToolButton()
    b.setText("…")
    b.clicked.connect(pick)
    lay.addWidget(b)
    return w


class TrainTab(QtWidgets.QWidget):
    openInEvaluate = QtCore.Signal(str)    # an expert checkpoint to evaluate
    useEncoder = QtCore.Signal(str)        # an encoder checkpoint for Annotate's suggestions

    def __init__(self, settings=None, parent=None, *, controller: TrainController | None = None):
        super().__init__(parent)
        self.settings = settings
        self.controller = controller or TrainController(self)
        self.error_box: QtWidgets.QMessageBox | None = None
        self._model = ""
        self._build()
        c = self.controller
        c.stateChanged.connect(self.show_state)
        c.lossAdded.connect(self._on_loss)
        c.logLine.connect(self._log)
        c.finished.connect(self._on_finished)
        c.runningChanged.connect(self._set_running)
        self._load_settings()
        self._set_running(False)

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        self.model = QtWidgets.QComboBox()
        for key, (label, _) in MODELS.items():
            self.model.addItem(label, key)
        self.model.currentIndexChanged.connect(lambda _i: self._switch_model(self.model.currentData()))
        self.data = QtWidgets.QLineEdit()
        self.data.setPlaceholderText("episode folder (*.h5); encoder: also an exported clip folder")
        self.synthetic = QtWidgets.QSpinBox()
        self.synthetic.setRange(0, 1_000_000)
        self.synthetic.setToolTip("synthetic B-spline trajectories for action pre-training")
        self.steps = QtWidgets.QSpinBox()
        self.steps.setRange(1, 10_000_000)
        self.epochs = QtWidgets.QSpinBox()
        self.epochs.setRange(1, 100_000)
        self.batch = QtWidgets.QSpinBox()
        self.batch.setRange(1, 65536)
        self.lr = QtWidgets.QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.goal_noise = QtWidgets.QDoubleSpinBox()
        self.goal_noise.setDecimals(3)
        self.goal_noise.setRange(0.0, 2.0)
        self.goal_noise.setSingleStep(0.05)
        self.goal_noise.setToolTip("std of Gaussian noise on the guidance pose, normalised units (paper: 0.1)")
        self.n_points = QtWidgets.QSpinBox()
        self.n_points.setRange(16, 65536)
        self.n_points.setToolTip("points per cloud after farthest-point sampling (fresh models only)")
        self.init = QtWidgets.QLineEdit()
        self.init.setPlaceholderText("optional: start from these weights (stage 2: a stage-1 checkpoint)")
        self.resume = QtWidgets.QLineEdit()
        self.resume.setPlaceholderText("optional: continue this run's checkpoint")
        self.out = QtWidgets.QLineEdit()
        self.extra = QtWidgets.QLineEdit()
        self.extra.setPlaceholderText("more trainer flags, e.g. --device cuda --horizon 16")
        self.correct_waypoints = QtWidgets.QCheckBox("correct imprecise waypoints")
        self.correct_waypoints.setToolTip(
            "keypoint head + training copies with displaced waypoints (--waypoint-noise 0.03 --keypoint-feat 32 "
            "--keypoint-skip): the expert places the grasp from the cloud, not the waypoint (assets/checkpoints/README.md)")

        form = QtWidgets.QGridLayout()
        form.setHorizontalSpacing(8)
        self._rows: dict[str, tuple[QtWidgets.QLabel, QtWidgets.QWidget]] = {}

        def add(name, label, widget, row, col, span=1):
            lab = QtWidgets.QLabel(label)
            lab.setAlignment(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)
            form.addWidget(lab, row, 2 * col)
            form.addWidget(widget, row, 2 * col + 1, 1, 2 * span - 1)
            self._rows[name] = (lab, widget)

        add("model", "model", self.model, 0, 0, 2)
        add("data", "data", _path_row(self.data, self._pick_data), 0, 2, 2)
        add("steps", "steps", self.steps, 1, 0)
        add("epochs", "epochs", self.epochs, 1, 0)
        add("batch", "batch size", self.batch, 1, 1)
        add("lr", "learning rate", self.lr, 1, 2)
        add("synthetic", "synthetic", self.synthetic, 1, 3)
        add("goal_noise", "goal noise", self.goal_noise, 2, 0)
        add("n_points", "cloud points", self.n_points, 2, 1)
        add("init", "init from", _path_row(self.init, lambda: self._pick_file(self.init)), 2, 2, 2)
        add("out", "run folder", _path_row(self.out, self._pick_out), 3, 0, 2)
        add("resume", "resume", _path_row(self.resume, lambda: self._pick_file(self.resume)), 3, 2, 2)
        add("extra", "more flags", self.extra, 4, 0, 2)
        add("correct_waypoints", "", self.correct_waypoints, 1, 3)  # synthetic's slot: stage 1 only, this stage 2 only
        for c in (1, 3, 5, 7):
            form.setColumnStretch(c, 1)

        self.start_btn = QtWidgets.QPushButton("Start")
        self.start_btn.setObjectName("startTraining")
        self.cancel_btn = QtWidgets.QPushButton("Cancel")
        self.cancel_btn.setToolTip("stop at the next step; the trainer saves its checkpoint")
        self.resume_btn = QtWidgets.QPushButton("Resume")
        self.resume_btn.setToolTip("continue the last run from its last checkpoint")
        self.use_btn = QtWidgets.QPushButton("Open in Evaluate")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self.controller.cancel)
        self.resume_btn.clicked.connect(self.resume_last)
        self.use_btn.clicked.connect(self._use_checkpoint)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.start_btn, self.cancel_btn, self.resume_btn, self.use_btn):
            buttons.addWidget(b)
        form.addLayout(buttons, 4, 4, 1, 4)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m steps")
        self.status = QtWidgets.QLabel("idle")
        self.status.setObjectName("trainStatus")
        self.rate = QtWidgets.QLabel("")
        self.checkpoint = QtWidgets.QLabel("no checkpoint yet")
        self.checkpoint.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.checkpoint.setStyleSheet(f"color: {style.TEXT_DIM};")
        info = QtWidgets.QHBoxLayout()
        info.addWidget(self.status, 1)
        info.addWidget(self.rate)

        self.plot = pg.PlotWidget()
        self.plot.setBackground(style.PANEL)
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", "training loss")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLogMode(False, True)
        self.plot.getAxis("left").enableAutoSIPrefix(False)   # "4·10² (x0.001)" reads worse than 0.4
        self.plot.addLegend(offset=(-10, 10))
        self.curve_raw = self.plot.plot([], [], pen=pg.mkPen("#4fa3ff", width=1), name="loss")
        self.curve_smooth = self.plot.plot([], [], pen=pg.mkPen("#ffb347", width=2), name="smoothed")
        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setLineWrapMode(QtWidgets.QPlainTextEdit.NoWrap)
        mono = QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.FixedFont)
        self.log.setFont(mono)
        split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        split.addWidget(self.plot)
        split.addWidget(self.log)
        split.setSizes([700, 500])

        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.progress)
        lay.addLayout(info)
        lay.addWidget(self.checkpoint)
        lay.addWidget(split, 1)
        self._switch_model("pretrain")

    # ------------------------------------------------------------------ form ⇄ spec
    def spec(self) -> TrainSpec:
        try:
            extra = shlex.split(self.extra.text())
        except ValueError as exc:
            raise ValueError(f"more flags: {exc}") from None
        return TrainSpec(model=self._model, data=self.data.text().strip(), synthetic=self.synthetic.value(),
                         steps=self.steps.value(), epochs=self.epochs.value(), batch_size=self.batch.value(),
                         lr=self.lr.value(), goal_noise=self.goal_noise.value(), n_points=self.n_points.value(),
                         init=self.init.text().strip(), resume=self.resume.text().strip(),
                         out=self.out.text().strip(), correct_waypoints=self.correct_waypoints.isChecked(),
                         extra=extra)

    def set_spec(self, spec: TrainSpec) -> None:
        self._switch_model(spec.model, load=False)
        self.data.setText(spec.data)
        self.synthetic.setValue(spec.synthetic)
        self.steps.setValue(spec.steps)
        self.epochs.setValue(spec.epochs)
        self.batch.setValue(spec.batch_size)
        self.lr.setValue(spec.lr)
        self.goal_noise.setValue(spec.goal_noise)
        self.n_points.setValue(spec.n_points)
        self.init.setText(spec.init)
        self.resume.setText(spec.resume)
        self.out.setText(spec.out)
        self.correct_waypoints.setChecked(spec.correct_waypoints)
        self.extra.setText(shlex.join(spec.extra))

    def _switch_model(self, model: str, load: bool = True) -> None:
        if model == self._model:
            return
        if self._model and load:
            self._save_spec()   # the model being left keeps its values
        self._model = model
        self.model.blockSignals(True)
        self.model.setCurrentIndex(max(0, self.model.findData(model)))
        self.model.blockSignals(False)
        expert = model != "encoder"
        shown = {"steps": expert, "epochs": not expert, "synthetic": model == "pretrain", "goal_noise": expert,
                 "n_points": expert, "init": expert, "correct_waypoints": model == "finetune"}
        for name, visible in shown.items():
            for w in self._rows[name]:
                w.setVisible(visible)
        self.use_btn.setText("Open in Evaluate" if expert else "Use for suggestions")
        if load:
            self.set_spec(self._stored_spec(model))

    def _stored_spec(self, model: str) -> TrainSpec:
        default = DEFAULT_SPECS[model]
        if self.settings is None:
            return default
        stored = self.settings.get(_spec_key(model), default.to_dict())
        try:
            spec = TrainSpec.from_dict(stored if isinstance(stored, dict) else {})
        except TypeError:   # a hand-edited or older settings file: fall back to the defaults
            return default
        spec.model = model
        return spec

    def _save_spec(self) -> None:
        if self.settings is None or not self._model:
            return
        try:
            spec = self.spec()
        except ValueError:
            return
        self.settings.set(_spec_key(self._model), spec.to_dict())
        self.settings.set(SETTINGS_MODEL, self._model)

    def _load_settings(self) -> None:
        model = self.settings.get(SETTINGS_MODEL, "pretrain") if self.settings is not None else "pretrain"
        model = model if model in MODELS else "pretrain"
        self._model = ""
        self._switch_model(model)

    # ------------------------------------------------------------------ pickers
    def _pick_data(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Training data folder", self.data.text() or ".")
        if folder:
            self.data.setText(folder)

    def _pick_out(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Run folder", self.out.text() or ".")
        if folder:
            self.out.setText(folder)

    def _pick_file(self, edit: QtWidgets.QLineEdit) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Checkpoint", edit.text() or self.out.text() or ".",
                                                        "Checkpoints (*.pt)")
        if path:
            edit.setText(path)

    # ------------------------------------------------------------------ actions
    def start(self, spec: TrainSpec | None = None) -> bool:
        """Start the form's run (or ``spec``); a bad form is reported in the status line and a dialog."""
        try:
            spec = spec if isinstance(spec, TrainSpec) else self.spec()
            self.controller.start(spec)
        except ValueError as exc:
            self._error(f"cannot start: {exc}")
            return False
        self._save_spec()
        self.log.clear()
        self.curve_raw.setData([], [])
        self.curve_smooth.setData([], [])
        self.plot.setLogMode(False, True)
        self._log("$ " + spec.command_line())
        return True

    def resume_last(self) -> bool:
        spec = self.controller.resume_spec()
        if spec is None:
            self._error("nothing to resume: the last run left no checkpoint")
            return False
        self.resume.setText(spec.resume)
        return self.start(spec)

    def _use_checkpoint(self) -> None:
        path = self.controller.state.checkpoint
        if not path:
            return
        (self.openInEvaluate if self._model != "encoder" else self.useEncoder).emit(path)

    def cancel(self) -> None:
        self.controller.cancel()

    def shutdown(self) -> None:
        self._save_spec()
        self.controller.shutdown()

    # ------------------------------------------------------------------ view
    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.resume_btn.setEnabled(not running and self.controller.resume_spec() is not None)
        self.use_btn.setEnabled(not running and bool(self.controller.state.checkpoint))
        for w in (self.model, self.data, self.synthetic, self.steps, self.epochs, self.batch, self.lr,
                  self.goal_noise, self.n_points, self.init, self.resume, self.out, self.extra):
            w.setEnabled(not running)

    def show_state(self, s: RunState) -> None:
        total = max(1, s.total)
        self.progress.setRange(0, total)
        self.progress.setValue(min(s.step, total))
        text = {"starting": "starting the trainer…", "running": "training", "cancelling": "cancelling",
                "done": "done", "cancelled": "cancelled", "failed": "failed"}.get(s.phase, s.phase)
        if s.phase in ("running", "cancelling") and math.isfinite(s.loss):
            text += f" — step {s.step}/{s.total}, loss {s.loss:.4g}"
        if s.message and s.phase in ("starting", "cancelling", "done", "cancelled", "failed"):
            text += f" · {s.message}"
        self.status.setText(text)
        color = {"failed": style.ERROR, "done": "#6fd08c", "cancelled": style.WARNING}.get(s.phase, style.TEXT)
        self.status.setStyleSheet(f"color: {color};")
        if s.steps_per_s > 0:
            self.rate.setText(f"{s.steps_per_s:.2f} step/s · ETA {format_eta(s.eta_s)}")
        if s.checkpoint:
            self.checkpoint.setText(f"checkpoint: {s.checkpoint}")

    def _on_loss(self, _step: int, _loss: float) -> None:
        s = self.controller.state
        x = np.asarray(s.steps, float)
        y = np.asarray(s.losses, float)
        if len(y) and y.min() <= 0:
            self.plot.setLogMode(False, False)   # log axis cannot show a loss that reached zero
        self.curve_raw.setData(x, y)
        # Exponential smoothing over ~10 % of the points so far: the trend under the minibatch noise.
        alpha = min(1.0, 2.0 / (max(2, len(y) // 10) + 1))
        smooth, _ = lfilter([alpha], [1.0, alpha - 1.0], y, zi=[(1.0 - alpha) * y[0]])
        self.curve_smooth.setData(x, smooth)

    def _log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def _on_finished(self, phase: str, message: str) -> None:
        self._set_running(False)
        if phase == "failed":
            self._error(f"training failed: {message}")

    def _error(self, line: str) -> None:
        self.status.setText(line)
        self.status.setStyleSheet(f"color: {style.ERROR};")
        if self.error_box is not None and self.error_box.isVisible():
            self.error_box.setText(line)
            return
        self.error_box = box = show_error(self, line, "Training")
        box.destroyed.connect(lambda *_: setattr(self, "error_box", None) if self.error_box is box else None)
