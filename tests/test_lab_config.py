"""Per-lab TCP offset + workspace: parsing with one-line errors, checks against the reach box,
persistence in the app settings, and what a DeviceSession does with them (no devices needed)."""
from __future__ import annotations

import numpy as np
import pytest

from app.lab_settings import load_lab_config, save_lab_config
from app.settings import Settings
from robots.base import DeviceError
from robots.lab_config import DEFAULT_TCP_OFFSET, LabConfig, outside_message, parse_tcp_offset, parse_workspace
from robots.safety import default_limits


def test_defaults_are_the_grippers_tcp_and_the_safety_box():
    for fam in ("franka", "xarm6"):
        cfg = LabConfig.default(f"sim-{fam}")
        assert cfg.robot == fam and cfg.workspace == default_limits(fam).workspace
    assert LabConfig.default("franka:172.16.0.2").tcp_offset == (0.0, 0.0, 0.1034)


def test_sim_xarm_model_tcp_matches_the_default():
    from robots.sim.world import XARM_TCP_OFFSET

    assert DEFAULT_TCP_OFFSET["xarm6"] == (0.0, 0.0, XARM_TCP_OFFSET)


@pytest.mark.parametrize("text,match", [
    ("0,0", "3 finite numbers"), ("a,b,c", "3 numbers"), ("0,0,nan", "finite"), ("0,0,0.9", "at most"),
])
def test_bad_tcp_offset_is_one_line(text, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_tcp_offset(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text,match", [
    ("0.3,0,0.1,0.2,0.1,0.5", "below its upper corner"),
    ("0.3,-0.2,-0.01,0.6,0.2,0.5", "below the table"),
    ("0.3,-0.2,0.01,1.2,0.2,0.5", "reach box"),
    ("0.3,-0.2,0.01,0.6", "6 finite numbers"),
])
def test_bad_workspace_is_refused_never_widened(text, match):
    with pytest.raises(ValueError, match=match):
        parse_workspace(text, "franka")


def test_workspace_and_tcp_persist_per_robot_family(tmp_path):
    s = Settings(tmp_path / "s.ini")
    cfg = LabConfig.from_values("franka", "0,0,0.11", "0.3,-0.3,0.01,0.7,0.3,0.5")
    save_lab_config(cfg, s)
    back = load_lab_config("franka:172.16.0.2", Settings(tmp_path / "s.ini"))
    assert back == cfg
    assert load_lab_config("xarm6", s) == LabConfig.default("xarm6")  # the other family untouched
    # Command-line overrides win for one run; a broken stored value falls back to the default.
    assert load_lab_config("franka", s, tcp_offset="0,0,0.12").tcp_offset == (0.0, 0.0, 0.12)
    s.set("lab/xarm6/workspace", [0.0, 0.0, 0.0, 9.0, 9.0, 9.0])
    assert load_lab_config("xarm6", s).workspace == default_limits("xarm6").workspace


def test_outside_message_names_pose_and_box():
    ws = parse_workspace("0.3,-0.2,0.01,0.6,0.2,0.4", "xarm6")
    assert outside_message([0.4, 0.0, 0.2], ws, "x") == ""
    assert outside_message([0.4, 0.0, 0.405], ws, "x") == ""  # within the 1 cm servo tolerance
    msg = outside_message([0.4, 0.0, 0.5], ws, "robot xarm6:1.2.3.4")
    assert "outside the lab workspace" in msg and "0.5" in msg and "Home" in msg


def test_session_refuses_lab_settings_of_another_robot():
    from app.session import DeviceSession

    with pytest.raises(DeviceError, match="lab settings are for xarm6"):
        DeviceSession("franka:10.0.0.2", "none", "none", lab=LabConfig.default("xarm6"))


def test_robot_settings_cli_shows_and_saves(tmp_path, capsys):
    from app.cli import main

    ini = str(tmp_path / "lab.ini")
    assert main(["robot", "settings", "--robot", "xarm6", "--tcp-offset", "0,0,0.18",
                 "--workspace", "0.2,-0.3,0.01,0.6,0.3,0.5", "--save", "--lab-settings", ini]) == 0
    assert "--tcp-offset 0,0,0.18" in capsys.readouterr().out
    assert load_lab_config("xarm6", Settings(ini)).tcp_offset == (0.0, 0.0, 0.18)
    assert main(["robot", "settings", "--robot", "xarm6", "--workspace", "0,0,0,1", "--lab-settings", ini]) == 2
    assert "workspace must be 6" in capsys.readouterr().err
    np.testing.assert_allclose(load_lab_config("xarm6", Settings(ini)).workspace.hi, (0.6, 0.3, 0.5))
