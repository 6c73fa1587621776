"""Cartesian servo of the simulated xArm6, run inside the sim process every physics step.

Like xArm's own servo mode, each streamed target starts a short segment from the current reference
pose that lasts about one command period (measured), so a 20 Hz stream becomes continuous motion
instead of a stop-and-go staircase. Damped least squares IK (MuJoCo site Jacobian on a scratch
MjData) turns the reference pose into joint references for the position actuators, with a velocity
feed-forward so the joints do not lag by kv/kp seconds.
"""
from __future__ import annotations

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from robots.sim.world import XARM_GRIPPER_CLOSED, XARM_GRIPPER_JOINT, XARM_INFO

MAX_LINEAR_SPEED = 0.5  # m/s: driver-side ceiling; the app's safety filter enforces the real limit
MAX_ANGULAR_SPEED = 2.0  # rad/s
MOVE_SPEED = 0.15  # m/s for blocking point-to-point moves
MOVE_ANGULAR_SPEED = 0.8
JOINT_MOVE_SPEED = 0.8  # rad/s for homing


# The servo runs every 2 ms in Python, so its hot path uses MuJoCo's quaternion helpers (wxyz,
# microseconds) rather than scipy Rotation objects (~0.1 ms each); poses crossing the API are xyzw.
def _wxyz(xyzw: np.ndarray) -> np.ndarray:
    return np.array([xyzw[3], xyzw[0], xyzw[1], xyzw[2]])


def _xyzw(wxyz: np.ndarray) -> np.ndarray:
    return np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]])


def pose_error(target: np.ndarray, pos: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """6-vector (dx, rotvec) from the current site pose to the target (xyzw), in the base frame."""
    cur = np.empty(4)
    mujoco.mju_mat2Quat(cur, np.ascontiguousarray(mat).reshape(9))
    local = np.empty(3)
    mujoco.mju_subQuat(local, _wxyz(target[3:]), cur)  # target = cur * exp(local)
    return np.concatenate([target[:3] - pos, mat.reshape(3, 3) @ local])


class _Segment:
    """Straight-line pose interpolation from a to b between t0 and t1 (smoothstep when ``smooth``)."""

    def __init__(self, a: np.ndarray, b: np.ndarray, t0: float, t1: float, smooth: bool):
        self.a, self.b, self.t0, self.t1, self.smooth = a, b, t0, max(t1, t0 + 1e-6), smooth
        self._qa = _wxyz(a[3:])
        qb = _wxyz(b[3:])
        if np.dot(self._qa, qb) < 0:
            qb = -qb  # shortest arc
        self._dq = np.empty(3)
        mujoco.mju_subQuat(self._dq, qb, self._qa)

    def at(self, t: float) -> np.ndarray:
        s = float(np.clip((t - self.t0) / (self.t1 - self.t0), 0.0, 1.0))
        if self.smooth:
            s = s * s * (3.0 - 2.0 * s)
        q = self._qa.copy()
        mujoco.mju_quatIntegrate(q, self._dq, s)
        return np.concatenate([self.a[:3] + s * (self.b[:3] - self.a[:3]), _xyzw(q)])

    def done(self, t: float) -> bool:
        return t >= self.t1


def _duration(a: np.ndarray, b: np.ndarray, v: float, w: float) -> float:
    ang = (Rotation.from_quat(b[3:]) * Rotation.from_quat(a[3:]).inv()).magnitude()
    return max(np.linalg.norm(b[:3] - a[:3]) / v, ang / w)


class XArmServo:
    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData):
        self.model, self.data = model, data
        self._scratch = mujoco.MjData(model)
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, XARM_INFO.tcp_site)
        jids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in XARM_INFO.arm_joints]
        self.qadr = np.array([model.jnt_qposadr[j] for j in jids])
        self.dadr = np.array([model.jnt_dofadr[j] for j in jids])
        self.qlo = model.jnt_range[jids, 0] + 1e-3
        self.qhi = model.jnt_range[jids, 1] - 1e-3
        self.acts = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, f"act_{j}") for j in XARM_INFO.arm_joints]
        self.kv_over_kp = np.array([-model.actuator_biasprm[a, 2] / model.actuator_gainprm[a, 0] for a in self.acts])
        self.grip_act = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, "act_gripper")
        gj = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, XARM_GRIPPER_JOINT)
        self.grip_qadr = model.jnt_qposadr[gj]
        self.q_ref = data.qpos[self.qadr].copy()
        self.qd_ref = np.zeros(len(self.qadr))
        self.ref_pose = self.fk(self.q_ref)
        self.segment: _Segment | None = None
        self.joint_goal: tuple[np.ndarray, np.ndarray, float, float] | None = None
        self._last_servo_t: float | None = None
        self._period = 0.05
        self.gripper_opening = 1.0
        self.error = ""

    # ---- kinematics on the scratch data -------------------------------------------------------
    def fk(self, q: np.ndarray) -> np.ndarray:
        s = self._scratch
        s.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, s)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, s.site_xmat[self.site])
        return np.concatenate([s.site_xpos[self.site], _xyzw(quat)])

    def ik(self, target: np.ndarray, q0: np.ndarray, iters: int = 2, damping: float = 0.02) -> np.ndarray:
        s, q = self._scratch, q0.copy()
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        for _ in range(iters):
            s.qpos[self.qadr] = q
            mujoco.mj_kinematics(self.model, s)
            mujoco.mj_comPos(self.model, s)
            err = pose_error(target, s.site_xpos[self.site], s.site_xmat[self.site].reshape(3, 3))
            if np.linalg.norm(err) < 1e-6:
                break
            mujoco.mj_jacSite(self.model, s, jacp, jacr, self.site)
            J = np.vstack([jacp[:, self.dadr], jacr[:, self.dadr]])
            dq = J.T @ np.linalg.solve(J @ J.T + damping**2 * np.eye(6), err)
            q = np.clip(q + dq, self.qlo, self.qhi)
        return q

    def solve_ik(self, target: np.ndarray, q0: np.ndarray) -> np.ndarray:
        """Full IK solve (many iterations), e.g. to find a home configuration."""
        return self.ik(target, q0, iters=300, damping=0.05)

    # ---- commands (sim time t) ------------------------------------------------------------------
    def servo(self, target: np.ndarray, t: float) -> None:
        if self._last_servo_t is not None:
            dt = t - self._last_servo_t
            if 0.0 < dt < 0.3:
                self._period = 0.7 * self._period + 0.3 * dt
        self._last_servo_t = t
        self.joint_goal = None
        start = self.ref_pose
        dur = max(self._period, _duration(start, target, MAX_LINEAR_SPEED, MAX_ANGULAR_SPEED))
        self.segment = _Segment(start, np.asarray(target, float), t, t + dur, smooth=False)

    def move_to(self, target: np.ndarray, t: float) -> float:
        """Start a rest-to-rest move; returns its duration."""
        self.joint_goal = None
        self._last_servo_t = None
        start = self.ref_pose
        # Smoothstep peaks at 1.5x the mean speed.
        dur = max(0.3, 1.5 * _duration(start, target, MOVE_SPEED, MOVE_ANGULAR_SPEED))
        self.segment = _Segment(start, np.asarray(target, float), t, t + dur, smooth=True)
        return dur

    def move_joints(self, q_goal: np.ndarray, t: float) -> float:
        self.segment = None
        self._last_servo_t = None
        dur = max(0.3, 1.5 * float(np.max(np.abs(q_goal - self.q_ref))) / JOINT_MOVE_SPEED)
        self.joint_goal = (self.q_ref.copy(), np.asarray(q_goal, float), t, t + dur)
        return dur

    def hold(self) -> None:
        """Stop where the arm is now."""
        self.segment = None
        self.joint_goal = None
        self._last_servo_t = None
        self.q_ref = self.data.qpos[self.qadr].copy()
        self.qd_ref[:] = 0.0
        self.ref_pose = self.fk(self.q_ref)

    def teleport(self, q: np.ndarray) -> None:
        self.data.qpos[self.qadr] = q
        self.data.qvel[self.dadr] = 0.0
        self.q_ref = np.asarray(q, float).copy()
        self.hold()
        self.q_ref = np.asarray(q, float).copy()
        self.ref_pose = self.fk(self.q_ref)

    @property
    def busy(self) -> bool:
        t = self.data.time
        if self.joint_goal is not None:
            return t < self.joint_goal[3]
        return self.segment is not None and not self.segment.done(t)

    # ---- per physics step ----------------------------------------------------------------------
    def update(self, dt: float) -> None:
        t = self.data.time
        q_prev = self.q_ref
        if self.joint_goal is not None:
            qa, qb, t0, t1 = self.joint_goal
            s = float(np.clip((t - t0) / (t1 - t0), 0.0, 1.0))
            s = s * s * (3.0 - 2.0 * s)
            self.q_ref = qa + s * (qb - qa)
            self.ref_pose = self.fk(self.q_ref)
        elif self.segment is not None:
            self.ref_pose = self.segment.at(t)
            # One DLS iteration per 2 ms step: the reference moves < 1 mm per step, so this converges.
            self.q_ref = self.ik(self.ref_pose, self.q_ref, iters=1)
        self.qd_ref = (self.q_ref - q_prev) / dt
        self.data.ctrl[self.acts] = self.q_ref + self.kv_over_kp * self.qd_ref
        self.data.ctrl[self.grip_act] = XARM_GRIPPER_CLOSED * (1.0 - self.gripper_opening)

    # ---- readings from a live or snapshot state -------------------------------------------------
    def gripper_width(self, qpos: np.ndarray) -> float:
        return float(np.clip(1.0 - qpos[self.grip_qadr] / XARM_GRIPPER_CLOSED, 0.0, 1.0))
