"""Training jobs for the Train tab: build the ``python main.py train …`` command line from a TrainSpec,
run it in a QProcess with ``--progress json``, and turn its JSON lines into Qt signals.

The trainer runs in its own process so a long run never touches the UI thread and a crash in torch
cannot take the app down. Cancel sends SIGTERM (QProcess.terminate): both trainers
(policies/train.py, policies/encoder_train.py) catch SIGINT/SIGTERM, stop on a step boundary and write
their checkpoint, so a cancelled run can be resumed. Only if the process ignores that for
``kill_after_s`` is it killed. QtCore only: the view lives in widgets/train_tab.py.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from PySide6 import QtCore

REPO_ROOT = Path(__file__).resolve().parents[1]
MAIN_PY = REPO_ROOT / "main.py"

# model choice → (label in the tab, CLI words after "train").
MODELS = {
    "pretrain": ("Action expert — stage 1 pre-train (cloud masked)", ["expert", "--stage", "pretrain"]),
    "finetune": ("Action expert — stage 2 point-cloud fine-tune", ["expert", "--stage", "finetune"]),
    "encoder": ("Encoder (RoboAct-CLIP, label suggestions)", ["encoder"]),
}


@dataclass
class TrainSpec:
    """What the tab's form says. ``steps`` drives the expert trainers, ``epochs`` the encoder's."""

    model: str = "pretrain"
    data: str = ""            # episode folder (encoder: an episode folder or an exported clip folder)
    synthetic: int = 500      # stage 1 only: synthetic B-spline trajectories
    steps: int = 2000
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    goal_noise: float = 0.1
    n_points: int = 1024
    init: str = ""            # expert: start from this checkpoint's weights (stage 2 from stage 1)
    resume: str = ""          # continue a run from its checkpoint
    out: str = "runs/expert"
    # Stage 2: train the expert to correct imprecise waypoints (policies/action_expert.py keypoint
    # head + skip, and copies of every demo with displaced waypoints) — the assets/checkpoints recipe.
    correct_waypoints: bool = False
    extra: list[str] = field(default_factory=list)  # further CLI flags (tiny models in tests, --device …)

    def validate(self) -> None:
        """One-line ValueError for what the form can tell before a process is started."""
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if not self.out.strip():
            raise ValueError("choose an output run folder")
        data = self.data.strip()
        if data and not Path(data).exists():
            raise ValueError(f"data folder {data} does not exist")
        if self.model == "pretrain" and not data and self.synthetic <= 0:
            raise ValueError("stage 1 needs data: an episode folder and/or a synthetic count > 0")
        if self.model in ("finetune", "encoder") and not data:
            raise ValueError(f"{'stage 2' if self.model == 'finetune' else 'the encoder'} needs an episode folder")
        for name in ("init", "resume"):
            path = getattr(self, name).strip()
            if path and not Path(path).is_file():
                raise ValueError(f"{name} checkpoint {path} does not exist")
        if self.model == "encoder" and self.init.strip():
            raise ValueError("the encoder has no init checkpoint; use resume to continue a run")

    def argv(self) -> list[str]:
        """Arguments after ``main.py`` (so ``[sys.executable, main.py, *argv]`` runs it)."""
        args = ["train", *MODELS[self.model][1]]
        data = self.data.strip()
        if self.model == "encoder":
            if data:
                clips = (Path(data) / "captions.jsonl").is_file()
                args += ["--clips" if clips else "--episodes", data]
            args += ["--epochs", str(self.epochs), "--batch-size", str(self.batch_size), "--lr", f"{self.lr:g}",
                     "--threads", "1"]
        else:
            if data:
                args += ["--episodes", data]
            args += ["--synthetic", str(self.synthetic if self.model == "pretrain" else 0),
                     "--steps", str(self.steps), "--batch-size", str(self.batch_size), "--lr", f"{self.lr:g}",
                     "--goal-noise", f"{self.goal_noise:g}", "--n-points", str(self.n_points)]
            if self.init.strip() and not self.resume.strip():
                args += ["--init", self.init.strip()]
            if self.model == "finetune" and self.correct_waypoints:
                # --keypoint-* only shape a fresh model; with --init/--resume the checkpoint's config wins.
                args += ["--waypoint-noise", "0.03", "--noise-variants", "4", "--keypoint-feat", "32", "--keypoint-skip"]
        if self.resume.strip():
            args += ["--resume", self.resume.strip()]
        return args + ["--out", self.out.strip(), "--progress", "json", *self.extra]

    def command_line(self) -> str:
        return " ".join(["python", "main.py", *self.argv()])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSpec":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class RunState:
    """What the view shows; updated from the event stream."""

    step: int = 0
    total: int = 0
    loss: float = float("nan")
    steps_per_s: float = 0.0
    eta_s: float | None = None
    checkpoint: str = ""
    phase: str = "idle"       # idle | starting | running | cancelling | done | cancelled | failed
    message: str = ""
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


class TrainController(QtCore.QObject):
    """One training subprocess at a time."""

    stateChanged = QtCore.Signal(object)       # RunState (the same object, updated)
    lossAdded = QtCore.Signal(int, float)      # step, loss
    logLine = QtCore.Signal(str)               # stdout/stderr lines, for the log view
    checkpointSaved = QtCore.Signal(str)
    finished = QtCore.Signal(str, str)         # done | cancelled | failed, one-line message
    runningChanged = QtCore.Signal(bool)

    def __init__(self, parent: QtCore.QObject | None = None, *, python: str = sys.executable,
                 kill_after_s: float = 60.0):
        super().__init__(parent)
        self.python = python
        self.kill_after_s = kill_after_s
        self.spec: TrainSpec | None = None
        self.state = RunState()
        self.last_stderr = ""
        self._proc: QtCore.QProcess | None = None
        self._out_buf = b""
        self._err_buf = b""
        self._ended = ""          # the terminal event seen on stdout (done / cancelled)
        self._cancel_requested = False
        self._rate_t: float | None = None
        self._rate_step = 0
        self._kill_timer = QtCore.QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    # -- control ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.state() != QtCore.QProcess.NotRunning

    def start(self, spec: TrainSpec) -> None:
        """Start a run; ValueError (one line) when the spec is unusable or a run is going."""
        if self.running:
            raise ValueError("a training run is already going; cancel it first")
        spec.validate()
        self.spec = spec
        self.state = RunState(phase="starting", message=spec.command_line())
        self.last_stderr, self._out_buf, self._err_buf, self._ended = "", b"", b"", ""
        self._cancel_requested = False
        self._rate_t, self._rate_step = None, 0
        proc = QtCore.QProcess(self)
        env = QtCore.QProcessEnvironment.systemEnvironment()
        # A lab PC runs the app next to the trainer: torch must not grab every core by default.
        if not env.contains("OMP_NUM_THREADS"):
            env.insert("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.setWorkingDirectory(str(REPO_ROOT))
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self._proc = proc
        self.logLine.emit("$ " + spec.command_line())
        proc.start(self.python, [str(MAIN_PY), *spec.argv()])
        self.runningChanged.emit(True)
        self.stateChanged.emit(self.state)

    def resume_spec(self) -> TrainSpec | None:
        """The last run's spec continuing from its last checkpoint (None when there is none)."""
        if self.spec is None or not self.state.checkpoint or not Path(self.state.checkpoint).is_file():
            return None
        return replace(self.spec, resume=self.state.checkpoint, init="", extra=list(self.spec.extra))

    def cancel(self) -> None:
        """Ask the trainer to stop (SIGTERM → it saves its checkpoint); kill only if it hangs."""
        if not self.running:
            return
        self._cancel_requested = True
        self.state.phase = "cancelling"
        self.state.message = "stopping at the next step, saving a checkpoint…"
        self.stateChanged.emit(self.state)
        self._proc.terminate()
        self._kill_timer.start(int(self.kill_after_s * 1000))

    def wait(self, timeout_s: float = 30.0) -> bool:
        if self._proc is None:
            return True
        return self._proc.state() == QtCore.QProcess.NotRunning or self._proc.waitForFinished(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Window closing: cancel (checkpoint written) and wait a little, then kill."""
        if self.running:
            self.cancel()
            if not self.wait(20.0):
                self._kill()
                self.wait(5.0)

    def _kill(self) -> None:
        if self.running:
            self.logLine.emit("trainer did not stop in time; killed")
            self._proc.kill()

    # -- process output --------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        self._out_buf += bytes(self._proc.readAllStandardOutput())
        *lines, self._out_buf = self._out_buf.split(b"\n")
        for raw in lines:
            self._handle_stdout(raw.decode("utf-8", "replace").strip())

    def _read_stderr(self) -> None:
        self._err_buf += bytes(self._proc.readAllStandardError())
        *lines, self._err_buf = self._err_buf.split(b"\n")
        for raw in lines:
            self._handle_stderr(raw.decode("utf-8", "replace").rstrip())

    def _handle_stderr(self, line: str) -> None:
        if not line.strip():
            return
        # tqdm/warnings may carry carriage returns; keep the last visible part.
        line = line.split("\r")[-1]
        self.last_stderr = line.strip()
        self.logLine.emit(line)

    def _handle_stdout(self, line: str) -> None:
        if not line:
            return
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            ev = None
        if not isinstance(ev, dict) or "event" not in ev:
            self.logLine.emit(line)
            return
        self.handle_event(ev)

    def handle_event(self, ev: dict) -> None:
        """Apply one trainer event (public so the parsing can be tested without a process)."""
        s = self.state
        kind = ev.get("event")
        if kind == "start":
            s.total = int(ev.get("total_steps", s.total) or 0)
            s.step = int(ev.get("step", 0) or 0)
            self._rate_t, self._rate_step = time.monotonic(), s.step
            if s.phase == "starting":
                s.phase = "running"
            s.message = ", ".join(f"{k} {ev[k]}" for k in ("windows", "clips", "batch_size", "device", "params")
                                  if k in ev)
            self.logLine.emit(f"start: step {s.step}/{s.total}" + (f" · {s.message}" if s.message else ""))
        elif kind == "step":
            step = int(ev["step"])
            loss = ev.get("loss", ev.get("total"))   # expert: loss; encoder: total of its losses
            now = time.monotonic()
            if self._rate_t is not None and step > self._rate_step and now > self._rate_t:
                rate = (step - self._rate_step) / (now - self._rate_t)
                # Smoothed: the first steps include warm-up, a single slow step should not swing the ETA.
                s.steps_per_s = rate if s.steps_per_s <= 0 else 0.7 * s.steps_per_s + 0.3 * rate
            self._rate_t, self._rate_step = now, step
            s.step = step
            if ev.get("eta_s") is not None:
                s.eta_s = float(ev["eta_s"])
            elif s.steps_per_s > 0 and s.total:
                s.eta_s = max(0.0, (s.total - step) / s.steps_per_s)
            if loss is not None:
                s.loss = float(loss)
                s.steps.append(step)
                s.losses.append(s.loss)
                self.lossAdded.emit(step, s.loss)
        elif kind == "epoch":
            self.logLine.emit(f"epoch {ev.get('epoch')}: loss {float(ev.get('total', float('nan'))):.4f}")
        elif kind == "checkpoint":
            s.checkpoint = str(ev.get("path", ""))
            self.logLine.emit(f"checkpoint at step {ev.get('step')}: {s.checkpoint}")
            self.checkpointSaved.emit(s.checkpoint)
        elif kind in ("done", "cancelled"):
            self._ended = kind
            if ev.get("checkpoint"):
                s.checkpoint = str(ev["checkpoint"])
                self.checkpointSaved.emit(s.checkpoint)
            s.step = int(ev.get("step", s.step))
            extra = ""
            if kind == "done" and ev.get("macro") is not None:
                extra = f" · held-out macro accuracy {float(ev['macro']):.2f}"
            self.logLine.emit(f"{kind} at step {s.step}: {s.checkpoint}{extra}")
        elif kind == "error":
            s.message = str(ev.get("message", ""))
            self.logLine.emit(f"error: {s.message}")
        self.stateChanged.emit(s)

    # -- end -------------------------------------------------------------------------------------

    def _on_error(self, error: QtCore.QProcess.ProcessError) -> None:
        if error == QtCore.QProcess.FailedToStart:
            self.last_stderr = f"could not start {self.python}: {self._proc.errorString()}"
            self._finish("failed", self.last_stderr)

    def _on_finished(self, code: int, status: QtCore.QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        # Lines without a final newline are still part of the answer.
        if self._out_buf:
            self._handle_stdout(self._out_buf.decode("utf-8", "replace").strip())
            self._out_buf = b""
        if self._err_buf:
            self._handle_stderr(self._err_buf.decode("utf-8", "replace").rstrip())
            self._err_buf = b""
        s = self.state
        if self._ended == "done" and code == 0:
            self._finish("done", f"finished at step {s.step}; checkpoint {s.checkpoint}")
        elif self._ended == "cancelled" or (self._cancel_requested and s.checkpoint):
            self._finish("cancelled", f"cancelled at step {s.step}; checkpoint {s.checkpoint}")
        elif self._cancel_requested:
            self._finish("cancelled", "cancelled before the first checkpoint; nothing saved")
        else:
            how = f"exit code {code}" if status == QtCore.QProcess.NormalExit else "crashed"
            self._finish("failed", self.last_stderr or s.message or f"trainer ended with {how}")

    def _finish(self, phase: str, message: str) -> None:
        if self.state.phase in ("done", "cancelled", "failed"):
            return  # errorOccurred and finished can both report one end
        self.state.phase, self.state.message = phase, message
        self.stateChanged.emit(self.state)
        self.runningChanged.emit(False)
        self.finished.emit(phase, message)
