"""URI parsing for devices: the one factory used by CLI, GUI and tests."""
import pytest

from robots.factory import UriError, make_arm, parse_arm, parse_camera, parse_input, sim_robot_of


@pytest.mark.parametrize(
    "text,kind,arg",
    [("sim-franka", "sim-franka", ""), ("franka:172.16.0.2", "franka", "172.16.0.2"),
     ("sim-xarm6", "sim-xarm6", ""), ("xarm6:192.168.1.208", "xarm6", "192.168.1.208")],
)
def test_arm_uris(text, kind, arg):
    uri = parse_arm(text)
    assert (uri.kind, uri.arg) == (kind, arg)
    assert str(uri) == text


@pytest.mark.parametrize("text", ["", "ur5", "franka", "xarm6:", "sim-franka:1.2.3.4"])
def test_bad_arm_uris_say_what_is_accepted(text):
    with pytest.raises(UriError) as err:
        parse_arm(text)
    assert "\n" not in str(err.value)
    assert "robot" in str(err.value)


def test_camera_and_input_uris():
    assert parse_camera("realsense").arg == ""
    assert parse_camera("realsense:123456").arg == "123456"
    assert parse_camera("bag:/tmp/x.bag").arg == "/tmp/x.bag"
    with pytest.raises(UriError):
        parse_camera("bag")
    assert parse_input("spacemouse").kind == "spacemouse"
    with pytest.raises(UriError):
        parse_input("joystick")


def test_sim_robot_of():
    assert sim_robot_of("sim-franka") == "franka"
    assert sim_robot_of("sim-xarm6") == "xarm6"
    assert sim_robot_of("franka:10.0.0.2") is None


def test_sim_arm_without_lab_is_a_clear_error():
    with pytest.raises(UriError, match="simulated lab"):
        make_arm("sim-franka", lab=None)


def test_cli_builds_every_command():
    """Every command module registers once (a duplicate would break `python main.py` for everyone)."""
    from app.cli import COMMAND_MODULES, build_parser

    assert len(COMMAND_MODULES) == len(set(COMMAND_MODULES))
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    for name in ("gui", "demo", "info", "record", "sim-demos", "annotate-propose", "export", "train",
                 "train-encoder", "rollout"):
        assert name in sub.choices, name


def test_drivers_share_the_gripper_and_context_manager_bases():
    """One open/close and one ``with arm:`` for every driver (issue 15: shared driver code)."""
    from robots.base import ArmBase, GripperBase
    from robots.franka import FrankaArm, FrankaGripper
    from robots.sim.xarm_arm import SimXArm6, SimXArm6Gripper
    from robots.xarm6 import XArm6, XArmGripper

    for cls in (FrankaGripper, XArmGripper, SimXArm6Gripper):
        assert issubclass(cls, GripperBase) and "open" not in vars(cls) and "close" not in vars(cls)
    for cls in (FrankaArm, XArm6, SimXArm6):
        assert issubclass(cls, ArmBase) and "__enter__" not in vars(cls)

    sent = []

    class Recording(GripperBase):
        def command(self, opening: float) -> None:
            sent.append(opening)

    g = Recording()
    g.open()
    g.close()
    assert sent == [1.0, 0.0]
