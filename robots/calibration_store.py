"""Camera extrinsics stored per camera serial: one JSON file per camera under the user's config dir.

    ~/.config/actstudio/calibration/<serial>.json   ($XDG_CONFIG_HOME respected;
                                                     $ACTSTUDIO_CALIBRATION_DIR overrides, tests use it)

The file holds the calibration the app uses (``T_base_camera`` for a fixed camera, eye-to-hand) plus
how it was made: date, set-up, method, residuals, board and intrinsics. The layout is a superset of
what ``robots.realsense.load_extrinsics`` reads, so a stored file also works as ``--calibration``.
A camera driver looks its serial up when it connects (robots/realsense.py); every frame then carries
that ``T_base_camera`` and every episode writes it into its camera meta.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ENV_DIR = "ACTSTUDIO_CALIBRATION_DIR"


class CalibrationStoreError(ValueError):
    """A stored calibration that cannot be used (one line, names the file)."""


@dataclass
class StoredCalibration:
    serial: str
    setup: str  # "eye-to-hand" | "eye-in-hand"
    T: np.ndarray  # eye-to-hand: T_base_camera; eye-in-hand: T_gripper_camera
    date: str
    method: str
    residuals: dict
    path: Path
    extra: dict

    @property
    def T_base_camera(self) -> np.ndarray | None:
        """The fixed camera pose in the robot base frame (None for a wrist camera: it moves with the arm)."""
        return self.T if self.setup == "eye-to-hand" else None

    def summary(self) -> str:
        r = self.residuals or {}
        res = (f"{r.get('translation_mm_rms', float('nan')):.2f} mm / {r.get('rotation_deg_rms', float('nan')):.3f} deg / "
               f"{r.get('reprojection_px_rms', float('nan')):.2f} px rms")
        return f"{self.setup} calibration of {self.serial} from {self.date} ({self.method}; residuals {res})"


def calibration_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "actstudio" / "calibration"


def _file_name(serial: str) -> str:
    serial = str(serial).strip()
    if not serial:
        raise CalibrationStoreError("a stored calibration needs the camera's serial number")
    return re.sub(r"[^A-Za-z0-9._-]", "_", serial) + ".json"


def path_for(serial: str, directory: Path | None = None) -> Path:
    return (directory or calibration_dir()) / _file_name(serial)


def _check_rigid(T: np.ndarray, where: str) -> np.ndarray:
    T = np.asarray(T, dtype=float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise CalibrationStoreError(f"{where}: the transform must be a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6) or not np.allclose(R @ R.T, np.eye(3), atol=1e-4) \
            or np.linalg.det(R) < 0:
        raise CalibrationStoreError(f"{where}: the transform is not rigid (rotation not orthonormal or last row not 0 0 0 1)")
    return T


def save(serial: str, setup: str, T: np.ndarray, *, method: str, date: str, residuals: dict,
         extra: dict | None = None, directory: Path | None = None) -> Path:
    """Write (atomically: a crash leaves the old file or the new one, never half of one)."""
    if setup not in ("eye-to-hand", "eye-in-hand"):
        raise CalibrationStoreError(f"unknown set-up {setup!r}")
    path = path_for(serial, directory)
    T = _check_rigid(T, str(path))
    key = "T_base_camera" if setup == "eye-to-hand" else "T_gripper_camera"
    doc = {"serial": str(serial), "setup": setup, key: T.tolist(), "date": date, "method": method,
           "residuals": residuals, **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load(serial: str, directory: Path | None = None) -> StoredCalibration | None:
    """The stored calibration of ``serial``, None when there is none; CalibrationStoreError when the
    file exists but cannot be used (the file is left alone)."""
    path = path_for(serial, directory)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationStoreError(f"{path}: cannot read the stored calibration ({exc})") from None
    if not isinstance(doc, dict):
        raise CalibrationStoreError(f"{path}: not a calibration file (expected a JSON object)")
    setup = doc.get("setup", "eye-to-hand")
    key = "T_base_camera" if setup == "eye-to-hand" else "T_gripper_camera"
    if key not in doc:
        raise CalibrationStoreError(f"{path}: {setup} calibration without {key}")
    try:
        T = np.asarray(doc[key], dtype=float)
    except (TypeError, ValueError):
        T = np.zeros(0)
    T = _check_rigid(T, str(path))
    known = {"serial", "setup", key, "date", "method", "residuals"}
    return StoredCalibration(serial=str(doc.get("serial", serial)), setup=setup, T=T, date=str(doc.get("date", "")),
                             method=str(doc.get("method", "")), residuals=dict(doc.get("residuals") or {}),
                             path=path, extra={k: v for k, v in doc.items() if k not in known})


def load_quietly(serial: str | None, directory: Path | None = None) -> StoredCalibration | None:
    """``load`` for drivers at connect time: a broken file is logged and treated as no calibration
    (the camera then shows as uncalibrated instead of failing to open)."""
    if not serial:
        return None
    try:
        return load(serial, directory)
    except CalibrationStoreError as exc:
        log.warning("%s", exc)
        return None
