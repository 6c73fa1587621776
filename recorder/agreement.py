"""Agreement between annotators: boundary F1 (matching within a tolerance) and Krippendorff's α."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .annotation_model import AnnotationDoc


def krippendorff_alpha(data: np.ndarray | Sequence[Sequence[float | None]], level: str = "interval") -> float:
    """Krippendorff's α from the coincidence-matrix definition (Krippendorff 2011).

    ``data`` is coders × units; missing values are None/NaN. Units with fewer than two values are
    not pairable and are dropped. ``level``: nominal | ordinal | interval.
    """
    arr = np.array([[np.nan if v is None else float(v) for v in row] for row in data], dtype=float)
    if arr.ndim != 2:
        raise ValueError("reliability data must be coders × units")
    values = np.unique(arr[np.isfinite(arr)])
    if values.size == 0:
        raise ValueError("no values to compare")
    idx = {v: i for i, v in enumerate(values)}
    v = len(values)
    o = np.zeros((v, v))  # coincidence matrix
    for unit in arr.T:
        present = unit[np.isfinite(unit)]
        m = len(present)
        if m < 2:
            continue
        counts = np.zeros(v)
        for x in present:
            counts[idx[x]] += 1
        # pairs (c, k) of values from different coders within the unit, weighted 1/(m_u - 1)
        o += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        raise ValueError("no unit has two or more values; α is undefined")
    if level == "nominal":
        delta = 1.0 - np.eye(v)
    elif level == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    elif level == "ordinal":
        cum = np.cumsum(n_c)
        delta = np.zeros((v, v))
        for c in range(v):
            for k in range(v):
                lo, hi = min(c, k), max(c, k)
                # sum of n_g for g between c and k, minus half of the two end counts
                delta[c, k] = (cum[hi] - (cum[lo - 1] if lo > 0 else 0) - (n_c[c] + n_c[k]) / 2) ** 2
    else:
        raise ValueError(f"level must be nominal, ordinal or interval, got {level!r}")
    d_o = (o * delta).sum()
    d_e = (np.outer(n_c, n_c) * delta).sum() / (n - 1)
    if d_e == 0:
        return 1.0  # every value identical: perfect (and trivial) agreement
    return float(1.0 - d_o / d_e)


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
