"""Typed device configs behind the URI strings (robots/device_config.py) and the one add_device_args."""
import argparse
from dataclasses import FrozenInstanceError, dataclass
from typing import ClassVar

import pytest

from robots.device_config import (
    ArmConfig,
    BagConfig,
    CameraConfig,
    FrankaConfig,
    InputConfig,
    KeyboardConfig,
    RealSenseConfig,
    SimXArm6Config,
    UriError,
    XArm6Config,
)
from robots.factory import parse_arm, parse_camera, parse_input


def test_uris_parse_into_typed_configs_and_back():
    assert parse_arm("xarm6:192.168.1.208") == XArm6Config(host="192.168.1.208")
    assert parse_arm("franka:172.16.0.2").host == "172.16.0.2"
    assert parse_arm(" sim-xarm6 ") == SimXArm6Config()
    assert parse_camera("realsense") == RealSenseConfig(serial="")
    assert parse_camera("realsense:123456") == RealSenseConfig(serial="123456")
    assert parse_camera("bag:/tmp/x.db3") == BagConfig(path="/tmp/x.db3")
    assert parse_input("keyboard") == KeyboardConfig()
    for text in ("sim-franka", "franka:172.16.0.2", "xarm6:192.168.1.208", "sim", "sim-wrist", "realsense:42",
                 "bag:/tmp/x.bag", "none"):
        cfg = parse_arm(text) if "franka" in text or "xarm" in text else parse_camera(text)
        assert str(cfg) == text
    with pytest.raises(FrozenInstanceError):
        parse_arm("franka:10.0.0.2").host = "10.0.0.3"


def test_arm_family_and_sim_flag():
    assert [(parse_arm(t).family, parse_arm(t).is_sim) for t in
            ("sim-franka", "sim-xarm6", "franka:10.0.0.2", "xarm6:10.0.0.3")] == \
        [("franka", True), ("xarm6", True), ("franka", False), ("xarm6", False)]


@pytest.mark.parametrize("text,message", [
    ("ur5", "unknown robot 'ur5'; expected one of: sim-franka, sim-xarm6, franka, xarm6"),
    ("franka", "robot 'franka' needs an argument, e.g. franka:172.16.0.2"),
    ("xarm6:", "robot 'xarm6' needs an argument, e.g. xarm6:192.168.1.208"),
    ("sim-franka:1.2.3.4", "robot 'sim-franka' takes no argument (got '1.2.3.4')"),
])
def test_bad_arm_uris_keep_their_one_line_messages(text, message):
    with pytest.raises(UriError) as err:
        parse_arm(text)
    assert str(err.value) == message


@pytest.mark.parametrize("parse,text", [(parse_camera, "bag"), (parse_camera, "none:x"), (parse_input, "joystick"),
                                        (parse_input, "keyboard:x"), (parse_input, "none:1")])
def test_bad_camera_and_input_uris(parse, text):
    with pytest.raises(UriError) as err:
        parse(text)
    assert "\n" not in str(err.value)


def test_help_is_generated_from_the_registry():
    assert ArmConfig.usage() == "sim-franka | sim-xarm6 | franka:<ip> | xarm6:<ip>"
    assert CameraConfig.usage() == "sim | sim-wrist | realsense[:SERIAL] | bag:PATH | none"
    assert InputConfig.usage() == "spacemouse | keyboard | scripted | none"
    assert ArmConfig.examples() == ["sim-franka", "sim-xarm6", "franka:172.16.0.2", "xarm6:192.168.1.208"]


def test_a_registered_kind_appears_in_parsing_and_help():
    @ArmConfig.register_subclass("test-arm")
    @dataclass(frozen=True)
    class TestArmConfig(ArmConfig):
        port: str
        family: ClassVar[str] = "franka"
        arg_field: ClassVar[str | None] = "port"
        arg_label: ClassVar[str] = "PORT"
        arg_example: ClassVar[str] = "/dev/ttyUSB0"

    try:
        assert parse_arm("test-arm:/dev/ttyUSB1") == TestArmConfig(port="/dev/ttyUSB1")
        assert ArmConfig.usage().endswith("| test-arm:PORT")
        with pytest.raises(UriError, match="needs an argument, e.g. test-arm:/dev/ttyUSB0"):
            parse_arm("test-arm")
        with pytest.raises(ValueError, match="already registered"):
            ArmConfig.register_subclass("test-arm")(TestArmConfig)
        assert "test-arm" not in CameraConfig.kinds()  # registries are per category
    finally:
        del ArmConfig._registry["test-arm"]  # noqa: SLF001


def _parser(command: str) -> argparse.ArgumentParser:
    from app.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")  # noqa: SLF001
    return sub.choices[command]


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)  # noqa: SLF001


def test_every_command_declares_devices_through_add_device_args():
    for command in ("gui", "demo", "record", "rollout", "robot"):
        robot = _option(_parser(command), "--robot")
        assert robot.help.startswith(ArmConfig.usage()), command
    assert _option(_parser("sim-demos"), "--robot").help.startswith("sim-franka | sim-xarm6 (")
    assert _option(_parser("sim-demos"), "--camera").help.startswith("sim | sim-wrist | none (")
    gui = _parser("gui").parse_args([])
    assert (gui.robot, gui.camera, gui.input, gui.rate) == (None, None, None, None)  # remembered devices
    rollout = _parser("rollout").parse_args(["--out", "x"])
    assert (rollout.robot, rollout.camera, rollout.rate) == ("sim-xarm6", "sim", 20.0)
    assert not hasattr(rollout, "input")
    record = _parser("record").parse_args(["--out", "x", "--rate", "50"])
    assert (record.robot, record.input, record.rate) == ("sim-franka", "scripted", 50.0)
    assert _option(_parser("robot"), "--robot").required
