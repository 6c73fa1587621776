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
