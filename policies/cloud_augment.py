"""Training-time augmentation of the action expert's point clouds.

``add_distractor_copies``: the demos' scenes never hold a second object right beside the one the arm
goes for, and the expert's keypoint head learnt "the cube", not "the cube the guidance points at":
with a same-sized cube 7.5-9.5 cm from the task cube (the ``distractors`` scene variation, session 6)
it closed 3-5 cm beside the cube in most trials. Pasting a copy of the points around the window's
next contact (the cube being grasped, the button, the green cube under a release) a few centimetres
away teaches it to pick the one the guidance leads to. The copy replaces as many points far from
both spots, so the cloud keeps its size and density.
"""
from __future__ import annotations

import math

import torch

COPY_RADIUS = 0.03  # m (xy) around the contact: a 4 cm cube's points and the fingertips at it
COPY_DISTANCE = (0.07, 0.12)  # m, how far the copy lands (the variation's ring is 7.5-9.5 cm)
KEEP_OUT = 0.05  # m: points this close to either spot are never the ones replaced


def add_distractor_copies(cloud: torch.Tensor, target: torch.Tensor, prob: float,
                          gen: torch.Generator) -> torch.Tensor:
    """cloud (B, N, 3) base frame, target (B, 3) the next contact (NaN rows: none) → a new cloud
    where, with probability ``prob`` per sample, the points within ``COPY_RADIUS`` of the contact
    (and no higher than 3 cm above it: not the arm) appear a second time, shifted horizontally."""
    out = cloud.clone()
    b, n, _ = cloud.shape
    for i in range(b):
        t = target[i]
        if not bool(torch.isfinite(t).all()) or float(torch.rand(1, generator=gen)) >= prob:
            continue
        pts = cloud[i]
        near = (pts[:, :2] - t[:2]).norm(dim=-1)
        sel = (near < COPY_RADIUS) & (pts[:, 2] < t[2] + 0.03)
        k = int(sel.sum())
        if k < 3 or k > n // 8:  # nothing there, or a surface rather than an object
            continue
        ang = float(torch.rand(1, generator=gen)) * 2 * math.pi
        r = COPY_DISTANCE[0] + float(torch.rand(1, generator=gen)) * (COPY_DISTANCE[1] - COPY_DISTANCE[0])
        shift = torch.tensor([r * math.cos(ang), r * math.sin(ang), 0.0], dtype=pts.dtype)
        far = (near > KEEP_OUT) & ((pts[:, :2] - (t[:2] + shift[:2])).norm(dim=-1) > KEEP_OUT)
        spare = torch.nonzero(far).flatten()
        if len(spare) < k:
            continue
        spare = spare[torch.randperm(len(spare), generator=gen)[:k]]
        out[i, spare] = pts[sel] + shift
    return out
