"""Suite-wide pytest hooks."""
from __future__ import annotations

import os
import sys

import pytest

_status: dict[str, int] = {}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without interpreter teardown once pytest has reported.

    PySide6 6.12 sometimes aborts while Python finalises its objects after a clean run ("Fatal
    Python error: bool_dealloc", exit 134), which would turn a green run red. Everything pytest and
    its plugins write (summary, Xvfb shutdown) has happened by now, so exiting here loses nothing.
    """
    if "code" not in _status or os.environ.get("ACTSTUDIO_FULL_TEARDOWN"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status["code"])


# ------------------------------------------------------------------------------------------------
# Shared fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """One torch CPU thread for the test: two OpenMP threads on the shared 2-core box oversubscribe it
    and run several times slower than one. Modules that train or sample use it for every test
    (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch  # late: most tests never import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def sim_lab():
    """Start simulated labs for one test module: ``lab, arm = sim_lab("xarm6", render_hz=5.0)`` takes
    ``SimLab.start``'s arguments and returns the lab with its arm connected. Every lab started is
    closed when the module ends, newest first."""
    from robots.sim.lab import SimLab

    labs = []

    def start(robot: str = "xarm6", **kwargs):
        lab = SimLab.start(robot, **kwargs)
        labs.append(lab)
        arm = lab.arm()
        arm.connect()
        return lab, arm

    yield start
    for lab in reversed(labs):
        lab.close()


@pytest.fixture(scope="module")
def sim_session():
    """Open ``DeviceSession``s for one test module: ``sim_session("sim-xarm6", "sim", "none", 20.0,
    task="pick_cube", seed=0)`` takes the session's arguments and returns it open. Every session
    opened is closed when the module ends, newest first."""
    from app.session import DeviceSession

    sessions = []

    def open_(robot: str = "sim-xarm6", camera: str = "sim", input: str = "none", rate_hz: float = 20.0, **kwargs):
        session = DeviceSession(robot, camera, input, rate_hz, **kwargs).open()
        sessions.append(session)
        return session

    yield open_
    for session in reversed(sessions):
        session.close()
