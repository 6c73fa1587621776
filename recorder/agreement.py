"""Agreement between annotators: boundary F1 (matching within a tolerance) and Krippendorff's α."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .annotation_model import AnnotationDoc


def krippendorff_alpha(data: np.ndarray | Sequence[Sequence[float | None]], level: str = "interval") -> float:
    """Krippendorff's α (Krippendorff 2011), computed by the ``krippendorff`` package.

    ``data`` is coders × units; missing values are None/NaN. Units with fewer than two values are
    not pairable and are dropped. ``level``: nominal | ordinal | interval. Where α's expected
    disagreement is zero (every pairable value identical) it is 1.0 here (perfect, trivial
    agreement) where the package says NaN or refuses a one-value domain.
    """
    import krippendorff

    arr = np.array([[np.nan if v is None else float(v) for v in row] for row in data], dtype=float)
    if arr.ndim != 2:
        raise ValueError("reliability data must be coders × units")
    if not np.isfinite(arr).any():
        raise ValueError("no values to compare")
    if level not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"level must be nominal, ordinal or interval, got {level!r}")
    pairable = np.isfinite(arr).sum(axis=0) >= 2
    if not pairable.any():
        raise ValueError("no unit has two or more values; α is undefined")
    arr = arr[:, pairable]  # unpairable units change nothing, but would widen the package's value domain
    if np.unique(arr[np.isfinite(arr)]).size < 2:
        return 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = krippendorff.alpha(reliability_data=arr, level_of_measurement=level)
    return 1.0 if np.isnan(alpha) else float(alpha)


def match_boundaries(pred: Sequence[int], true: Sequence[int], tol: int) -> int:
    """Number of one-to-one matches between two boundary lists with |pred - true| <= tol."""
    from scipy.optimize import linear_sum_assignment
    p, t = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if p.size == 0 or t.size == 0:
        return 0
    dist = np.abs(p[:, None] - t[None, :])
    cost = np.where(dist <= tol, dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return int(np.sum(dist[rows, cols] <= tol))


def boundary_f1(pred: Sequence[int], true: Sequence[int], tol: int = 3) -> tuple[float, float, float]:
    """(precision, recall, F1) of boundaries matched one-to-one within ±tol frames."""
    if len(pred) == 0 and len(true) == 0:
        return 1.0, 1.0, 1.0
    hits = match_boundaries(pred, true, tol)
    precision = hits / len(pred) if len(pred) else 0.0
    recall = hits / len(true) if len(true) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def boundary_agreement(a: AnnotationDoc, b: AnnotationDoc, tol: int = 3) -> float:
    """Boundary F1 between two annotators (symmetric) within ±tol frames."""
    return boundary_f1(a.boundaries(), b.boundaries(), tol)[2]


def quality_alpha(docs: Sequence[AnnotationDoc], level: str = "interval", min_overlap: float = 0.5) -> float:
    """Krippendorff's α over quality scores of several annotators of one episode.

    Units are the first document's segments; another annotator's score for a unit is that of its
    segment overlapping the unit by at least ``min_overlap`` of the unit (else missing).
    """
    if len(docs) < 2:
        raise ValueError("need at least two annotators")
    ref = docs[0]
    rows = []
    for d in docs:
        row = []
        for u in ref.segments:
            score = None
            for s in d.segments:
                inter = min(u.end, s.end) - max(u.start, s.start)
                if inter >= min_overlap * u.length and s.quality is not None:
                    score = s.quality
                    break
            row.append(score)
        rows.append(row)
    return krippendorff_alpha(rows, level)
