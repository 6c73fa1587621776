"""Synthetic pick-and-place trajectories with known phases, for keyframe/segment tests.

Mimics the scripted expert: waypoints with phase names, a C1 cubic Hermite spline through them
(zero velocity where the arm dwells, Catmull–Rom tangents where it passes through), a gripper that
ramps over ~0.4 s during dwells, and sensor noise on pose and gripper.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicHermiteSpline
from scipy.spatial.transform import Rotation


@dataclass
class Synthetic:
    ee_pose: np.ndarray  # (T, 7)
    gripper: np.ndarray  # (T,)
    action: np.ndarray  # (T, 8)
    phases: list  # per-frame phase name
    fps: float
    gripper_truth: list  # (frame, kind): first frame past the half-way level of each ramp


def pick_place(seed: int = 0, fps: float = 20.0, pos_noise: float = 3e-4, grip_noise: float = 0.01,
               yaw_turn: float = 0.0) -> Synthetic:
    rng = np.random.default_rng(seed)
    home = np.array([0.35, 0.0, 0.40])
    cube = np.array([0.45 + rng.uniform(-0.08, 0.08), rng.uniform(-0.15, 0.15), 0.02])
    goal = np.array([0.45 + rng.uniform(-0.08, 0.08), rng.uniform(-0.25, 0.25), 0.05])
    if np.linalg.norm(goal[:2] - cube[:2]) < 0.12:
        goal[1] = cube[1] + (0.15 if cube[1] < 0 else -0.15)
    hover = 0.12 + rng.uniform(0, 0.05)
    held = 0.38 + rng.uniform(-0.05, 0.05)  # normalised opening on the cube
    # (position, phase of the leg that ends here, dwell seconds, gripper during/after dwell, stop?)
    # Named like robots/sim/tasks.py: the phase of the motion that ends at the waypoint; the gripper
    # is commanded on arrival and the dwell holds the pose while it moves.
    wps = [
        (home, "move", 0.0, 1.0, True),
        (cube + [0, 0, hover], "move", 0.0, 1.0, False),
        (cube, "lower", 0.0, 1.0, True),
        (cube, "grasp", 0.8, held, True),
        (cube + [0, 0, hover + 0.03], "lift", 0.2, held, True),
        (goal + [0, 0, hover + 0.03], "transport", 0.0, held, False),
        (goal, "lower", 0.2, held, True),
        (goal, "place", 0.6, 1.0, True),
        (goal + [0, 0, hover], "move", 0.0, 1.0, True),
    ]
    speed = 0.15 + rng.uniform(-0.03, 0.03)  # m/s average per leg
    times, points, stops = [0.0], [wps[0][0]], [True]
    phase_at = []  # (t_start, t_end, phase)
    grip_events = []  # (t_start, from, to)
    t = 0.0
    grip = 1.0
    for pos, phase, dwell, g_after, stop in wps[1:]:
        moved = np.linalg.norm(pos - points[-1]) > 1e-9
        if moved:
            dur = max(0.6, np.linalg.norm(pos - points[-1]) / speed)
            phase_at.append((t, t + dur, phase))
            t += dur
            times.append(t)
            points.append(pos)
            stops.append(stop)
        if dwell > 0:
            if g_after != grip:
                grip_events.append((t + 0.05, grip, g_after))  # one tick of actuator latency
                grip = g_after
            phase_at.append((t, t + dwell, phase))
            t += dwell
            times.append(t)
            points.append(pos)
            stops.append(True)
    times, points = np.array(times), np.array(points)
    vel = np.zeros_like(points)
    for i in range(1, len(points) - 1):
        if not stops[i]:
            vel[i] = (points[i + 1] - points[i - 1]) / (times[i + 1] - times[i - 1])
    # Dwell waypoints repeat positions; CubicHermiteSpline needs strictly increasing times, which hold.
    spline = CubicHermiteSpline(times, points, vel, axis=0)
    n = int(np.floor(times[-1] * fps)) + 1
    ts = np.arange(n) / fps
    pos = spline(ts)
    phases = []
    for tt in ts:
        name = phase_at[-1][2]
        for a, b, ph in phase_at:
            if a <= tt < b:
                name = ph
                break
        phases.append(name)
    g_cmd = np.ones(n)
    g = np.ones(n)
    truth = []
    ramp = 0.4
    for t0, g0, g1 in grip_events:
        g_cmd[ts >= t0] = g1
        frac = np.clip((ts - t0) / ramp, 0, 1)
        g = np.where(ts >= t0, g0 + (g1 - g0) * frac, g)
        half = (g0 + g1) / 2
        crossed = (g - half) * np.sign(g1 - g0) >= 0
        k = int(np.argmax(crossed & (ts >= t0)))
        truth.append((k, "gripper_close" if g1 < g0 else "gripper_open"))
    yaw = yaw_turn * np.clip(ts / ts[-1], 0, 1)
    quat = (Rotation.from_euler("x", np.pi) * Rotation.from_euler("z", yaw[:, None])).as_quat()
    quat = np.atleast_2d(quat)
    if quat.shape[0] == 1:
        quat = np.repeat(quat, n, axis=0)
    pose = np.hstack([pos + rng.normal(0, pos_noise, pos.shape), quat])
    grip_meas = np.clip(g + rng.normal(0, grip_noise, n), 0, 1)
    action = np.hstack([spline(np.minimum(ts + 1 / fps, times[-1])), quat, g_cmd[:, None]])
    return Synthetic(pose, grip_meas.astype(np.float32), action, phases, fps, truth)


def write_episode(path, syn: Synthetic, *, images: bool = True, width: int = 32, height: int = 24,
                  task: str = "place_in_bin", extras: bool = True, propose: bool = False, rgb_codec: str | None = None):
    """A real episode file (recorder.episode.EpisodeWriter) holding a synthetic trajectory.

    ``propose=False`` (default) leaves it as an older recording would be: no keyframes, no store.
    ``rgb_codec=None`` (default) stores RGB losslessly (schema v1 layout), every pixel = frame % 256;
    ``"h264"`` writes the default v2 layout, each frame painted with bench.kill_sweep.tag_frame's
    colour (read back with frame_tag: H.264 keeps it within a few levels)."""
    from recorder.episode import EpisodeWriter

    cam = None
    if images:
        K = np.array([[30.0, 0, width / 2], [0, 30.0, height / 2], [0, 0, 1]])
        cam = {"K": K, "T_base_camera": np.eye(4), "width": width, "height": height,
               "depth_scale": 0.001, "model": "synthetic", "serial": "0"}
    w = EpisodeWriter(path, {"robot": "franka", "task": task, "instruction": "put the red cube in the bin",
                             "fps": syn.fps}, cam, queue_frames=len(syn.gripper) + 8, rgb_codec=rgb_codec)
    for i in range(len(syn.gripper)):
        rgb = depth = None
        if images:
            rgb = np.full((height, width, 3), i % 256, dtype=np.uint8)  # frame index readable in pixels
            if rgb_codec is not None:
                from bench.kill_sweep import tag_frame

                rgb = np.empty((height, width, 3), np.uint8)
                tag_frame(rgb, i)
                rgb[:] = rgb[0, 0]
            depth = np.full((height, width), 500 + i, dtype=np.uint16)
        w.append(i / syn.fps, rgb, depth, syn.ee_pose[i], np.zeros(7), float(syn.gripper[i]), syn.action[i],
                 {"expert_phase": syn.phases[i]} if extras else None)
    return w.finalize("success", propose=propose)
