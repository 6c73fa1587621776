"""libfranka's connect has no timeout: a controller busy with another client never answers. The
driver gives up after CONNECT_TIMEOUT_S with a message instead of hanging the app (or CI)."""
from __future__ import annotations

import time

import pytest

import robots.franka as franka
from robots.base import DeviceDisconnected
from robots.franka import FrankaArm, open_with_timeout


def test_open_with_timeout_returns_raises_or_gives_up():
    assert open_with_timeout(lambda: 42, 1.0, "x") == 42
    with pytest.raises(ValueError, match="boom"):
        open_with_timeout(lambda: (_ for _ in ()).throw(ValueError("boom")), 1.0, "x")
    t = time.monotonic()
    with pytest.raises(DeviceDisconnected, match="thing: no answer within 0 s"):
        open_with_timeout(lambda: time.sleep(5), 0.3, "thing")
    assert time.monotonic() - t < 2.0


def test_second_client_of_a_busy_franky_sim_fails_with_a_message_not_a_hang(monkeypatch):
    from robots.sim.franky_server import ServerProcess

    monkeypatch.setattr(franka, "CONNECT_TIMEOUT_S", 4.0)
    with ServerProcess(report_hz=2.0) as srv:
        first = FrankaArm(srv.host, rate_hz=20.0)
        first.connect()
        try:
            second = FrankaArm(srv.host, rate_hz=20.0)
            t = time.monotonic()
            with pytest.raises(DeviceDisconnected, match="no answer within 4 s .*another client"):
                second.connect()
            assert time.monotonic() - t < 10.0
            assert first.state().error == ""  # the first client is undisturbed
        finally:
            first.disconnect()
