"""Re-render a simulated episode's camera images from its recorded simulator state, one per tick.

The live sim camera renders on a low-priority thread, and on a loaded 2-core box it delivers a few
frames per second: a 20 Hz recording then repeats one image for many ticks (a 16-frame clip could show a
single still image). Sim episodes recorded since this module exist carry the whole MuJoCo state of every
tick (``/extras/sim_qpos``, ``sim_mocap_pos``, ``sim_mocap_quat``, written by app/recording.py from
``ArmState.sim_state``), so the exact view of each tick can be rebuilt offline with the same model and
camera, and every frame is fresh and in step with the recorded proprio.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import mujoco
import numpy as np

from recorder.episode import EpisodeReader
from recorder.video import DEFAULT_CRF, write_video

STATE_KEYS = ("sim_qpos", "sim_mocap_pos", "sim_mocap_quat")
K_TOL = 1e-6  # intrinsics must match the recorded ones: same model, same camera


class RerenderError(ValueError):
    """An episode that cannot be re-rendered (one-line message naming the file and the cause)."""


@dataclass
class RerenderResult:
    path: Path
    frames: int
    distinct_before: int  # distinct camera images the recording held (-1 unknown)
    seconds: float


def _model_for(robot: str, name: str) -> mujoco.MjModel:
    if "xarm6" in robot:
        from robots.sim.world import build_xarm_model

        return build_xarm_model()
    if "franka" in robot:
        from robots.sim.world import build_franka_model

        return build_franka_model()
    raise RerenderError(f"{name}: robot {robot!r} is not a simulated arm; only sim-franka and sim-xarm6 "
                        "episodes re-render")


def _camera_name(model_attr: str) -> str:
    """The MuJoCo camera behind an episode's /camera model attribute ("sim:scene_cam" → "scene_cam")."""
    return model_attr.split(":", 1)[1] if model_attr.startswith("sim:") else model_attr


def rerender_episode(src: str | os.PathLike, dst: str | os.PathLike | None = None) -> RerenderResult:
    """Rewrite /obs/rgb and /obs/depth of ``src`` (into a copy at ``dst`` when given) from its sim state.

    ``/extras/frame_index`` becomes the tick index (every tick now has its own image) and
    ``/extras/frame_index_live`` keeps the live camera's counter. Raises RerenderError on episodes without
    the state, from another robot, or whose camera no longer matches the model.
    """
    import time

    from robots.sim.render import RGBDRenderer

    src = Path(src)
    t0 = time.perf_counter()
    with EpisodeReader(src) as r:
        missing = [k for k in STATE_KEYS if k not in r.extras]
        if missing:
            raise RerenderError(f"{src.name}: no /extras/{missing[0]} (recorded before the sim state was kept, "
                                "or not a sim episode)")
        if r.camera is None:
            raise RerenderError(f"{src.name}: recorded without a camera; nothing to re-render")
        qpos, mpos, mquat = (np.asarray(r.extras[k], dtype=np.float64) for k in STATE_KEYS)
        cam = r.camera
        robot = str(r.meta.get("robot", ""))
        fi = r.extras.get("frame_index")
        distinct = int(len(np.unique(fi))) if fi is not None else -1
        n = len(r.time)
    model = _model_for(robot, src.name)
    cam_model = ""
    with h5py.File(src, "r") as f:
        cam_model = str(f["camera"].attrs.get("model", ""))
    cam_name = _camera_name(cam_model)
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam_name) < 0:
        raise RerenderError(f"{src.name}: camera {cam_model!r} is not a camera of the sim model")
    if qpos.shape != (n, model.nq) or mpos.shape != (n, 3 * model.nmocap) or mquat.shape != (n, 4 * model.nmocap):
        raise RerenderError(f"{src.name}: sim state of shape {qpos.shape}/{mpos.shape} does not fit the model "
                            f"(nq {model.nq}, nmocap {model.nmocap}); recorded with another world version?")
    bad = ~np.isfinite(qpos).all(1)
    if bad.any():
        raise RerenderError(f"{src.name}: tick {int(np.flatnonzero(bad)[0])} has no sim state")
    renderer = RGBDRenderer(model, cam_name, cam.width, cam.height)
    try:
        if np.abs(renderer.K - cam.K).max() > K_TOL:
            raise RerenderError(f"{src.name}: the model's {cam_name} intrinsics differ from the recorded K")
        out = Path(dst) if dst is not None else src
        tmp = out.with_name(out.name + ".rerender.tmp")
        shutil.copyfile(src, tmp)
        try:
            data = mujoco.MjData(model)
            with h5py.File(tmp, "r+") as f:
                depth_ds = f["obs/depth"]
                scale = float(depth_ds.attrs.get("depth_scale", cam.depth_scale))

                def frames():
                    for i in range(n):
                        data.qpos[:] = qpos[i]
                        data.mocap_pos[:] = mpos[i].reshape(-1, 3)
                        data.mocap_quat[:] = mquat[i].reshape(-1, 4)
                        mujoco.mj_kinematics(model, data)
                        mujoco.mj_camlight(model, data)
                        rgb, depth, T = renderer.render_u16(data, scale)
                        if i == 0 and np.abs(T - cam.T_base_camera).max() > 1e-6:
                            raise RerenderError(f"{src.name}: the model's {cam_name} pose differs from the recorded "
                                                "T_base_camera")
                        depth_ds[i] = depth
                        yield rgb

                if isinstance(f["obs/rgb"], h5py.Group):  # schema v2: a new H.264 stream, same settings
                    old = f["obs/rgb"]
                    settings = dict(codec=str(old.attrs["codec"]), gop=int(old.attrs["gop"]),
                                    crf=int(old.attrs.get("crf", DEFAULT_CRF)))
                    attrs = dict(old.attrs)
                    del f["obs/rgb"]
                    g = f.create_group("obs/rgb")
                    write_video(g, frames(), n, float(f.attrs["fps"]), width=cam.width, height=cam.height, **settings)
                    for key, value in attrs.items():
                        g.attrs.setdefault(key, value)
                else:  # v1: raw frames in place
                    rgb_ds = f["obs/rgb"]
                    for i, rgb in enumerate(frames()):
                        rgb_ds[i] = rgb
                ex = f["extras"]
                if "frame_index" in ex:
                    if "frame_index_live" not in ex:
                        ex.create_dataset("frame_index_live", data=ex["frame_index"][()])
                    ex["frame_index"][...] = np.arange(n, dtype=ex["frame_index"].dtype)
                else:
                    ex.create_dataset("frame_index", data=np.arange(n, dtype=np.float64))
                f["obs/rgb"].attrs["rendered_from"] = "extras/sim_qpos"
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        renderer.close()
    return RerenderResult(out, n, distinct, time.perf_counter() - t0)
