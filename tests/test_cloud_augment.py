"""The expert's distractor-copy augmentation (policies/cloud_augment.py)."""
from __future__ import annotations

import math

import torch

from policies.cloud_augment import COPY_DISTANCE, add_distractor_copies


def _scene(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    cloud = torch.rand(n, 3, generator=g) * torch.tensor([0.5, 0.7, 0.3]) + torch.tensor([0.25, -0.35, 0.02])
    cube = torch.rand(30, 3, generator=g) * 0.04 + torch.tensor([0.48, -0.02, 0.0])  # 4 cm cube at (0.5, 0)
    cloud[:30] = cube
    # Keep the scattered points off the cube's column so only the cube is near the contact.
    far = (cloud[30:, :2] - torch.tensor([0.5, 0.0])).norm(dim=-1) < 0.06
    cloud[30:][far] += torch.tensor([0.0, 0.2, 0.0])
    return cloud


def test_a_copy_of_the_contacts_object_lands_a_few_cm_away():
    cloud = _scene()[None].repeat(3, 1, 1)
    target = torch.tensor([[0.5, 0.0, 0.02], [0.5, 0.0, 0.02], [math.nan] * 3])
    out = add_distractor_copies(cloud, target, 1.0, torch.Generator().manual_seed(1))
    assert out.shape == cloud.shape and not torch.equal(out, cloud)
    for i in range(2):
        assert torch.equal(out[i, :30], cloud[i, :30])  # the cube itself stays
        moved = ~(out[i] == cloud[i]).all(dim=-1)
        assert int(moved.sum()) == 30  # one copy of the cube's 30 points, nothing else touched
        centre = out[i, moved].mean(dim=0)
        d = float((centre[:2] - torch.tensor([0.5, 0.0])).norm())
        assert COPY_DISTANCE[0] - 0.01 <= d <= COPY_DISTANCE[1] + 0.01
        assert abs(float(centre[2]) - float(cloud[i, :30, 2].mean())) < 1e-6  # same height: a twin
    assert torch.equal(out[2], cloud[2])  # no contact ahead: nothing to copy
    assert torch.equal(add_distractor_copies(cloud, target, 0.0, torch.Generator()), cloud)
