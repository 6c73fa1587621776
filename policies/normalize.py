"""Per-dimension min–max normalisation to [-1, 1], stored as plain tensors in checkpoints.

One normaliser covers the 10-D pose vector (xyz + rot6d + gripper) shared by state, guidance and
actions, so the Gaussian goal noise (0.1 in normalised units) means the same thing on every axis, and
the cloud's xyz use the same xyz scaling so points and poses stay in one metric frame.
"""
from __future__ import annotations

import numpy as np
import torch


class MinMaxNormalizer:
    """x_n = (x - centre) / half_range, with half_range floored so constant dimensions stay finite."""

    def __init__(self, centre: np.ndarray, half_range: np.ndarray):
        self.centre = torch.as_tensor(np.asarray(centre, dtype=np.float32))
        self.half_range = torch.as_tensor(np.asarray(half_range, dtype=np.float32))
        if self.centre.shape != self.half_range.shape or self.centre.ndim != 1:
            raise ValueError("normaliser centre and half_range must be 1-D and the same length")

    @classmethod
    def fit(cls, data: np.ndarray, min_half_range: float = 0.01, margin: float = 0.05) -> "MinMaxNormalizer":
        """Fit on (N, D) data; ``margin`` widens the box so slightly-out-of-range states at run time
        still land inside [-1, 1] (the DDIM clip would otherwise distort them)."""
        data = np.asarray(data, dtype=np.float64).reshape(-1, np.shape(data)[-1])
        if len(data) == 0 or not np.all(np.isfinite(data)):
            raise ValueError("cannot fit a normaliser on empty or non-finite data")
        lo, hi = data.min(axis=0), data.max(axis=0)
        half = np.maximum((hi - lo) / 2 * (1 + margin), min_half_range)
        return cls((hi + lo) / 2, half)

    @property
    def dim(self) -> int:
        return int(self.centre.shape[0])

    def _params(self, x: torch.Tensor, dims: slice | None) -> tuple[torch.Tensor, torch.Tensor]:
        c, h = (self.centre, self.half_range) if dims is None else (self.centre[dims], self.half_range[dims])
        return c.to(x.device, x.dtype), h.to(x.device, x.dtype)

    def normalize(self, x: torch.Tensor, dims: slice | None = None) -> torch.Tensor:
        c, h = self._params(x, dims)
        return (x - c) / h

    def unnormalize(self, x: torch.Tensor, dims: slice | None = None) -> torch.Tensor:
        c, h = self._params(x, dims)
        return x * h + c

    def state_dict(self) -> dict:
        return {"centre": self.centre.clone(), "half_range": self.half_range.clone()}

    @classmethod
    def from_state_dict(cls, d: dict) -> "MinMaxNormalizer":
        return cls(np.asarray(d["centre"]), np.asarray(d["half_range"]))
