"""Hand-eye calibration of an RGB-D camera against the arm (Qt-free; the CLI and the dialog share it).

Two set-ups (T_a_b = pose of frame b in frame a, 4x4):

* ``eye-to-hand`` — camera fixed in the lab, ChArUco board on the gripper. Unknowns: T_base_camera
  (what the app needs) and T_gripper_board. Every view i gives  T_base_gripper_i · T_gripper_board
  = T_base_camera · T_camera_board_i.
* ``eye-in-hand`` — camera on the wrist, board fixed on the table. Unknowns: T_gripper_camera and
  T_base_board:  T_base_gripper_i · T_gripper_camera · T_camera_board_i = T_base_board.

OpenCV's closed-form solvers (``cv2.calibrateHandEye`` — for eye-to-hand fed the inverted arm poses —
or ``cv2.calibrateRobotWorldHandEye``) give the start; a joint least-squares refinement of both
unknowns on the corner reprojection error (the quantity the detector actually measures) finishes it.
Residuals per view: the board pose predicted through the arm chain vs the one the camera measured
(translation mm, rotation deg) and the corner reprojection RMS (px) under the solved transforms.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from robots.base import Arm, Camera, RGBDFrame
from robots.charuco import BoardPose, BoardSpec, CharucoBoard, Detection

SETUPS = ("eye-to-hand", "eye-in-hand")
# calibrateHandEye methods, then the two calibrateRobotWorldHandEye ones.
HAND_EYE_METHODS = ("tsai", "park", "horaud", "andreff", "daniilidis")
ROBOT_WORLD_METHODS = ("shah", "li")
METHODS = HAND_EYE_METHODS + ROBOT_WORLD_METHODS
MIN_VIEWS = 5
MIN_ROTATION_DEG = 10.0  # the largest relative rotation between two views must reach this
MIN_AXIS_SPREAD = 0.25  # second/first singular value of the relative rotation axes: 0 = one axis only
# Views disagreeing with the solution by more than this are reported as a warning (bad TCP, moving board).
# A point-to-point move between neighbouring poses takes a few seconds at the drivers' safe speeds.
MOVE_TIMEOUT_S = 20.0
WARN_TRANSLATION_MM = 5.0
WARN_ROTATION_DEG = 2.0  # PnP rotation of a board seen face-on is the least certain part of a view


class CalibrationError(ValueError):
    """Input that cannot give a calibration (too few views, degenerate motion): one-line message."""


# ------------------------------------------------------------------------------------------ data


@dataclass
class View:
    """One calibration view: where the arm was and where the camera saw the board."""

    T_base_gripper: np.ndarray  # (4, 4) from the arm's ee_pose
    board: BoardPose  # board in the camera frame (PnP)
    detection: Detection


@dataclass
class Residuals:
    translation_mm: list[float]  # per view
    rotation_deg: list[float]
    reprojection_px: list[float]

    def summary(self) -> dict:
        t, r, p = (np.asarray(v, float) for v in (self.translation_mm, self.rotation_deg, self.reprojection_px))
        return {"translation_mm_rms": _rms(t), "translation_mm_max": float(t.max()),
                "rotation_deg_rms": _rms(r), "rotation_deg_max": float(r.max()),
                "reprojection_px_rms": _rms(p), "reprojection_px_max": float(p.max())}


@dataclass
class CalibrationResult:
    setup: str
    method: str
    T: np.ndarray  # eye-to-hand: T_base_camera; eye-in-hand: T_gripper_camera
    T_other: np.ndarray  # eye-to-hand: T_gripper_board; eye-in-hand: T_base_board
    residuals: Residuals
    n_views: int
    board: BoardSpec
    K: np.ndarray
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    warnings: list[str] = field(default_factory=list)
    truth: np.ndarray | None = None  # simulated lab only: the true answer, for the error display

    @property
    def T_base_camera(self) -> np.ndarray | None:
        return self.T if self.setup == "eye-to-hand" else None

    def report(self) -> str:
        s = self.residuals.summary()
        name = "T_base_camera" if self.setup == "eye-to-hand" else "T_gripper_camera"
        lines = [f"{self.setup} calibration from {self.n_views} views ({self.method} + reprojection refinement)",
                 f"residuals: translation {s['translation_mm_rms']:.2f} mm rms ({s['translation_mm_max']:.2f} max), "
                 f"rotation {s['rotation_deg_rms']:.3f} deg rms ({s['rotation_deg_max']:.3f} max), "
                 f"reprojection {s['reprojection_px_rms']:.2f} px rms ({s['reprojection_px_max']:.2f} max)",
                 f"{name} =", np.array2string(self.T, precision=4, suppress_small=True)]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ geometry


def pose_to_matrix(pose7: np.ndarray) -> np.ndarray:
    p = np.asarray(pose7, float).reshape(7)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(p[3:]).as_matrix()
    T[:3, 3] = p[:3]
    return T


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    return np.concatenate([T[:3, 3], Rotation.from_matrix(T[:3, :3]).as_quat()])


def inv(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def transform_error(A: np.ndarray, B: np.ndarray) -> tuple[float, float]:
    """(translation mm, rotation deg) between two poses."""
    dt = 1000.0 * float(np.linalg.norm(A[:3, 3] - B[:3, 3]))
    dr = math.degrees(Rotation.from_matrix(A[:3, :3].T @ B[:3, :3]).magnitude())
    return dt, dr


def _rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(v)))) if len(v) else float("nan")


def _vec_to_T(x: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(x[:3]).as_matrix()
    T[:3, 3] = x[3:6]
    return T


def _T_to_vec(T: np.ndarray) -> np.ndarray:
    return np.concatenate([Rotation.from_matrix(T[:3, :3]).as_rotvec(), T[:3, 3]])


# ------------------------------------------------------------------------------------ checking


def check_motion(T_base_gripper: list[np.ndarray]) -> None:
    """Raise CalibrationError when the arm poses cannot determine a hand-eye transform.

    Hand-eye calibration observes the camera's rotation only through rotations of the gripper, and
    the translation only through rotations about at least two different axes (Tsai & Lenz): pure
    translations, or all rotations about one axis, leave the solution undetermined.
    """
    if len(T_base_gripper) < MIN_VIEWS:
        raise CalibrationError(f"only {len(T_base_gripper)} usable views (board detected); need at least {MIN_VIEWS}")
    rots = [Rotation.from_matrix(T[:3, :3]) for T in T_base_gripper]
    axes, biggest = [], 0.0
    for i in range(len(rots)):
        for j in range(i + 1, len(rots)):
            rv = (rots[i].inv() * rots[j]).as_rotvec()
            ang = float(np.linalg.norm(rv))
            biggest = max(biggest, ang)
            if ang > math.radians(2.0):
                axes.append(rv / ang)
    if math.degrees(biggest) < MIN_ROTATION_DEG:
        raise CalibrationError(
            f"the gripper rotates by at most {math.degrees(biggest):.1f} deg between views (need >= {MIN_ROTATION_DEG:g}): "
            "pure translations cannot fix the camera pose; tilt and turn the tool between views")
    s = np.linalg.svd(np.asarray(axes), compute_uv=False)
    if len(s) < 2 or s[1] / s[0] < MIN_AXIS_SPREAD:
        raise CalibrationError("all view-to-view rotations are about one axis: the translation along it is "
                               "undetermined; rotate the tool about at least two different axes")


# ------------------------------------------------------------------------------------- solving


def _cv_method(name: str):
    import cv2

    table = {"tsai": cv2.CALIB_HAND_EYE_TSAI, "park": cv2.CALIB_HAND_EYE_PARK, "horaud": cv2.CALIB_HAND_EYE_HORAUD,
             "andreff": cv2.CALIB_HAND_EYE_ANDREFF, "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
             "shah": cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH, "li": cv2.CALIB_ROBOT_WORLD_HAND_EYE_LI}
    return table[name]


def _initial(setup: str, method: str, A: list[np.ndarray], B: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form (X, Y): eye-to-hand X = T_base_camera, Y = T_gripper_board;
    eye-in-hand X = T_gripper_camera, Y = T_base_board.  A_i = T_base_gripper, B_i = T_camera_board."""
    import cv2

    if method in HAND_EYE_METHODS:
        # calibrateHandEye solves for the camera in the gripper frame given gripper->base poses.
        # Eye-to-hand is the same problem with the roles swapped: feed base->gripper poses and the
        # "camera in gripper" it returns is the camera in the base frame.
        G = A if setup == "eye-in-hand" else [inv(a) for a in A]
        R, t = cv2.calibrateHandEye([g[:3, :3] for g in G], [g[:3, 3] for g in G],
                                    [b[:3, :3] for b in B], [b[:3, 3] for b in B], method=_cv_method(method))
        X = np.eye(4)
        X[:3, :3], X[:3, 3] = R, np.asarray(t).reshape(3)
        # The other unknown from each view, averaged.
        if setup == "eye-to-hand":
            Ys = [inv(a) @ X @ b for a, b in zip(A, B)]
        else:
            Ys = [a @ X @ b for a, b in zip(A, B)]
        Y = np.eye(4)
        Y[:3, :3] = Rotation.from_matrix(np.stack([y[:3, :3] for y in Ys])).mean().as_matrix()
        Y[:3, 3] = np.mean([y[:3, 3] for y in Ys], axis=0)
        return X, Y
    # calibrateRobotWorldHandEye solves  T_cam_world_i · T_world_base = T_cam_gripper · T_gripper_base_i
    # for T_world_base ("base2world") and T_cam_gripper ("gripper2cam"), given the measured world2cam
    # and base2gripper poses. Our equations in that shape:
    if setup == "eye-to-hand":
        # T_camera_board_i · T_board_gripper = T_camera_base · T_base_gripper_i
        # roles: world := board, "base" := our gripper, "gripper" := our base; base2gripper = A_i.
        R_bw, t_bw, R_gc, t_gc = cv2.calibrateRobotWorldHandEye(*_rw_args(B), *_rw_args(A), method=_cv_method(method))
        T_board_gripper, T_camera_base = _rt(R_bw, t_bw), _rt(R_gc, t_gc)
        return inv(T_camera_base), inv(T_board_gripper)
    # eye-in-hand: T_camera_board_i · T_board_base = T_camera_gripper · T_gripper_base_i
    # roles as named: world := board; base2gripper = A_i^-1.
    R_bw, t_bw, R_gc, t_gc = cv2.calibrateRobotWorldHandEye(*_rw_args(B), *_rw_args([inv(a) for a in A]),
                                                            method=_cv_method(method))
    T_board_base, T_camera_gripper = _rt(R_bw, t_bw), _rt(R_gc, t_gc)
    return inv(T_camera_gripper), inv(T_board_base)


def _rw_args(Ts: list[np.ndarray]) -> tuple[list, list]:
    # calibrateRobotWorldHandEye wants contiguous float64 3x3 / 3x1 arrays (a (3,) vector fails in gemm).
    return ([np.ascontiguousarray(T[:3, :3], dtype=np.float64) for T in Ts],
            [np.ascontiguousarray(T[:3, 3:4], dtype=np.float64) for T in Ts])


def _rt(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = np.asarray(R), np.asarray(t).reshape(3)
    return T


def predicted_board(setup: str, X: np.ndarray, Y: np.ndarray, A: np.ndarray) -> np.ndarray:
    """T_camera_board that the solution predicts for arm pose A (= T_base_gripper)."""
    if setup == "eye-to-hand":
        return inv(X) @ A @ Y
    return inv(X) @ inv(A) @ Y


def _project(T_cb: np.ndarray, obj: np.ndarray, K: np.ndarray) -> np.ndarray:
    p = obj @ T_cb[:3, :3].T + T_cb[:3, 3]
    z = np.maximum(p[:, 2:3], 1e-6)
    uv = p[:, :2] / z
    return uv @ K[:2, :2].T + K[:2, 2]


def solve(views: list[View], K: np.ndarray, board: CharucoBoard, setup: str = "eye-to-hand",
          method: str = "park") -> CalibrationResult:
    """Hand-eye solution from ``views``; raises CalibrationError for unusable input."""
    if setup not in SETUPS:
        raise CalibrationError(f"unknown set-up {setup!r}; expected one of: {', '.join(SETUPS)}")
    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")
    A = [np.asarray(v.T_base_gripper, float) for v in views]
    B = [np.asarray(v.board.T_camera_board, float) for v in views]
    check_motion(A)
    K = np.asarray(K, float)
    X0, Y0 = _initial(setup, method, A, B)
    if not (np.all(np.isfinite(X0)) and np.all(np.isfinite(Y0))):
        raise CalibrationError(f"the {method} solver returned no solution for these views; try another pose set")

    obj = [board.object_corners[v.detection.ids] for v in views]
    img = [v.detection.corners for v in views]

    def residual(x):
        X, Y = _vec_to_T(x[:6]), _vec_to_T(x[6:])
        return np.concatenate([(_project(predicted_board(setup, X, Y, a), o, K) - i).ravel()
                               for a, o, i in zip(A, obj, img)])

    # Soft-L1 keeps one mis-detected corner from dragging the solution; f_scale ~ 1 px.
    sol = least_squares(residual, np.concatenate([_T_to_vec(X0), _T_to_vec(Y0)]), loss="soft_l1", f_scale=1.0,
                        x_scale="jac", max_nfev=200)
    X, Y = _vec_to_T(sol.x[:6]), _vec_to_T(sol.x[6:])
    res = residuals(setup, X, Y, views, K, board)
    result = CalibrationResult(setup=setup, method=method, T=X, T_other=Y, residuals=res, n_views=len(views),
                               board=board.spec, K=K)
    s = res.summary()
    if s["translation_mm_max"] > WARN_TRANSLATION_MM or s["rotation_deg_max"] > WARN_ROTATION_DEG:
        worst = int(np.argmax(res.translation_mm))
        result.warnings.append(
            f"view {worst + 1} disagrees by {res.translation_mm[worst]:.1f} mm / {res.rotation_deg[worst]:.2f} deg: "
            "check the board size, that the board is rigidly mounted and the arm had stopped")
    return result


def residuals(setup: str, X: np.ndarray, Y: np.ndarray, views: list[View], K: np.ndarray,
              board: CharucoBoard) -> Residuals:
    t, r, p = [], [], []
    for v in views:
        pred = predicted_board(setup, X, Y, np.asarray(v.T_base_gripper, float))
        dt, dr = transform_error(pred, v.board.T_camera_board)
        uv = _project(pred, board.object_corners[v.detection.ids], K)
        t.append(dt)
        r.append(dr)
        p.append(_rms(np.linalg.norm(uv - v.detection.corners, axis=1)))
    return Residuals(t, r, p)


# ------------------------------------------------------------------------------------ pose sets


def pose_set(centre: np.ndarray, n: int, seed: int = 0, *, workspace=None, radius: float = 0.06,
             tilt_deg: float = 20.0, yaw_deg: float = 30.0, yaw_offset_deg: float = 0.0) -> list[np.ndarray]:
    """``n`` calibration poses (7,) around ``centre`` (7,): positions within ``radius`` (m, per axis),
    the tool tilted up to ``tilt_deg`` about its x and y axes and turned ``yaw_offset ± yaw_deg`` about
    the base z axis. Rotations are spread over both tilt axes and yaw (see ``check_motion``).
    Positions are kept inside ``workspace`` (a robots.base.Workspace) with a 1 cm margin."""
    if n < MIN_VIEWS:
        raise CalibrationError(f"need at least {MIN_VIEWS} poses, got {n}")
    c = np.asarray(centre, float).reshape(7)
    rng = np.random.default_rng(seed)
    r0 = Rotation.from_quat(c[3:])
    poses = []
    for i in range(n):
        # Stratified: pose i takes a different corner of the tilt square so no axis is left out.
        sx, sy = (1 if i % 2 else -1), (1 if (i // 2) % 2 else -1)
        tilt = np.radians(tilt_deg) * np.array([sx * rng.uniform(0.4, 1.0), sy * rng.uniform(0.4, 1.0)])
        yaw = np.radians(yaw_offset_deg + yaw_deg * rng.uniform(-1.0, 1.0))
        rot = Rotation.from_euler("z", yaw) * r0 * Rotation.from_euler("xy", tilt)
        pos = c[:3] + rng.uniform(-radius, radius, 3) * np.array([1.0, 1.0, 0.6])
        if workspace is not None:
            lo, hi = np.asarray(workspace.lo) + 0.01, np.asarray(workspace.hi) - 0.01
            pos = np.clip(pos, lo, hi)
        poses.append(np.concatenate([pos, rot.as_quat()]))
    return poses


# ------------------------------------------------------------------------------------- running


@dataclass
class Progress:
    index: int  # 0-based view being processed
    total: int
    frame: RGBDFrame | None
    detection: Detection | None
    board: BoardPose | None
    message: str


def fresh_frame(camera: Camera, after: float, timeout: float = 10.0) -> RGBDFrame:
    """The first frame captured after ``after`` (monotonic): it shows the arm where it stopped."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{camera.name}: no new frame within {timeout:g} s of the arm stopping")
        f = camera.wait_frame(timeout=left)
        if f.stamp > after:
            return f


def collect_views(arm: Arm, camera: Camera, poses: list[np.ndarray], board: CharucoBoard, *,
                  settle_s: float = 0.3, on_progress: Callable[[Progress], None] | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  move_timeout: float | None = None) -> tuple[list[View], np.ndarray]:
    """Visit ``poses`` with ``arm.move_to`` (the driver's safe point-to-point speed and workspace
    check), grab a frame after each stop and detect the board. Returns the views where the board
    was seen, and the camera K. Poses outside the arm's workspace are refused before any motion."""
    for i, p in enumerate(poses):
        if not arm.limits.workspace.contains(np.asarray(p)[:3]):
            raise CalibrationError(f"pose {i + 1} {np.round(p[:3], 3).tolist()} is outside the arm's workspace")
    views: list[View] = []
    K = None
    for i, target in enumerate(poses):
        if should_stop is not None and should_stop():
            raise CalibrationError("calibration cancelled")
        arm.move_to(np.asarray(target, float), timeout=MOVE_TIMEOUT_S if move_timeout is None else move_timeout)
        time.sleep(settle_s)  # let a real arm ring down before the exposure
        stopped = time.monotonic()
        frame = fresh_frame(camera, stopped)
        state = arm.state()
        K = np.asarray(frame.K, float)
        det = board.detect(frame.rgb)
        bp = board.pose(det, K) if det.found else None
        if bp is not None:
            views.append(View(T_base_gripper=pose_to_matrix(state.ee_pose), board=bp, detection=det))
            msg = f"view {i + 1}/{len(poses)}: {bp.n_corners} corners, PnP {bp.reprojection_px:.2f} px"
        else:
            msg = f"view {i + 1}/{len(poses)}: board not detected ({len(det.ids)} corners), skipped"
        if on_progress is not None:
            on_progress(Progress(i, len(poses), frame, det, bp, msg))
    if K is None:
        raise CalibrationError("no poses to visit")
    return views, K


def run_calibration(arm: Arm, camera: Camera, poses: list[np.ndarray], board_spec: BoardSpec = BoardSpec(), *,
                    setup: str = "eye-to-hand", method: str = "park", return_home: bool = True,
                    on_progress: Callable[[Progress], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> CalibrationResult:
    """Visit the poses, solve, and (by default) bring the arm back to where it started."""
    board = CharucoBoard(board_spec)
    # A pose set that cannot determine the answer is refused before the arm moves at all.
    check_motion([pose_to_matrix(p) for p in poses])
    start = np.asarray(arm.state().ee_pose, float)
    try:
        views, K = collect_views(arm, camera, poses, board, on_progress=on_progress, should_stop=should_stop)
    finally:
        # After a stop request (E-STOP, Cancel) the arm stays where it is: no motion of our own.
        if return_home and not (should_stop is not None and should_stop()):
            try:
                arm.move_to(start)
            except Exception:
                pass  # the calibration outcome (or its error) matters more than the way back
    if len(views) < MIN_VIEWS:
        raise CalibrationError(f"the board was detected in only {len(views)} of {len(poses)} views (need {MIN_VIEWS}): "
                               "check that it is in the camera's view at the centre pose and is the "
                               f"{board_spec.describe()}")
    return solve(views, K, board, setup, method)


def sim_pose_centre(robot: str, setup: str = "eye-to-hand") -> np.ndarray:
    """Centre pose for the simulated lab: eye-to-hand, where the plate on the gripper faces the scene
    camera squarely; eye-in-hand, tool down with the wrist camera over the board on its stand."""
    from robots.sim.tasks import TOOL_DOWN
    from robots.sim.world import TABLE_BOARD_POS

    if setup == "eye-in-hand":
        # The wrist camera sits 7 cm along the tool x axis (robots/sim/world.py add_wrist_camera).
        return np.concatenate([[TABLE_BOARD_POS[0] - 0.07, TABLE_BOARD_POS[1], 0.35], TOOL_DOWN.as_quat()])
    # The plate faces the tool's +x tilted up; a 25 deg yaw points it at the camera (robots/sim/world.py).
    rot = Rotation.from_euler("z", 25, degrees=True) * TOOL_DOWN
    return np.concatenate([[0.45, 0.0, 0.15], rot.as_quat()])


# ------------------------------------------------------------------------------------- storing


def camera_key(camera: Camera, robot: str = "") -> str:
    """The store key of a camera: its serial; simulated cameras get a name per robot and view."""
    serial = str(getattr(camera, "serial", "") or "")
    if serial:
        return serial
    name = str(getattr(camera, "name", "camera"))
    if name.startswith("sim:"):
        return f"sim-{robot.removeprefix('sim-') or 'lab'}-{name.removeprefix('sim:')}"
    return name


def save_result(result: CalibrationResult, key: str, *, robot: str = "", directory=None):
    """Write ``result`` to the per-camera store (robots/calibration_store.py); returns the path."""
    from robots import calibration_store

    res = result.residuals
    return calibration_store.save(
        key, result.setup, result.T, method=f"{result.method} + reprojection refinement (OpenCV {_cv_version()})",
        date=result.date, residuals={**res.summary(), "per_view": {"translation_mm": res.translation_mm,
                                                                  "rotation_deg": res.rotation_deg,
                                                                  "reprojection_px": res.reprojection_px}},
        extra={"n_views": result.n_views, "board": result.board.to_dict(), "K": result.K.tolist(), "robot": robot,
               "T_other": result.T_other.tolist(),
               "T_other_is": "T_gripper_board" if result.setup == "eye-to-hand" else "T_base_board"},
        directory=directory)


def _cv_version() -> str:
    import cv2

    return cv2.__version__


def sim_truth(setup: str, frame: RGBDFrame, ee_pose: np.ndarray) -> np.ndarray:
    """The simulator's true answer for the camera that made ``frame``: T_base_camera (eye-to-hand) or
    T_gripper_camera (eye-in-hand, from the gripper pose at the same instant)."""
    T = np.asarray(frame.T_base_camera, float)
    return T if setup == "eye-to-hand" else inv(pose_to_matrix(ee_pose)) @ T


def apply_to_camera(camera: Camera, result: CalibrationResult) -> bool:
    """Use an eye-to-hand result on a live hardware camera now (frames carry it from the next one).
    Simulated cameras keep their true pose; eye-in-hand results cannot be one fixed T_base_camera."""
    T = result.T_base_camera
    if T is None or str(getattr(camera, "name", "")).startswith("sim:") or not hasattr(camera, "T_base_camera"):
        return False
    try:
        camera.T_base_camera = T.copy()
        camera.calibrated = True
    except AttributeError:
        return False
    return True


def synthetic_views(setup: str, X: np.ndarray, Y: np.ndarray, poses: list[np.ndarray], K: np.ndarray,
                    board: CharucoBoard, noise_px: float = 0.0, seed: int = 0) -> list[View]:
    """Views of a known set-up (X, Y as in ``solve``) with Gaussian corner noise: the detector's
    output is replaced by exact projections + noise, and the board pose comes from the same PnP the
    real pipeline uses. For the noise study (tests, bench/calibration.py)."""
    rng = np.random.default_rng(seed)
    views = []
    ids = np.arange(len(board.object_corners))
    for p in poses:
        A = pose_to_matrix(p)
        uv = _project(predicted_board(setup, X, Y, A), board.object_corners, K)
        uv = uv + rng.normal(0.0, noise_px, uv.shape)
        det = Detection(corners=uv, ids=ids, markers=[])
        bp = board.pose(det, K)
        if bp is None:
            raise CalibrationError("synthetic view without a board pose")
        views.append(View(T_base_gripper=A, board=bp, detection=det))
    return views
