"""Run recorded episodes on a DeviceSession: reset → control loop → record → outcome.

Used by `main.py record` (any input device, the scripted operator included) and `main.py sim-demos`
(the scripted expert as a target source). Each episode gets a fresh ControlLoop: a sim reset homes the
arm through its own client, which must not race the loop's servo stream.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def run_episode(session: DeviceSession, recorder: RecordingService, task: str, seed: int, *,
                source=None, max_seconds: float = 30.0, instruction: str | None = None,
                decide_outcome: Callable[[EpisodeResult], tuple[str, str]] | None = None) -> EpisodeResult:
    """Record one episode. ``source`` defaults to the session's input device.

    The episode ends when a scripted source says it is done (plus a short settle), when the operator
    presses the record button, on a latched fault (e-stop, device lost) or after ``max_seconds``.
    Outcome: the sim task's predicate when there is a lab, else ``decide_outcome`` (e.g. ask the
    operator), else "unknown".
    """
    if session.lab is not None:
        session.lab.reset(task, seed)
    src = source if source is not None else session.input
    for hook in ("reset",):  # a scripted source re-plans from the arm's pose after a reset
        if hasattr(src, hook):
            getattr(src, hook)()
    if hasattr(src, "open") and hasattr(src, "close") and src is session.input:
        src.close()
        src.open()
    loop: ControlLoop = session.control_loop(source=src)
    pressed = []
    recorder.on_record_button.append(lambda: pressed.append(time.monotonic()))
    loop.add_listener(recorder)
    text = instruction if instruction is not None else task_instruction(session)
    reason = "timeout"
    loop.start()
    try:
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
            if loop.fault:
                reason = loop.fault
                break
    finally:
        loop.stop()
        recorder.on_record_button.clear()
    status = recorder.status()
    result = EpisodeResult(status.path, "unknown", status.frames, status.dropped, status.seconds, reason)
    if session.lab is not None:
        outcome, notes = ("success" if session.lab.success() else "failure"), f"ended: {reason}"
    elif decide_outcome is not None:
        outcome, notes = decide_outcome(result)
    else:
        outcome, notes = "unknown", f"ended: {reason}"
    if outcome == "discard":
        recorder.discard()
        result.outcome, result.path = "discarded", None
        return result
    result.path = recorder.stop(outcome, notes)
    result.outcome = outcome
    return result
