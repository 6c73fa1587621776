"""Headless one-pass RGB + metric depth rendering of a MuJoCo camera, with OpenCV-convention geometry."""
from __future__ import annotations

import math

import mujoco
import numpy as np

# MuJoCo cameras look along -z with y up; OpenCV cameras look along +z with y down.
_MJ_TO_CV = np.diag([1.0, -1.0, -1.0])


def intrinsics(model: mujoco.MjModel, cam_id: int, width: int, height: int) -> np.ndarray:
    """Pinhole K of a MuJoCo camera. Pixel centres are integer coordinates (OpenCV), hence (W-1)/2."""
    fovy = math.radians(float(model.cam_fovy[cam_id]))
    f = 0.5 * height / math.tan(0.5 * fovy)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def camera_pose(data: mujoco.MjData, cam_id: int) -> np.ndarray:
    """T_base_camera (4x4, OpenCV axes); the world frame is the robot base frame in this lab."""
    T = np.eye(4)
    T[:3, :3] = data.cam_xmat[cam_id].reshape(3, 3) @ _MJ_TO_CV
    T[:3, 3] = data.cam_xpos[cam_id]
    return T


class RGBDRenderer:
    """Renders one camera of ``model`` into (rgb uint8, depth float64 metres z-depth).

    Must be created and used on a single thread (the GL context is current on it).
    """

    def __init__(self, model: mujoco.MjModel, camera: str, width: int, height: int):
        from mujoco.gl_context import GLContext

        self.model = model
        self.width, self.height = width, height
        self.cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self.cam_id < 0:
            raise ValueError(f"camera {camera!r} not in the model")
        self._gl = GLContext(width, height)
        self._gl.make_current()
        self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._ctx)
        self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=2000)
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = self.cam_id
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), np.uint8)
        self._zbuf = np.empty((height, width), np.float32)
        extent = model.stat.extent
        near = np.float32(model.vis.map.znear * extent)
        far = np.float32(model.vis.map.zfar * extent)
        # Same linearisation as mujoco.Renderer (reversed-z projection), computed once.
        c = -(far + near) / (far - near)
        d = -(np.float32(2) * far * near) / (far - near)
        self._c = np.float32(np.float32(-0.5) * c - np.float32(0.5))
        self._d = np.float32(np.float32(-0.5) * d)
        self._tmp = np.empty((height, width), np.float32)
        self.K = intrinsics(model, self.cam_id, width, height)

    def show_group(self, group: int, visible: bool) -> None:
        """Draw geom group ``group`` or not (the calibration board lives in its own group)."""
        self._opt.geomgroup[group] = 1 if visible else 0

    def render_raw(self, data: mujoco.MjData) -> np.ndarray:
        """Render and read back; returns T_base_camera. Buffers stay bottom-up (OpenGL order)."""
        self._gl.make_current()
        mujoco.mjv_updateScene(self.model, data, self._opt, None, self._cam,
                               mujoco.mjtCatBit.mjCAT_ALL.value, self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._ctx)
        mujoco.mjr_readPixels(self._rgb, self._zbuf, self._rect, self._ctx)
        return camera_pose(data, self.cam_id)

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb (H,W,3) uint8, depth (H,W) float32 metres z-depth, T_base_camera)."""
        T = self.render_raw(data)
        depth = self._d / (self._zbuf[::-1] + self._c)
        return self._rgb[::-1].copy(), depth, T

    def render_u16(self, data: mujoco.MjData, depth_scale: float = 0.001) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like render() but depth as uint16 units of ``depth_scale``, computed in place (the hot path)."""
        T = self.render_raw(data)
        tmp = self._tmp
        # float32 suffices: the z-buffer itself is float32 and the result is rounded to 1 mm.
        np.add(self._zbuf, self._c, out=tmp)
        np.divide(self._d / np.float32(depth_scale), tmp, out=tmp)
        np.clip(tmp, 0.0, 65535.0, out=tmp)
        tmp += 0.5
        return self._rgb[::-1], tmp[::-1].astype(np.uint16), T

    def close(self) -> None:
        try:
            self._gl.make_current()
            self._ctx.free()
            self._gl.free()
        except Exception:
            pass


def depth_to_u16(depth_m: np.ndarray, depth_scale: float = 0.001) -> np.ndarray:
    """Metres -> uint16 units; beyond the sensor range (~65 m) saturates, invalid reads 0."""
    d = np.nan_to_num(depth_m / depth_scale, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(d), 0, 65535).astype(np.uint16)
