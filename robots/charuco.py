"""ChArUco calibration boards: the board definition, its printable image, detection and board pose.

Shared by the hand-eye calibration (app/calibration.py) and the simulated lab, which textures the
same board onto a plate on the gripper (robots/sim/world.py), so what the sim camera sees is exactly
what the detector expects. OpenCV conventions: the board frame has its origin at the board's
top-left chessboard corner, x along the squares' columns, y along the rows, z into the board.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Boards this app prints/detects; 4x4 markers stay decodable at the ~3 px per marker bit a
# 640x480 camera gets from a hand-sized board at a metre.
DICTIONARIES = ("DICT_4X4_50", "DICT_4X4_100", "DICT_5X5_100", "DICT_6X6_250")
MIN_CORNERS = 6  # fewer corners than this give a poorly conditioned PnP; the view is skipped


class BoardError(ValueError):
    """A board definition that cannot exist (one-line message)."""


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board: ``squares_x`` x ``squares_y`` chessboard squares of ``square`` metres with
    ArUco markers of ``marker`` metres in the white squares."""

    squares_x: int = 5
    squares_y: int = 4
    square: float = 0.04
    marker: float = 0.03
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self):
        if self.squares_x < 3 or self.squares_y < 3:
            raise BoardError(f"a ChArUco board needs at least 3x3 squares, got {self.squares_x}x{self.squares_y}")
        if not (0.0 < self.marker < self.square):
            raise BoardError(f"marker size must be between 0 and the square size ({self.square} m), got {self.marker}")
        if self.square > 0.5:
            raise BoardError(f"square size is in metres; {self.square} m is not a calibration board")
        if self.dictionary not in DICTIONARIES:
            raise BoardError(f"unknown ArUco dictionary {self.dictionary!r}; expected one of: {', '.join(DICTIONARIES)}")
        n_markers = (self.squares_x * self.squares_y) // 2
        if n_markers > int(self.dictionary.rsplit("_", 1)[1]):
            raise BoardError(f"{self.squares_x}x{self.squares_y} squares need {n_markers} markers; "
                             f"{self.dictionary} has only {self.dictionary.rsplit('_', 1)[1]}")

    @property
    def size(self) -> tuple[float, float]:
        """Chessboard extent (width, height) in metres, without the white margin."""
        return self.squares_x * self.square, self.squares_y * self.square

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BoardSpec":
        return cls(**{k: d[k] for k in ("squares_x", "squares_y", "square", "marker", "dictionary") if k in d})

    def describe(self) -> str:
        return (f"{self.squares_x}x{self.squares_y} ChArUco, {self.square * 1000:g} mm squares, "
                f"{self.marker * 1000:g} mm markers, {self.dictionary}")


def _cv2():
    import cv2

    if not getattr(_cv2, "quiet", False):
        # drawFrameAxes warns on stderr for every overlay whose axes leave the image.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        _cv2.quiet = True
    return cv2


class CharucoBoard:
    """OpenCV board + detector for one ``BoardSpec`` (create once, detect many times; not thread-safe)."""

    def __init__(self, spec: BoardSpec = BoardSpec()):
        cv2 = _cv2()
        self.spec = spec
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
        self.board = cv2.aruco.CharucoBoard((spec.squares_x, spec.squares_y), spec.square, spec.marker, dictionary)
        self.detector = cv2.aruco.CharucoDetector(self.board)
        self.object_corners = np.asarray(self.board.getChessboardCorners(), dtype=np.float64).reshape(-1, 3)

    def image(self, px_per_m: float = 4000.0, margin_squares: float = 0.5) -> np.ndarray:
        """Printable board (uint8 grey) with a white quiet zone of ``margin_squares`` squares."""
        w, h = self.spec.size
        margin = int(round(margin_squares * self.spec.square * px_per_m))
        size = (int(round(w * px_per_m)) + 2 * margin, int(round(h * px_per_m)) + 2 * margin)
        return self.board.generateImage(size, marginSize=margin, borderBits=1)

    def detect(self, rgb: np.ndarray) -> "Detection":
        """ChArUco corners in an RGB (or grey) image; an empty Detection when the board is not seen."""
        cv2 = _cv2()
        grey = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        corners, ids, marker_corners, marker_ids = self.detector.detectBoard(grey)
        if ids is None or corners is None or len(ids) == 0:
            corners, ids = np.zeros((0, 2)), np.zeros(0, dtype=int)
        else:
            corners, ids = corners.reshape(-1, 2).astype(np.float64), ids.reshape(-1).astype(int)
        markers = [] if marker_corners is None else [np.asarray(m, float).reshape(4, 2) for m in marker_corners]
        return Detection(corners=corners, ids=ids, markers=markers)

    def pose(self, det: "Detection", K: np.ndarray, dist: np.ndarray | None = None) -> "BoardPose | None":
        """Board pose in the camera frame from detected corners (PnP), or None when too few corners
        or they are collinear (a single row of corners fixes no rotation about it)."""
        cv2 = _cv2()
        if len(det.ids) < MIN_CORNERS:
            return None
        if self.board.checkCharucoCornersCollinear(det.ids.reshape(-1, 1).astype(np.int32)):
            return None
        obj = self.object_corners[det.ids]
        img = det.corners
        dist = np.zeros(5) if dist is None else np.asarray(dist, float)
        ok, rvec, tvec = cv2.solvePnP(obj, img, np.asarray(K, float), dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            return None
        # IPPE is exact for planes but noisy corners deserve a joint refinement of all six parameters.
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, np.asarray(K, float), dist, rvec, tvec)
        proj, _ = cv2.projectPoints(obj, rvec, tvec, np.asarray(K, float), dist)
        rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(rvec)[0]
        T[:3, 3] = tvec.reshape(3)
        return BoardPose(T_camera_board=T, reprojection_px=rms, n_corners=len(det.ids))


@dataclass
class Detection:
    corners: np.ndarray  # (N, 2) sub-pixel ChArUco corner positions
    ids: np.ndarray  # (N,) corner ids into the board's chessboard corners
    markers: list  # [(4, 2)] ArUco marker outlines (for the overlay)

    @property
    def found(self) -> bool:
        return len(self.ids) >= MIN_CORNERS


@dataclass
class BoardPose:
    T_camera_board: np.ndarray  # (4, 4)
    reprojection_px: float  # RMS corner reprojection error of the PnP solution
    n_corners: int


def draw_detection(rgb: np.ndarray, det: Detection, K: np.ndarray | None = None, pose: BoardPose | None = None,
                   axis_len: float = 0.05) -> np.ndarray:
    """A copy of ``rgb`` with marker outlines, corners and (with a pose) the board axes drawn in."""
    cv2 = _cv2()
    out = np.ascontiguousarray(rgb).copy()
    for m in det.markers:
        cv2.polylines(out, [np.round(m).astype(np.int32)], True, (40, 140, 255), 1, cv2.LINE_AA)
    for c in det.corners:
        cv2.circle(out, (int(round(c[0])), int(round(c[1]))), 3, (255, 40, 40), -1, cv2.LINE_AA)
    if pose is not None and K is not None:
        rvec = cv2.Rodrigues(pose.T_camera_board[:3, :3])[0]
        cv2.drawFrameAxes(out, np.asarray(K, float), np.zeros(5), rvec, pose.T_camera_board[:3, 3], axis_len, 2)
    return out


def board_texture_png(spec: BoardSpec, px_per_m: float = 4000.0, margin_squares: float = 0.5) -> tuple[Path, tuple[float, float]]:
    """The board image written as a PNG (cached by content) for a simulator texture; returns its path
    and the plate size (width, height) in metres including the white margin."""
    cv2 = _cv2()
    img = CharucoBoard(spec).image(px_per_m, margin_squares)
    key = hashlib.sha1(img.tobytes() + repr(img.shape).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"actstudio-charuco-{key}.png"
    if not path.is_file():
        # Written under a unique name and renamed: two sim processes starting at once never read half a file.
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
        os.close(fd)
        if not cv2.imwrite(tmp, cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)):
            raise OSError(f"cannot write the board texture {tmp}")
        os.replace(tmp, path)
    h, w = img.shape
    return path, (w / px_per_m, h / px_per_m)
