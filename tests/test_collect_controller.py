"""CollectController flows (no widgets) and the Settings wrapper they persist through."""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray

from app.settings import Settings


def test_settings_round_trip_typed(tmp_path):
    ini = tmp_path / "s.ini"
    s = Settings(ini)
    assert s.get("devices/robot") == "sim-franka"  # registered default
    s.set("devices/robot", "sim-xarm6")
    s.set("view/point_size", 3.5)
    s.set("view/show_depth", False)
    s.set("collect/next_seed", 7)
    s.set("dataset/folder", tmp_path / "data")
    s.set("recent", ["a", "b"])
    s.set("window/geometry", QByteArray(b"\x01\x02"))
    s.sync()
    t = Settings(ini)  # a fresh instance reads the ini file back, where everything is text
    assert t.get("devices/robot") == "sim-xarm6"
    assert t.get("view/point_size") == 3.5
    assert t.get("view/show_depth") is False
    assert t.get("collect/next_seed") == 7
    assert t.get("dataset/folder", Path()) == tmp_path / "data"
    assert t.get("recent", []) == ["a", "b"]
    assert bytes(t.get("window/geometry")) == b"\x01\x02"


def test_settings_bad_value_falls_back_to_default(tmp_path):
    ini = tmp_path / "s.ini"
    ini.write_text("[view]\npoint_size=huge\nshow_depth=maybe\n")
    s = Settings(ini)
    assert s.get("view/point_size") == 2.0
    assert s.get("view/show_depth") is True
    assert s.get("view/point_size", 5.0) == 5.0
