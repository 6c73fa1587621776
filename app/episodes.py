"""Run recorded episodes on a DeviceSession: reset → control loop → record → outcome.

Used by the GUI's Collect tab (app/collect_controller.py), `main.py record` (any input device, the
scripted operator included) and `main.py sim-demos` (the scripted expert as a target source). Each
episode gets a fresh ControlLoop: a sim reset homes the arm through its own client, which must not
race the loop's servo stream.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from app.recording import RecordingService
from app.session import DeviceSession
from app.teleop import ControlLoop


@dataclass
class EpisodeResult:
    path: Path | None
    outcome: str  # success | failure | unknown | discarded
    frames: int
    dropped: int
    seconds: float
    reason: str = ""  # why it ended: "expert finished", "timeout", "record button", fault text


def task_instruction(session: DeviceSession) -> str:
    info = getattr(session.lab, "task_info", None) or {}
    return str(info.get("instruction", ""))


FRESH_FRAME_TIMEOUT = 10.0  # s; the sim renders at a few Hz (or slower) on a loaded 2-core box


def _wait_fresh_frame(session: DeviceSession, after: float, timeout: float = FRESH_FRAME_TIMEOUT) -> bool:
    """Wait until the camera has a frame captured after ``after`` (the reset). Without this an
    episode's first frames showed the previous episode's scene (seen: 3-53 frames, a cube still in
    the gripper at the old spot), which poisoned training clouds and keypoint targets."""
    cam = session.camera
    if cam is None:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = cam.latest()
        if f is not None and f.stamp > after:
            return True
        time.sleep(0.02)
    return False


def record_episode(session: DeviceSession, recorder: RecordingService, task: str, seed: int, *,
                   source=None, max_seconds: float = 30.0, instruction: str | None = None,
                   listeners: Sequence[Callable] = (), cancel: threading.Event | None = None,
                   on_loop: Callable[[ControlLoop], None] | None = None, reset: bool = True) -> EpisodeResult:
    """Reset, run the control loop and record until the episode ends; the episode stays open.

    The episode ends when a scripted source says it is done (plus a short settle), when the operator
    presses the record button, when ``cancel`` is set (GUI stop / e-stop), on a latched fault (e-stop,
    device lost), when the camera drops out or after ``max_seconds``. The loop is stopped (arm halted) on return; the caller
    decides the outcome and calls :func:`finish_episode`. ``listeners`` (e.g. the GUI's live view) are
    added to the episode's loop, ``on_loop`` receives the loop as soon as it runs (for an e-stop).
    ``reset=False`` records from the scene as it is (an expert taking over a failed trial, app.corrections).
    """
    if session.lab is not None and reset:
        session.lab.reset(task, seed)
        # Frames are stamped when the renderer snapshots the sim state, so a stamp after the reset's
        # return shows the new layout.
        _wait_fresh_frame(session, time.monotonic())
    src = source if source is not None else session.input
    for hook in ("reset",):  # a scripted source re-plans from the arm's pose after a reset
        if hasattr(src, hook):
            getattr(src, hook)()
    if hasattr(src, "open") and hasattr(src, "close") and src is session.input:
        src.close()
        src.open()
    loop: ControlLoop = session.control_loop(source=src)
    pressed = []

    def on_button() -> None:
        pressed.append(time.monotonic())

    recorder.on_record_button.append(on_button)
    loop.add_listener(recorder)
    for fn in listeners:
        loop.add_listener(fn)
    text = instruction if instruction is not None else task_instruction(session)
    reason = "timeout"
    loop.start()
    try:
        if on_loop is not None:
            on_loop(loop)
        recorder.start(task, text, fps=loop.rate_hz)
        expert = getattr(src, "expert", src)  # ScriptedOperator wraps a ScriptedExpert
        t_end = time.monotonic() + max_seconds
        while time.monotonic() < t_end:
            time.sleep(0.05)
            now = time.monotonic() - loop.t0
            if hasattr(expert, "done") and expert.done(now - 0.5):  # 0.5 s settle after the plan
                reason = "expert finished"
                break
            if pressed:
                reason = "record button"
                break
            if cancel is not None and cancel.is_set():
                reason = "stopped by operator"
                break
            if recorder.camera_lost:
                reason = "camera lost (unplugged?)"
                break
            if loop.fault or loop.estopped:
                reason = loop.fault or "estop"
                break
    finally:
        loop.stop()
        if on_button in recorder.on_record_button:  # leave other owners' callbacks (the GUI's) alone
            recorder.on_record_button.remove(on_button)
    status = recorder.status()
    return EpisodeResult(status.path, "unknown", status.frames, status.dropped, status.seconds, reason)


def sim_verdict(session: DeviceSession) -> str | None:
    """"success"/"failure" from the sim task's predicate, None without a simulated lab."""
    if session.lab is None:
        return None
    return "success" if session.lab.success() else "failure"


def finish_episode(recorder: RecordingService, result: EpisodeResult, outcome: str,
                   notes: str = "") -> EpisodeResult:
    """Finalise (success | failure | unknown) or delete ("discard") the open episode."""
    if outcome == "discard":
        recorder.discard()
        result.outcome, result.path = "discarded", None
        return result
    result.path = recorder.stop(outcome, notes)
    result.outcome = outcome
    return result


def run_episode(session: DeviceSession, recorder: RecordingService, task: str, seed: int, *,
                source=None, max_seconds: float = 30.0, instruction: str | None = None,
                decide_outcome: Callable[[EpisodeResult], tuple[str, str]] | None = None) -> EpisodeResult:
    """Record one episode (see :func:`record_episode`). ``source`` defaults to the session's input.

    Outcome: the sim task's predicate when there is a lab, else ``decide_outcome`` (e.g. ask the
    operator), else "unknown".
    """
    result = record_episode(session, recorder, task, seed, source=source, max_seconds=max_seconds,
                            instruction=instruction)
    verdict = sim_verdict(session)
    if verdict is not None:
        outcome, notes = verdict, f"ended: {result.reason}"
    elif decide_outcome is not None:
        outcome, notes = decide_outcome(result)
    else:
        outcome, notes = "unknown", f"ended: {result.reason}"
    return finish_episode(recorder, result, outcome, notes)
