"""Typed device configs behind the URI strings: one registered dataclass per arm, camera and input.

A URI (``xarm6:192.168.1.208``, ``realsense:123456``, ``keyboard``) is ``<kind>[:<argument>]``. Each kind
is a frozen dataclass registered on its category's base class, as LeRobot registers its robot configs
(``RobotConfig.register_subclass``):

    @ArmConfig.register_subclass("xarm6")
    @dataclass(frozen=True)
    class XArm6Config(ArmConfig):
        host: str
        ...

``ArmConfig.parse("xarm6:192.168.1.208")`` returns ``XArm6Config(host="192.168.1.208")``; an unknown
kind, a missing argument or an argument a kind does not take is a ``UriError`` with one line that says
what is accepted. ``config.make(...)`` builds the device (drivers are imported only then, so parsing
needs no vendor SDK), and ``ArmConfig.usage()`` — the ``--robot`` help, the device bar's tooltip — is
generated from the registry, so a new device is one class here and appears everywhere.

A config also answers what the rest of the app asks of a device string: ``kind``, ``arg``, ``str()``
(the URI again), ``is_sim`` and, for arms, ``family`` (``franka`` | ``xarm6``, the key of the lab
settings and the default limits).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from robots.base import Arm, Camera, TeleopDevice
    from robots.sim.lab import SimLab

__all__ = ["UriError", "DeviceConfig", "ArmConfig", "CameraConfig", "InputConfig"]


class UriError(ValueError):
    """A device string that names no known device; the message says what is accepted."""


@dataclass(frozen=True)
class DeviceConfig:
    """Base of the typed configs. Class attributes describe the kind; instance fields hold its argument."""

    category: ClassVar[str] = "device"  # the word in messages and help: robot | camera | input
    kind: ClassVar[str] = ""  # set by register_subclass
    _registry: ClassVar[dict[str, type["DeviceConfig"]]] = {}
    # The URI argument: the name of the one dataclass field it fills (None = the kind takes none),
    # how help writes it, whether it may be left out, and an example for the "needs an argument" line.
    arg_field: ClassVar[str | None] = None
    arg_label: ClassVar[str] = ""
    arg_optional: ClassVar[bool] = False
    arg_example: ClassVar[str] = ""

    # ---------------------------------------------------------------- registry
    @classmethod
    def register_subclass(cls, kind: str) -> Callable[[type], type]:
        """Class decorator: register a config under ``kind`` on this category's registry."""

        def register(sub: type) -> type:
            if kind in cls._registry:
                raise ValueError(f"{cls.category} kind {kind!r} is already registered")
            if sub.arg_field is not None and sub.arg_field not in {f.name for f in fields(sub)}:
                raise TypeError(f"{sub.__name__}: arg_field {sub.arg_field!r} is not one of its fields")
            sub.kind = kind
            cls._registry[kind] = sub
            return sub

        return register

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        """Registered kinds of this category, in registration order."""
        return tuple(cls._registry)

    @classmethod
    def usage(cls, only: Callable[[type["DeviceConfig"]], bool] | None = None) -> str:
        """``sim-franka | sim-xarm6 | franka:<ip> | xarm6:<ip>``: how each kind is written (help text)."""
        return " | ".join(sub.written() for sub in cls._registry.values() if only is None or only(sub))

    @classmethod
    def written(cls) -> str:
        """How this kind is written: ``sim``, ``franka:<ip>``, ``realsense[:SERIAL]``."""
        if cls.arg_field is None:
            return cls.kind
        return f"{cls.kind}[:{cls.arg_label}]" if cls.arg_optional else f"{cls.kind}:{cls.arg_label}"

    @classmethod
    def examples(cls) -> list[str]:
        """One filled-in URI per kind (``franka:172.16.0.2``, ``realsense``): the device bar's choices."""
        return [sub.example() for sub in cls._registry.values()]

    @classmethod
    def example(cls) -> str:
        return f"{cls.kind}:{cls.arg_example}" if cls.arg_field is not None and not cls.arg_optional else cls.kind

    # ---------------------------------------------------------------- parsing
    @classmethod
    def parse(cls, text: str) -> "DeviceConfig":
        """The config a URI names (on a category base: ``ArmConfig.parse``); UriError with one line."""
        text = (text or "").strip()
        kind, _, arg = text.partition(":")
        sub = cls._registry.get(kind)
        if sub is None:
            raise UriError(f"unknown {cls.category} {text!r}; expected one of: {', '.join(cls.kinds())}")
        return sub.from_arg(arg)

    @classmethod
    def from_arg(cls, arg: str) -> "DeviceConfig":
        """This kind's config from the URI argument ('' when absent), checked."""
        if cls.arg_field is None:
            if arg:
                raise UriError(f"{cls.category} {cls.kind!r} takes no argument (got {arg!r})")
            return cls()
        if not arg and not cls.arg_optional:
            raise UriError(f"{cls.category} {cls.kind!r} needs an argument, e.g. {cls.kind}:{cls.arg_example}")
        return cls(**{cls.arg_field: arg})

    # ---------------------------------------------------------------- what callers read
    @property
    def arg(self) -> str:
        return "" if self.arg_field is None else str(getattr(self, self.arg_field))

    @property
    def is_sim(self) -> bool:
        """Lives in the simulated lab (needs a SimLab to be built)."""
        return self.kind.startswith("sim")

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


# ================================================================================================ arms
@dataclass(frozen=True)
class ArmConfig(DeviceConfig):
    category: ClassVar[str] = "robot"
    _registry: ClassVar[dict[str, type[DeviceConfig]]] = {}
    family: ClassVar[str] = ""  # franka | xarm6: lab settings and default limits are per family

    def make(self, lab: "SimLab | None" = None) -> "Arm":
        raise NotImplementedError  # pragma: no cover - every registered arm implements it


@dataclass(frozen=True)
class _SimArmConfig(ArmConfig):
    def make(self, lab: "SimLab | None" = None) -> "Arm":
        if lab is None:
            raise UriError(f"robot {str(self)!r} needs the simulated lab; start it with robots.sim.lab.SimLab")
        if lab.robot != self.family:
            raise UriError(f"the running simulated lab hosts {lab.robot!r}, not {self.kind!r}")
        return lab.arm()


@ArmConfig.register_subclass("sim-franka")
@dataclass(frozen=True)
class SimFrankaConfig(_SimArmConfig):
    """The FR3 served by franky-sim in the simulated lab, driven through the real franky client."""

    family: ClassVar[str] = "franka"


@ArmConfig.register_subclass("sim-xarm6")
@dataclass(frozen=True)
class SimXArm6Config(_SimArmConfig):
    """The xArm6 model of the simulated lab, behind the Arm protocol over RPC."""

    family: ClassVar[str] = "xarm6"


@ArmConfig.register_subclass("franka")
@dataclass(frozen=True)
class FrankaConfig(ArmConfig):
    """A Franka FR3 + Hand at ``host`` (franky / libfranka)."""

    host: str
    family: ClassVar[str] = "franka"
    arg_field: ClassVar[str | None] = "host"
    arg_label: ClassVar[str] = "<ip>"
    arg_example: ClassVar[str] = "172.16.0.2"

    def make(self, lab: "SimLab | None" = None) -> "Arm":
        from robots.franka import FrankaArm

        return FrankaArm(self.host)


@ArmConfig.register_subclass("xarm6")
@dataclass(frozen=True)
class XArm6Config(ArmConfig):
    """A UFactory xArm6 + xArm Gripper at ``host`` (xArm Python SDK)."""

    host: str
    family: ClassVar[str] = "xarm6"
    arg_field: ClassVar[str | None] = "host"
    arg_label: ClassVar[str] = "<ip>"
    arg_example: ClassVar[str] = "192.168.1.208"

    def make(self, lab: "SimLab | None" = None) -> "Arm":
        from robots.xarm6 import XArm6

        return XArm6(self.host)


# ================================================================================================ cameras
@dataclass(frozen=True)
class CameraConfig(DeviceConfig):
    category: ClassVar[str] = "camera"
    _registry: ClassVar[dict[str, type[DeviceConfig]]] = {}

    def make(self, lab: "SimLab | None" = None) -> "Camera | None":
        raise NotImplementedError  # pragma: no cover


@dataclass(frozen=True)
class _SimCameraConfig(CameraConfig):
    wrist: ClassVar[bool] = False

    def make(self, lab: "SimLab | None" = None) -> "Camera | None":
        if lab is None:
            raise UriError(f"camera {str(self)!r} needs the simulated lab")
        return lab.camera(wrist=self.wrist)


@CameraConfig.register_subclass("sim")
@dataclass(frozen=True)
class SimCameraConfig(_SimCameraConfig):
    """The simulated lab's third-person RGB-D camera (D435-like, 640×480)."""


@CameraConfig.register_subclass("sim-wrist")
@dataclass(frozen=True)
class SimWristCameraConfig(_SimCameraConfig):
    """The simulated lab's wrist camera."""

    wrist: ClassVar[bool] = True


@CameraConfig.register_subclass("realsense")
@dataclass(frozen=True)
class RealSenseConfig(CameraConfig):
    """A live RealSense; ``serial`` picks one when several are plugged in ('' = the first)."""

    serial: str = ""
    arg_field: ClassVar[str | None] = "serial"
    arg_label: ClassVar[str] = "SERIAL"
    arg_optional: ClassVar[bool] = True

    def make(self, lab: "SimLab | None" = None) -> "Camera | None":
        from robots.realsense import RealSenseCamera

        return RealSenseCamera(serial=self.serial or None)


@CameraConfig.register_subclass("bag")
@dataclass(frozen=True)
class BagConfig(CameraConfig):
    """A RealSense recording played back: ROS1 ``.bag`` (older SDKs) or rosbag2 ``.db3``."""

    path: str
    arg_field: ClassVar[str | None] = "path"
    arg_label: ClassVar[str] = "PATH"
    arg_example: ClassVar[str] = "recording.bag"

    def make(self, lab: "SimLab | None" = None) -> "Camera | None":
        from robots.realsense import RealSenseCamera

        return RealSenseCamera(playback=self.path)


@CameraConfig.register_subclass("none")
@dataclass(frozen=True)
class NoCameraConfig(CameraConfig):
    """No camera: episodes without images."""

    def make(self, lab: "SimLab | None" = None) -> "Camera | None":
        return None


# ================================================================================================ inputs
@dataclass(frozen=True)
class InputConfig(DeviceConfig):
    category: ClassVar[str] = "input"
    _registry: ClassVar[dict[str, type[DeviceConfig]]] = {}

    def make(self, arm: "Arm | None" = None, lab: "SimLab | None" = None) -> "TeleopDevice | None":
        raise NotImplementedError  # pragma: no cover


@InputConfig.register_subclass("spacemouse")
@dataclass(frozen=True)
class SpaceMouseConfig(InputConfig):
    """A 3Dconnexion SpaceMouse (pyspacemouse over hidapi), mapped for the arm's family."""

    def make(self, arm: "Arm | None" = None, lab: "SimLab | None" = None) -> "TeleopDevice | None":
        from robots.spacemouse import SpaceMouse

        name = getattr(arm, "name", "") or ""
        return SpaceMouse(robot="xarm6" if "xarm" in name else "franka")


@InputConfig.register_subclass("keyboard")
@dataclass(frozen=True)
class KeyboardConfig(InputConfig):
    """Keyboard teleop, fed key names by the GUI or a terminal."""

    def make(self, arm: "Arm | None" = None, lab: "SimLab | None" = None) -> "TeleopDevice | None":
        from robots.keyboard import KeyboardTeleop

        return KeyboardTeleop()


@InputConfig.register_subclass("scripted")
@dataclass(frozen=True)
class ScriptedConfig(InputConfig):
    """The sim task's expert acting as an operator (twists + buttons), for demos and tests."""

    def make(self, arm: "Arm | None" = None, lab: "SimLab | None" = None) -> "TeleopDevice | None":
        if lab is None or arm is None:
            raise UriError("input 'scripted' needs the simulated lab and its arm")
        from robots.sim.expert import ScriptedOperator

        return ScriptedOperator(lab, arm)


@InputConfig.register_subclass("none")
@dataclass(frozen=True)
class NoInputConfig(InputConfig):
    """No operator input (rollouts, scripted episodes)."""

    def make(self, arm: "Arm | None" = None, lab: "SimLab | None" = None) -> "TeleopDevice | None":
        return None
