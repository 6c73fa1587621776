"""MJCF scene of the simulated lab: table, three 4 cm cubes, a bin, a push button and RGB-D cameras.

The robot base sits at the world origin on the table top (z = 0), so MuJoCo world coordinates *are*
the robot base frame every pose in the app is expressed in. The same scene elements are added to
franky-sim's FR3 scene (an ElementTree it compiles itself) and to our xArm6 model compiled from
pybullet's URDF.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

CUBE_HALF = 0.02  # 4 cm cubes
CUBE_COLOURS = {"red": "0.85 0.12 0.10 1", "green": "0.15 0.70 0.20 1", "blue": "0.12 0.30 0.85 1"}
CUBES = tuple(f"cube_{c}" for c in CUBE_COLOURS)
BIN_INNER_HALF = 0.07  # 14 cm square opening
BIN_WALL_HEIGHT = 0.06
BIN_WALL_THICK = 0.008
BUTTON_CAP_RADIUS = 0.022
BUTTON_HOUSING_HEIGHT = 0.03
BUTTON_TRAVEL = 0.012
# Pressed = cap pushed down past this fraction of its travel.
BUTTON_PRESS_DEPTH = 0.006

SCENE_CAMERA = "scene_cam"
WRIST_CAMERA = "wrist_cam"
WIDTH, HEIGHT = 640, 480
# D435 colour sensor: 69 x 42 deg -> fx = fy ~ 615 px at 640x480.
SCENE_FOVY_DEG = 42.5
WRIST_FOVY_DEG = 58.0
SCENE_CAM_POS = np.array([1.15, 0.45, 0.62])
SCENE_CAM_TARGET = np.array([0.42, 0.0, 0.02])

# ChArUco plate on the gripper for hand-eye calibration (robots/charuco.py): always in the model,
# drawn only while a calibration runs (geom group BOARD_GROUP is off in every renderer by default,
# so task images, recorded episodes and re-renders never show it). Mount in the hand frame (tool z
# down the fingers): 9 cm in front of the gripper along tool +x, facing +x tilted 30 deg up the tool.
BOARD_GROUP = 5
BOARD_MOUNT_POS = (0.09, 0.0, 0.03)
BOARD_MOUNT_TILT_DEG = 30.0
# Eye-in-hand (wrist camera): the same board lying face up on a stand above the table, clear of
# the cubes wherever a layout puts them; drawn only with its own group.
TABLE_BOARD_GROUP = 4
TABLE_BOARD_POS = (0.45, 0.0, 0.10)
BOARD_GROUPS = {"gripper": BOARD_GROUP, "table": TABLE_BOARD_GROUP}

# Cube friction is what lets a force-limited spring gripper lift the cube (DESIGN.md gripper facts);
# condim 4 adds torsional friction so a cube does not spin out of a two-finger grasp.
CUBE_FRICTION = "1.6 0.02 0.002"


@dataclass(frozen=True)
class RobotModelInfo:
    """Names the sim process needs to find the arm inside a compiled model."""

    robot: str
    arm_joints: tuple[str, ...]
    tcp_site: str  # xArm only: franky reports the FR3's TCP itself
    hand_body: str
    finger_bodies: tuple[str, ...]


def look_at_xyaxes(pos: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` (MuJoCo cameras look along -z)."""
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return " ".join(f"{v:.6f}" for v in (*x, *y))


def _fmt(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in v)


def add_visual_settings(root: ET.Element) -> None:
    """Offscreen buffer for 640x480 and the cheap render path: no shadows, no MSAA (~5x faster)."""
    visual = root.find("visual")
    if visual is None:
        visual = ET.SubElement(root, "visual")
    for old in visual.findall("quality") + visual.findall("global") + visual.findall("map"):
        visual.remove(old)
    ET.SubElement(visual, "quality", shadowsize="0", offsamples="0")
    ET.SubElement(visual, "global", offwidth=str(WIDTH), offheight=str(HEIGHT))
    # Tight clip planes keep the reversed-z depth buffer precise at table distances.
    ET.SubElement(visual, "map", znear="0.01", zfar="4")
    for light in root.iter("light"):
        light.set("castshadow", "false")


def add_scene(worldbody: ET.Element, asset: ET.Element) -> None:
    """Table, cubes, bin, button and the fixed third-person camera, appended to ``worldbody``."""
    ET.SubElement(asset, "texture", name="table_tex", type="2d", builtin="flat", rgb1="0.62 0.50 0.36",
                  width="64", height="64")
    ET.SubElement(asset, "material", name="table_mat", texture="table_tex", rgba="1 1 1 1")

    table = ET.SubElement(worldbody, "body", name="table", pos="0.35 0 0")
    ET.SubElement(table, "geom", name="table_top", type="box", size="0.6 0.75 0.02", pos="0 0 -0.02",
                  material="table_mat", friction="1 0.01 0.001")
    for i, (x, y) in enumerate([(-0.55, -0.7), (-0.55, 0.7), (0.55, -0.7), (0.55, 0.7)]):
        ET.SubElement(table, "geom", name=f"table_leg{i}", type="box", size="0.03 0.03 0.36",
                      pos=f"{x} {y} -0.4", rgba="0.3 0.3 0.3 1", contype="0", conaffinity="0")

    for i, (name, rgba) in enumerate(zip(CUBES, CUBE_COLOURS.values())):
        body = ET.SubElement(worldbody, "body", name=name, pos=f"0.45 {-0.1 + 0.1 * i} {CUBE_HALF}")
        ET.SubElement(body, "freejoint", name=f"{name}_joint")
        ET.SubElement(body, "geom", name=f"{name}_geom", type="box", size=_fmt([CUBE_HALF] * 3),
                      rgba=rgba, mass="0.05", friction=CUBE_FRICTION, condim="4",
                      solref="0.004 1", priority="1")

    # The bin and the button housing are mocap bodies: a reset moves them without joints or physics.
    bin_body = ET.SubElement(worldbody, "body", name="bin", mocap="true", pos="0.45 0.3 0")
    inner, wall, h = BIN_INNER_HALF, BIN_WALL_THICK, BIN_WALL_HEIGHT
    bin_rgba = "0.35 0.35 0.38 1"
    ET.SubElement(bin_body, "geom", name="bin_floor", type="box", size=_fmt([inner + wall, inner + wall, 0.003]),
                  pos="0 0 0.003", rgba=bin_rgba)
    for i, (px, py, sx, sy) in enumerate([
        (inner + wall / 2, 0, wall / 2, inner + wall), (-inner - wall / 2, 0, wall / 2, inner + wall),
        (0, inner + wall / 2, inner + wall, wall / 2), (0, -inner - wall / 2, inner + wall, wall / 2),
    ]):
        ET.SubElement(bin_body, "geom", name=f"bin_wall{i}", type="box", size=_fmt([sx, sy, h / 2]),
                      pos=_fmt([px, py, h / 2]), rgba=bin_rgba)

    button = ET.SubElement(worldbody, "body", name="button", mocap="true", pos="0.45 -0.3 0")
    hh = BUTTON_HOUSING_HEIGHT / 2
    ET.SubElement(button, "geom", name="button_housing", type="box", size=_fmt([0.035, 0.035, hh]),
                  pos=_fmt([0, 0, hh]), rgba="0.15 0.15 0.15 1")
    cap = ET.SubElement(button, "body", name="button_cap", pos=_fmt([0, 0, BUTTON_HOUSING_HEIGHT]))
    # A preloaded spring holds the cap up; ~6 N pushes it through its travel.
    ET.SubElement(cap, "joint", name="button_joint", type="slide", axis="0 0 1",
                  range=f"{-BUTTON_TRAVEL} 0", limited="true", stiffness="300", springref="0.012",
                  damping="3", solreflimit="0.004 1")
    ET.SubElement(cap, "geom", name="button_cap_geom", type="cylinder",
                  size=f"{BUTTON_CAP_RADIUS} 0.008", pos="0 0 0.008", rgba="0.9 0.75 0.1 1", mass="0.02")

    ET.SubElement(worldbody, "camera", name=SCENE_CAMERA, mode="fixed", pos=_fmt(SCENE_CAM_POS),
                  xyaxes=look_at_xyaxes(SCENE_CAM_POS, SCENE_CAM_TARGET), fovy=str(SCENE_FOVY_DEG))


def add_wrist_camera(hand: ET.Element, pos: str) -> None:
    """Camera on the hand looking along the tool z axis (MuJoCo camera -z = hand +z)."""
    ET.SubElement(hand, "camera", name=WRIST_CAMERA, mode="fixed", pos=pos, xyaxes="0 -1 0 -1 0 0",
                  fovy=str(WRIST_FOVY_DEG))


def add_calibration_board(hand: ET.Element, asset: ET.Element) -> None:
    """The calibration board plate (a thin textured box, visual only) on the hand body."""
    from robots.charuco import BoardSpec, board_texture_png

    png, (w, h) = board_texture_png(BoardSpec())
    ET.SubElement(asset, "texture", name="calib_board_tex", type="2d", file=str(png))
    ET.SubElement(asset, "material", name="calib_board_mat", texture="calib_board_tex", texrepeat="1 1",
                  texuniform="false", specular="0", shininess="0")
    tilt = np.radians(BOARD_MOUNT_TILT_DEG)
    normal = np.array([np.cos(tilt), 0.0, -np.sin(tilt)])
    x = np.array([0.0, -1.0, 0.0])  # board image rows run across the gripper
    y = np.cross(normal, x)
    # The box's +z face carries the texture unmirrored (checked by tests/test_calibration_sim.py detecting it).
    ET.SubElement(hand, "geom", name="calib_board", type="box", size=f"{w / 2:.5f} {h / 2:.5f} 0.002",
                  pos=_fmt(BOARD_MOUNT_POS), xyaxes=_fmt([*x, *y]), material="calib_board_mat",
                  contype="0", conaffinity="0", group=str(BOARD_GROUP), mass="0")


def add_table_board(worldbody: ET.Element) -> None:
    """The eye-in-hand board: a static visual-only plate (needs add_calibration_board's texture)."""
    from robots.charuco import BoardSpec, board_texture_png

    _, (w, h) = board_texture_png(BoardSpec())
    body = ET.SubElement(worldbody, "body", name="calib_table_board", pos=_fmt(TABLE_BOARD_POS))
    ET.SubElement(body, "geom", name="calib_table_board", type="box", size=f"{w / 2:.5f} {h / 2:.5f} 0.002",
                  material="calib_board_mat", contype="0", conaffinity="0", group=str(TABLE_BOARD_GROUP), mass="0")


def _find_body(root: ET.Element, name: str) -> ET.Element:
    for b in root.iter("body"):
        if b.get("name") == name:
            return b
    raise KeyError(f"body {name!r} not in scene")


# ---------------------------------------------------------------------------------------------
# Franka: franky-sim builds the scene; we decorate its ElementTree before srv.init().
# ---------------------------------------------------------------------------------------------

FRANKA_INFO = RobotModelInfo(
    robot="franka",
    arm_joints=tuple(f"robot0_fr3_joint{i}" for i in range(1, 8)),
    tcp_site="",
    hand_body="robot0_hand",
    finger_bodies=("robot0_left_finger", "robot0_right_finger"),
)


def decorate_franka_scene(sim) -> None:
    """Add the lab to a franky-sim MujocoSimulator scene (before ``SimulationServer.init()``)."""
    root = sim.scene
    # franky-sim's ground plane sits at z = 0, where our table top is; drop it to the floor.
    for g in list(sim.worldbody.findall("geom")):
        if g.get("name") == "ground":
            g.set("pos", "0 0 -0.76")
    asset = root.find("asset")
    add_visual_settings(root)
    add_scene(sim.worldbody, asset)
    add_wrist_camera(_find_body(root, FRANKA_INFO.hand_body), pos="0.06 0 0.02")
    add_calibration_board(_find_body(root, FRANKA_INFO.hand_body), asset)
    add_table_board(sim.worldbody)


def build_franka_model() -> mujoco.MjModel:
    """The sim-franka lab's MuJoCo model without a franky-sim server (offline re-rendering).

    The same scene franky-sim compiles in ``MujocoSimulator._start`` (its XML, our decoration), so the
    qpos/mocap layout matches what a sim-franka episode recorded in /extras/sim_qpos.
    """
    from franky_sim.mujoco_simulator import MujocoSimulator

    sim = MujocoSimulator()
    sim.init()
    sim.add_robot()
    decorate_franka_scene(sim)
    return mujoco.MjModel.from_xml_string(ET.tostring(sim.scene, encoding="unicode"))


# ---------------------------------------------------------------------------------------------
# xArm6: pybullet's URDF -> MjSpec with position actuators, then the same scene.
# ---------------------------------------------------------------------------------------------

XARM_INFO = RobotModelInfo(
    robot="xarm6",
    arm_joints=tuple(f"joint{i}" for i in range(1, 7)),
    tcp_site="tcp",
    hand_body="xarm_gripper_base_link",
    finger_bodies=("left_finger", "right_finger", "left_inner_knuckle", "right_inner_knuckle"),
)
XARM_GRIPPER_JOINT = "drive_joint"
XARM_GRIPPER_CLOSED = 0.85  # drive_joint range: 0 open … 0.85 closed
# Fingertip centre below the gripper base (xArm gripper TCP offset, metres).
XARM_TCP_OFFSET = 0.172
XARM_ARM_KP = (1500.0, 1500.0, 1200.0, 600.0, 600.0, 400.0)


def _xarm_urdf_text() -> str:
    import pybullet_data

    root = Path(pybullet_data.getDataPath()) / "xarm"
    text = (root / "xarm6_with_gripper.urdf").read_text()
    text = re.sub(r"package://", str(root) + "/", text)
    # MuJoCo keeps the directory part of mesh paths only with strippath="false"; balanceinertia fixes
    # the URDF's physically invalid link inertias.
    return text.replace(
        "<robot name=\"xarm6_with_gripper\">",
        "<robot name=\"xarm6_with_gripper\"><mujoco><compiler strippath=\"false\" balanceinertia=\"true\""
        " discardvisual=\"false\" fusestatic=\"false\"/></mujoco>",
        1,
    )


def xarm_spec() -> mujoco.MjSpec:
    """The xArm6 + gripper with position actuators, gravity compensation and a TCP site."""
    spec = mujoco.MjSpec.from_string(_xarm_urdf_text())
    spec.option.timestep = 0.002
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    for body in spec.bodies:
        if body.name not in ("world", ""):
            body.gravcomp = 1.0  # the servo then only has to track, like xArm's own gravity model
    # The URDF's convex hulls of neighbouring links and of the gripper linkage overlap; robot geoms
    # therefore only collide with the scene (contype 2 never meets conaffinity 2), never each other.
    for g in spec.geoms:
        g.contype, g.conaffinity = 2, 1
    for j in spec.joints:
        j.armature = 0.05
        j.damping[0] = 0.5 if j.name.startswith("joint") else 0.05
    for name, kp in zip(XARM_INFO.arm_joints, XARM_ARM_KP):
        act = spec.add_actuator(name=f"act_{name}", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gainprm[0] = kp
        act.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        act.biasprm[:3] = [0.0, -kp, -2.0 * np.sqrt(kp * 0.3)]
        act.forcelimited = True
        act.forcerange = [-60.0, 60.0]
    grip = spec.add_actuator(name="act_gripper", target=XARM_GRIPPER_JOINT, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    grip.gainprm[0] = 20.0
    grip.biastype = mujoco.mjtBias.mjBIAS_AFFINE
    grip.biasprm[:3] = [0.0, -20.0, -1.0]
    # Force-limited like the real gripper, so a closed command squeezes a cube instead of crushing it.
    grip.forcelimited = True
    grip.forcerange = [-4.0, 4.0]
    gbase = spec.body(XARM_INFO.hand_body)
    gbase.add_site(name=XARM_INFO.tcp_site, pos=[0, 0, XARM_TCP_OFFSET], size=[0.004, 0, 0],
                   rgba=[1, 0, 0, 0.0])
    return spec


def build_xarm_model() -> mujoco.MjModel:
    spec = xarm_spec()
    spec.compile()
    root = ET.fromstring(spec.to_xml())
    worldbody = root.find("worldbody")
    asset = root.find("asset")
    if asset is None:
        asset = ET.SubElement(root, "asset")
    ET.SubElement(worldbody, "light", name="key_light", pos="1 -1 2.5", dir="-0.4 0.4 -1", directional="true",
                  diffuse="0.6 0.58 0.5", specular="0.1 0.1 0.1")
    ET.SubElement(worldbody, "light", name="fill_light", pos="-1 1 2", dir="0.5 -0.4 -1", directional="true",
                  diffuse="0.4 0.4 0.42", specular="0 0 0")
    ET.SubElement(worldbody, "geom", name="floor", type="plane", size="4 4 0.1", pos="0 0 -0.76",
                  rgba="0.35 0.42 0.5 1")
    add_visual_settings(root)
    vis = root.find("visual")
    ET.SubElement(vis, "headlight", diffuse="0.3 0.3 0.3", ambient="0.25 0.25 0.25", specular="0 0 0")
    add_scene(worldbody, asset)
    add_wrist_camera(_find_body(root, XARM_INFO.hand_body), pos="0.07 0 0.03")
    add_calibration_board(_find_body(root, XARM_INFO.hand_body), asset)
    add_table_board(worldbody)
    return mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))
