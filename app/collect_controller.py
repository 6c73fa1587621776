"""CollectController: the Collect tab's behaviour without widgets (QtCore only).

It owns the DeviceSession, the ControlLoop and the RecordingService and runs every call that may
wait (opening devices — the sim process takes seconds —, starting/stopping loops, creating and
finalising episode files, indexing the dataset) on ONE worker thread, so the UI thread never waits on
a device or a file and device operations never interleave.

Nothing crosses threads as a Qt signal emitted off the UI thread: the worker and the control thread
only store values (latest tick) or post callables into a deque, and a ~30 Hz QTimer on the UI
thread drains them and emits the signals. That bounds UI work per frame to one image, whatever the
control rate, and keeps slot calls on the UI thread for any receiver (tests, widgets, lambdas).

E-stop is the one exception to "everything through the worker": it must not queue behind a running
scripted episode, so it latches on the current loop from a short-lived thread immediately.

Flows (the same from the window and from tests):
    connect_devices → set_dataset → start_recording / stop_recording → outcomeRequested
    → resolve_outcome → episodeSaved + episodesChanged
    run_scripted_episode → (expert finishes) → outcomeRequested → resolve_outcome → …

Size (~820 lines): one QObject whose state (session, control loop, recorder, busy job,
E-STOP and fault latches) every method reads; the pieces it drives live in app/session.py,
app/teleop.py, app/recording.py and app/episodes.py.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from app import preload
from app.episodes import EpisodeResult, finish_episode, record_episode, sim_verdict, task_instruction
from app.recording import RecordingService
from app.session import DeviceSession
from app.teleop import ControlLoop, Tick
from recorder.dataset import Dataset, EpisodeInfo
from recorder.messages import one_line
from recorder.recovery import Recovered, dead_partials, discard_partial, recover_file
from recorder.schema import EpisodeError
from robots.base import ArmState, RGBDFrame

log = logging.getLogger(__name__)

POLL_MS = 33  # UI refresh: ~30 Hz, independent of the control rate
FRAME_STALE_S = 1.0  # camera light turns amber when the newest frame is older than this
OUTCOMES = ("success", "failure", "discard")


class HoldSource:
    """TargetSource that keeps the arm where it was when the loop started.

    Used when the input is not a live operator device ("none", or "scripted" between scripted
    episodes): the loop still ticks (state, frames, rate, record button) but commands no motion.
    """

    def __init__(self):
        self._pose: np.ndarray | None = None
        self._grip: float | None = None

    def next_target(self, state: ArmState, frame: RGBDFrame | None, t: float):
        if self._pose is None:
            self._pose = np.asarray(state.ee_pose, dtype=float).copy()
            self._grip = float(state.gripper) if np.isfinite(state.gripper) else 1.0
        return self._pose, self._grip, {}


@dataclass
class OutcomeRequest:
    """What the outcome dialog shows: the episode, why it ended and the sim's verdict (the default)."""

    path: Path | None
    default: str | None  # "success" | "failure" from the sim predicate; None on hardware
    reason: str
    frames: int
    seconds: float
    dropped: int


@dataclass
class LiveStats:
    rate_hz: float  # measured from tick periods
    target_hz: float
    dropped: int  # camera frames never seen + frames the writer refused / ticks without a frame
    lag: int  # frames waiting for the writer thread
    recording: bool
    frames: int
    seconds: float
    overruns: int
    fault: str
    estopped: bool
    awaiting_outcome: bool = False  # the take has stopped; the outcome dialog is open


class CollectController(QObject):
    busyChanged = Signal(bool, str)  # busy, what is going on ("connecting to sim-franka …")
    connectedChanged = Signal(bool)
    errorOccurred = Signal(str)  # one-line cause, for a dialog and the status bar
    message = Signal(str)  # status-bar note
    frameReady = Signal(object)  # RGBDFrame, newest only, at most ~30 Hz
    statsChanged = Signal(object)  # LiveStats
    lightsChanged = Signal(dict)  # {"robot"|"camera"|"input": "off"|"green"|"amber"|"red"}
    recordingChanged = Signal(bool)
    scriptedChanged = Signal(bool)
    outcomeRequested = Signal(object)  # OutcomeRequest; answer with resolve_outcome()
    episodeSaved = Signal(object)  # EpisodeResult
    episodesChanged = Signal(list)  # [EpisodeInfo] of the current dataset
    datasetChanged = Signal(str)
    recoveryNeeded = Signal(list)  # [Path] crashed partial episodes in the dataset folder
    recoveryDone = Signal(list)  # [Recovered]
    estopChanged = Signal(bool)
    faultChanged = Signal(str)  # latched control-loop fault ("" when cleared), e.g. "arm_fault: Reflex"

    def __init__(self, parent: QObject | None = None, *, operator: str = "", max_episode_s: float = 40.0):
        super().__init__(parent)
        self.operator = operator
        self.max_episode_s = float(max_episode_s)
        self.task = "pick_cube"
        self.instruction = ""
        self.next_seed = 0
        self.dataset_folder: Path | None = None
        self.session: DeviceSession | None = None
        self.recorder: RecordingService | None = None
        self.episodes: list[EpisodeInfo] = []

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collect-worker")
        self._posted: deque[Callable[[], None]] = deque()
        self._busy = ""
        self._loop: ControlLoop | None = None
        self._latest: Tick | None = None
        self._shown_frame: tuple[float, int] | None = None
        self._last_frame_at = 0.0
        self._events: deque[str] = deque(maxlen=32)
        self._estopped = False
        self._fault = ""
        self._recording = False
        self._scripted = False
        self._pending: EpisodeResult | None = None
        self._cancel = threading.Event()
        self._closed = False

        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()

    # ================================================================== state for views / tests
    @property
    def connected(self) -> bool:
        return self.session is not None

    @property
    def busy(self) -> str:
        return self._busy

    @property
    def recording(self) -> bool:
        return self._recording

    @property
    def scripted_running(self) -> bool:
        return self._scripted

    @property
    def estopped(self) -> bool:
        return self._estopped

    @property
    def fault(self) -> str:
        """The latched fault the device bar shows ("" when none); cleared by Recover."""
        return self._fault

    @property
    def loop(self) -> ControlLoop | None:
        return self._loop

    @property
    def is_sim(self) -> bool:
        return self.session is not None and self.session.lab is not None

    def input_kind(self) -> str:
        return self.session.input_uri.kind if self.session is not None else ""

    # ================================================================== worker plumbing
    def _post(self, fn: Callable[[], None]) -> None:
        self._posted.append(fn)  # deque.append is thread-safe; drained on the UI thread

    def _submit(self, what: str, work: Callable[[], object], done: Callable[[object], None] | None = None,
                *, busy: bool = True) -> bool:
        """Run ``work`` on the worker; ``done(result)`` and errors come back on the UI thread."""
        if self._closed:
            return False
        if busy:
            if self._busy:
                self.errorOccurred.emit(f"cannot {what}: still {self._busy}")
                return False
            self._busy = what
            self.busyChanged.emit(True, what)

        def run():
            try:
                result = work()
            except Exception as exc:  # every failure reaches the operator as one line
                log.warning("%s failed", what, exc_info=True)
                msg = f"{what} failed: {one_line(exc, first_line=True)}"
                self._post(lambda: self._finish_busy(busy) or self.errorOccurred.emit(msg))
                return
            self._post(lambda: self._finish_busy(busy) or (done(result) if done else None))

        self._pool.submit(run)
        return True

    def _finish_busy(self, busy: bool) -> None:
        if busy:
            self._busy = ""
            self.busyChanged.emit(False, "")

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until queued worker jobs ran (tests, shutdown); does not drain posted results."""
        fut = self._pool.submit(lambda: None)
        try:
            fut.result(timeout=timeout)
            return True
        except Exception:
            return False

    # ================================================================== devices
    def connect_devices(self, robot: str, camera: str, input: str, rate_hz: float = 20.0, *,
                        lab=None) -> bool:
        """``lab``: the bench's TCP offset + workspace (robots.lab_config.LabConfig), defaults if None."""
        if self.session is not None:
            self.errorOccurred.emit("already connected; disconnect first")
            return False
        task, seed = self.task, self.next_seed

        def work():
            session = DeviceSession(robot, camera, input, rate_hz, task=task, seed=seed, lab=lab)
            session.open()
            # Heavy imports the tabs need (torch, vispy) finish before the loop runs: done later on
            # the UI thread they hold the GIL long enough to stall the loop (app/preload.py).
            preload.wait()
            try:
                recorder = self._make_recorder(session)
                self._start_teleop_loop(session, recorder)
            except BaseException:
                session.close()
                raise
            return session, recorder

        def done(result):
            self.session, self.recorder = result
            self.connectedChanged.emit(True)
            self.message.emit(f"connected: robot {robot}, camera {camera}, input {input} at {rate_hz:g} Hz")
            for w in self.session.warnings:
                self.message.emit(w)

        return self._submit(f"connecting to {robot}", work, done)

    def disconnect_devices(self) -> bool:
        if self.session is None:
            return False
        self._cancel.set()
        session, recorder = self.session, self.recorder

        def work():
            self._stop_loop()
            if recorder is not None and recorder.recording:
                # Never lose a take: keep it, marked unknown, with the reason in the notes.
                recorder.stop("unknown", "devices disconnected while recording")
            session.close()

        def done(_):
            self.session = self.recorder = None
            self._latest = None
            if self._fault:
                self._fault = ""
                self.faultChanged.emit("")
            self._set_recording(False)
            self._pending = None
            self.connectedChanged.emit(False)
            self.message.emit("disconnected")
            self._refresh_dataset()

        return self._submit("disconnecting", work, done)

    def _make_recorder(self, session: DeviceSession) -> RecordingService:
        out = self.dataset_folder or Path.cwd()
        rec = RecordingService(out, robot=str(session.robot_uri), camera=session.camera,
                               operator=self.operator)
        rec.on_record_button.append(lambda: self._post(self.toggle_recording))
        rec.on_camera_lost.append(lambda: self._post(self._on_camera_lost))
        return rec

    def _on_camera_lost(self) -> None:
        """The camera dropped out mid-take: end the take (its notes say where) and ask the outcome."""
        self.message.emit("camera lost during the take (unplugged?): the take is stopped")
        if self._recording and not self._scripted:
            self.stop_recording(reason="camera lost (unplugged?)")
        # A scripted episode ends itself (record_episode watches recorder.camera_lost).

    def _teleop_source(self, session: DeviceSession):
        if session.input is None or session.input_uri.kind == "scripted":
            return HoldSource()  # the scripted operator only acts inside a scripted episode
        return session.input

    def _start_teleop_loop(self, session: DeviceSession, recorder: RecordingService) -> None:
        """Worker thread: a fresh loop (its target restarts from the measured pose)."""
        loop = session.control_loop(source=self._teleop_source(session))
        loop.add_listener(recorder)
        loop.add_listener(self._on_tick)
        loop.start()
        if self._estopped:
            loop.estop()
        self._loop = loop

    def _stop_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop()

    def _on_tick(self, tick: Tick) -> None:
        """Control thread: keep the newest tick only (no per-tick signal with arrays queued up)."""
        self._latest = tick
        if tick.events:
            self._events.extend(tick.events)

    # ================================================================== keyboard input
    def key_event(self, key: str, down: bool) -> bool:
        """Forward a key to a keyboard teleop input; True when the key belongs to it."""
        dev = self.session.input if self.session is not None else None
        if dev is None or self.input_kind() != "keyboard":
            return False
        return dev.press(key) if down else dev.release(key)

    def release_keys(self) -> None:
        dev = self.session.input if self.session is not None else None
        if dev is not None and self.input_kind() == "keyboard":
            dev.release_all()

    # ================================================================== e-stop
    def estop(self) -> None:
        """Latch the e-stop now (UI thread); the arm stop runs off the UI thread."""
        self._estopped = True
        self._cancel.set()
        loop, session = self._loop, self.session

        def stop():
            try:
                if loop is not None:
                    loop.estop()
                elif session is not None and session.arm is not None:
                    # No loop (a Home or Recover runs on the worker): stop the controller itself.
                    arm = session.arm
                    (getattr(arm, "estop", None) or arm.stop)()
            except Exception as exc:
                msg = one_line(exc, first_line=True)
                self._post(lambda: self.errorOccurred.emit(f"e-stop: stopping the arm failed: {msg}"))

        threading.Thread(target=stop, name="estop", daemon=True).start()
        self.estopChanged.emit(True)
        self.message.emit("E-STOP: arm stopped; reset the e-stop to move again")

    def reset_estop(self) -> bool:
        if not self._estopped:
            return False

        def work():
            if self._loop is not None:
                self._loop.reset_estop()

        def done(_):
            self._estopped = False
            self._cancel.clear()
            self.estopChanged.emit(False)
            self.message.emit("e-stop reset")

        return self._submit("resetting the e-stop", work, done, busy=False)

    # ================================================================== faults: recover, home
    def _check_can_move(self, what: str, *, while_recording: bool = False) -> bool:
        problem = ""
        if self.session is None or self.session.arm is None:
            problem = "no robot connected"
        elif self._estopped:
            problem = "the e-stop is latched; reset it first"
        elif not while_recording and (self._recording or self._pending is not None):
            problem = "an episode is being recorded; stop it first"
        if problem:
            self.errorOccurred.emit(f"cannot {what}: {problem}")
        return not problem

    def recover(self) -> bool:
        """Clear a controller fault (reflex, error code, controller e-stop) and the loop's latch.

        Runs on the worker: franky's recovery and xArm's clean_error/motion_enable/set_state take up
        to seconds. The loop keeps ticking (commanding nothing while faulted) and restarts its target
        from the measured pose once the fault is gone."""
        if not self._check_can_move("recover", while_recording=True):
            return False
        session = self.session

        def work():
            loop = self._loop
            if loop is not None and loop.running:
                loop.recover()
            else:
                session.arm.recover()

        def done(_):
            self._fault = ""
            self.faultChanged.emit("")
            self.message.emit("arm recovered: the fault is cleared")

        return self._submit("recovering the arm", work, done)

    def home(self) -> bool:
        """Blocking move to the arm's home configuration, on the worker with the control loop stopped
        (a streaming loop would fight the move); the loop restarts from the home pose."""
        if not self._check_can_move("home the arm"):
            return False
        session, recorder = self.session, self.recorder

        def work():
            self._stop_loop()
            try:
                session.arm.home()
            finally:
                if not self._closed:
                    self._start_teleop_loop(session, recorder)

        return self._submit("homing the arm", work, lambda _: self.message.emit("arm at home"))

    # ================================================================== exclusive use (camera calibration)
    def lend_devices(self, what: str) -> DeviceSession | None:
        """Stop the control loop and mark the controller busy so that only the borrower (the
        calibration dialog) commands the arm; None when not connected, busy, recording or e-stopped
        (errorOccurred says why). Give them back with ``return_devices``."""
        if self.session is None or self.session.arm is None:
            self.errorOccurred.emit(f"cannot start {what}: connect the robot and camera first")
            return None
        if self._busy or self.recording or self._estopped:
            why = self._busy or ("recording" if self.recording else "e-stopped")
            self.errorOccurred.emit(f"cannot start {what}: {why}")
            return None
        self._busy = what
        self.busyChanged.emit(True, what)
        self._stop_loop()  # joins the loop thread: after this nothing else servos the arm
        return self.session

    def return_devices(self) -> None:
        """Restart the teleop loop (its target restarts from wherever the arm is now) and clear busy."""
        session, recorder = self.session, self.recorder
        if session is not None and session.arm is not None and recorder is not None and self._loop is None:
            try:
                self._start_teleop_loop(session, recorder)
            except Exception as exc:
                self.errorOccurred.emit(f"restarting the control loop failed: {one_line(exc)}")
        self._finish_busy(True)

    # ================================================================== recording
    def set_task(self, task: str, instruction: str = "") -> None:
        self.task = task.strip() or "pick_cube"
        self.instruction = instruction.strip()

    def _instruction(self) -> str:
        return self.instruction or (task_instruction(self.session) if self.session else "") or self.task

    def _check_can_record(self, what: str) -> bool:
        problem = ""
        if self.session is None:
            problem = "no devices connected"
        elif self.dataset_folder is None:
            problem = "no dataset folder chosen"
        elif self._recording or self._pending is not None:
            problem = "an episode is already being recorded"
        elif self._estopped:
            problem = "the e-stop is latched; reset it first"
        elif self._loop is not None and self._loop.fault:
            problem = f"the arm is faulted ({self._loop.fault}); Recover first"
        if problem:
            self.errorOccurred.emit(f"cannot {what}: {problem}")
        return not problem

    def toggle_recording(self) -> None:
        if self._recording:
            self.stop_recording()
        elif self._pending is None:
            self.start_recording()

    def start_recording(self) -> bool:
        if not self._check_can_record("start recording"):
            return False
        recorder, task, text = self.recorder, self.task, self._instruction()
        fps = self.session.rate_hz

        def work():
            return recorder.start(task, text, fps=fps)

        def done(path):
            self._set_recording(True)
            self.message.emit(f"recording {path.name}")

        return self._submit("starting the recording", work, done)

    def stop_recording(self, reason: str = "stopped by operator") -> bool:
        """Stop the take; the arm holds while the operator picks the outcome (outcomeRequested)."""
        if self._scripted:
            self._cancel.set()  # the scripted run stops itself and asks for the outcome
            return True
        if not self._recording or self.recorder is None:
            return False
        session, recorder = self.session, self.recorder

        def work():
            # The loop stops first so no frames land in the take while the dialog is open.
            self._stop_loop()
            st = recorder.status()
            verdict = sim_verdict(session)
            return EpisodeResult(st.path, "unknown", st.frames, st.dropped, st.seconds, reason), verdict

        return self._submit("stopping the recording", work, self._ask_outcome)

    def run_scripted_episode(self) -> bool:
        """Sim only: reset the task with the next seed and record the scripted expert until done."""
        if not self._check_can_record("run a scripted episode"):
            return False
        if not self.is_sim:
            self.errorOccurred.emit("cannot run a scripted episode: needs the simulated lab (sim-franka or sim-xarm6)")
            return False
        session, recorder = self.session, self.recorder
        task, seed = self.task, self.next_seed
        self.next_seed += 1
        instruction = self.instruction or None  # None: the task's own instruction
        self._cancel.clear()
        if session.input_uri.kind == "scripted":
            source = None  # the session's ScriptedOperator: twists + buttons like a person
        else:
            from robots.sim.expert import ScriptedExpert

            source = ScriptedExpert(session.lab, session.arm, rate_hz=session.rate_hz)

        def set_loop(loop: ControlLoop) -> None:
            self._loop = loop
            if self._estopped:
                loop.estop()

        def work():
            self._stop_loop()
            result = record_episode(session, recorder, task, seed, source=source,
                                    max_seconds=self.max_episode_s, instruction=instruction,
                                    listeners=[self._on_tick], cancel=self._cancel, on_loop=set_loop)
            self._loop = None
            return result, sim_verdict(session)

        def started():
            self._scripted = True
            self.scriptedChanged.emit(True)
            self._set_recording(True)
            self.message.emit(f"scripted episode: {task}, seed {seed}")

        if not self._submit(f"running a scripted episode ({task}, seed {seed})", work, self._ask_outcome):
            return False
        started()
        return True

    def _ask_outcome(self, result_verdict) -> None:
        result, verdict = result_verdict
        self._pending = result
        if self._scripted:
            self._scripted = False
            self.scriptedChanged.emit(False)
        self.outcomeRequested.emit(OutcomeRequest(result.path, verdict, result.reason, result.frames,
                                                  result.seconds, result.dropped))

    def resolve_outcome(self, outcome: str, notes: str = "") -> bool:
        """The operator's answer to outcomeRequested: success | failure | discard (+ notes)."""
        if outcome not in OUTCOMES:
            self.errorOccurred.emit(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
            return False
        result, self._pending = self._pending, None
        if result is None:
            return False
        session, recorder = self.session, self.recorder
        note = notes.strip() or f"ended: {result.reason}"

        def work():
            try:
                finished = finish_episode(recorder, result, outcome, note)
            finally:
                if session is not None and session.arm is not None:
                    self._start_teleop_loop(session, recorder)
            return finished, self._scan_dataset()

        def done(res):
            finished, episodes = res
            self._set_recording(False)
            self._set_episodes(episodes)
            self.episodeSaved.emit(finished)
            name = finished.path.name if finished.path else "episode"
            self.message.emit(f"{name}: {finished.outcome}" if finished.path else "episode discarded")

        return self._submit("saving the episode", work, done)

    def reset_scene(self) -> bool:
        """Sim only: new layout (next seed), arm home."""
        if not self.is_sim or self._recording or self._pending is not None:
            return False
        session, recorder, task, seed = self.session, self.recorder, self.task, self.next_seed
        self.next_seed += 1

        def work():
            self._stop_loop()
            try:
                return session.lab.reset(task, seed)
            finally:
                self._start_teleop_loop(session, recorder)

        return self._submit(f"resetting {task} (seed {seed})", work,
                            lambda info: self.message.emit(f"{task} reset with seed {seed}"))

    def _set_recording(self, on: bool) -> None:
        if on != self._recording:
            self._recording = on
            self.recordingChanged.emit(on)

    # ================================================================== dataset
    def set_dataset(self, folder: str | Path) -> bool:
        if self._recording or self._pending is not None:
            self.errorOccurred.emit("cannot change the dataset while recording")
            return False
        folder = Path(folder).expanduser()

        def work():
            folder.mkdir(parents=True, exist_ok=True)
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder}: not a folder")
            return dead_partials(folder), Dataset(folder, recover=False).episodes

        def done(res):
            partials, episodes = res
            self.dataset_folder = folder
            if self.recorder is not None:
                self.recorder.out_dir = folder
            self.datasetChanged.emit(str(folder))
            self._set_episodes(episodes)
            if partials:
                self.recoveryNeeded.emit(partials)

        return self._submit(f"opening dataset {folder.name}", work, done, busy=False)

    def _scan_dataset(self) -> list[EpisodeInfo]:
        if self.dataset_folder is None:
            return []
        return Dataset(self.dataset_folder, recover=False).episodes

    def _refresh_dataset(self) -> None:
        self._submit("indexing the dataset", self._scan_dataset, self._set_episodes, busy=False)

    def refresh_dataset(self) -> None:
        self._refresh_dataset()

    def _set_episodes(self, episodes: list[EpisodeInfo]) -> None:
        self.episodes = list(episodes)
        self.episodesChanged.emit(self.episodes)

    def recover_partials(self, paths: list[Path]) -> bool:
        def work():
            out = []
            for p in paths:
                try:
                    out.append(recover_file(p))
                except EpisodeError as exc:
                    out.append(Recovered(Path(p), "failed", message=str(exc)))
            return out, self._scan_dataset()

        def done(res):
            recovered, episodes = res
            self._set_episodes(episodes)
            self.recoveryDone.emit(recovered)
            self.message.emit("; ".join(str(r) for r in recovered))

        return self._submit("recovering episodes", work, done)

    def discard_partials(self, paths: list[Path]) -> bool:
        def work():
            for p in paths:
                discard_partial(p)
            return self._scan_dataset()

        return self._submit("discarding partial episodes", work, self._set_episodes)

    # ================================================================== UI-thread poll
    def _poll(self) -> None:
        while self._posted:
            fn = self._posted.popleft()
            try:
                fn()
            except Exception as exc:  # a slot bug must not kill the poll timer
                log.exception("posted callback failed")
                self.errorOccurred.emit(one_line(exc, first_line=True))
        session = self.session
        if session is None:
            return
        if self.input_kind() == "keyboard" and session.input is not None:
            session.input.heartbeat()  # a frozen UI then shows up as stale input (watchdog stops)
        tick, loop = self._latest, self._loop
        frame = tick.frame if tick is not None and loop is not None else None
        if frame is None and session.camera is not None and not self._busy_with_devices():
            frame = session.camera.latest()
        if frame is not None:
            key = (frame.stamp, frame.index)
            if key != self._shown_frame:
                self._shown_frame = key
                self._last_frame_at = time.monotonic()
                self.frameReady.emit(frame)
        self._update_fault()
        while self._events:
            ev = self._events.popleft()
            if ev in ("estop", "reset", "loop_resumed", "input_resumed"):
                continue
            self.message.emit(f"control: {ev}")
        self.statsChanged.emit(self.stats())
        self.lightsChanged.emit(self.lights())

    def _update_fault(self) -> None:
        loop = self._loop
        if self.session is None:
            fault = ""
        elif loop is not None:
            fault = loop.fault
        else:
            fault = self._fault  # no loop right now (a Home, an outcome dialog): keep the last one
        if fault != self._fault:
            self._fault = fault
            self.faultChanged.emit(fault)

    def _busy_with_devices(self) -> bool:
        return self._busy.startswith(("connecting", "disconnecting"))

    def stats(self) -> LiveStats:
        loop = self._loop
        rate = 0.0
        if loop is not None and loop.running and len(loop.periods) > 1:
            recent = list(loop.periods)[-40:]
            mean = float(np.mean(recent))
            rate = 1.0 / mean if mean > 0 else 0.0
        cam_dropped = 0
        if self.session is not None and self.session.camera is not None:
            try:
                cam_dropped = int(self.session.camera.dropped_frames)
            except Exception:
                cam_dropped = 0
        st = self.recorder.status() if self.recorder is not None else None
        return LiveStats(rate_hz=rate, target_hz=self.session.rate_hz if self.session else 0.0,
                         dropped=cam_dropped + (st.dropped if st else 0), lag=st.lag if st else 0,
                         recording=self._recording, frames=st.frames if st else 0,
                         seconds=st.seconds if st else 0.0, overruns=loop.overruns if loop else 0,
                         fault=(loop.fault if loop else ""), estopped=self._estopped,
                         awaiting_outcome=self._pending is not None)

    def lights(self) -> dict:
        s = self.session
        if s is None:
            state = "amber" if self._busy_with_devices() else "off"
            return {"robot": state, "camera": state, "input": state}
        loop, tick = self._loop, self._latest
        if loop is not None and loop.fault:
            robot = "red"
        elif self._estopped or loop is None or (tick is not None and not tick.commanding):
            robot = "amber"
        else:
            robot = "green"
        if s.camera is None:
            camera = "off"
        elif not getattr(s.camera, "connected", True):
            camera = "red"  # unplugged: the frame thread is waiting for it to come back
        else:
            camera = "green" if time.monotonic() - self._last_frame_at < FRAME_STALE_S else "amber"
        if s.input is None:
            inp = "off"
        else:
            try:
                inp = "green" if s.input.connected else "red"
            except Exception:
                inp = "red"
        return {"robot": robot, "camera": camera, "input": inp}

    # ================================================================== shutdown
    def shutdown(self, timeout: float = 15.0) -> None:
        """Close devices (sim process included) before the app exits; keeps any take."""
        if self._closed:
            return
        self._cancel.set()
        session, recorder = self.session, self.recorder

        def close():
            self._stop_loop()
            if recorder is not None and recorder.recording:
                recorder.stop("unknown", "app closed while recording")
            if session is not None:
                session.close()

        fut = self._pool.submit(close)
        self._closed = True
        self._timer.stop()
        try:
            fut.result(timeout=timeout)
        except Exception as exc:
            log.warning("shutdown: %s", one_line(exc, first_line=True))
        self._pool.shutdown(wait=False)
        self.session = self.recorder = self._pending = None
        self._recording = self._scripted = False


def task_catalog() -> dict[str, str]:
    """Sim task name -> its default instruction (task fields offer these; any text is accepted)."""
    try:
        from robots.sim.tasks import TASKS
    except Exception:  # the sim extras may be missing on a hardware-only install
        return {"pick_cube": ""}
    return {name: t.instruction for name, t in TASKS.items()}
