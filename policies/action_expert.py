"""The action expert: a point-cloud- and waypoint-conditioned diffusion policy over action chunks.

Conditioning (generalizable_action_expert_waypoints.md eq. 1–2): f = MLP(state) ⊕ MLP(guidance) ⊕
PointNet(cloud), the PointNet being DP3's lightweight encoder (per-point MLP with LayerNorm, max-pool,
projection). In stage-1 pre-training the cloud feature is replaced by a learned mask token. With
``lang_dim > 0`` an MLP(instruction feature) joins the condition (LA4VLA language-action pre-training);
a model with language run without an instruction gets a zero feature, i.e. "no instruction". The
denoiser is a 1-D temporal U-Net whose residual blocks are FiLM-modulated by f ⊕ diffusion-step
embedding (Diffusion Policy / DP3). DDPM noise schedule for training, DDIM for few-step inference,
both from diffusers.

Pose vectors everywhere are 10-D: xyz + rot6d + gripper (policies/geometry.py explains rot6d).

Size (~670 lines): the model (config, encoders, U-Net, heads) and its sampling loop, which
must change together when a checkpoint field changes; training is in policies/train.py.
"""
from __future__ import annotations

import math
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from policies.geometry import farthest_point_sample, pose7_to_9, pose9_to_7
from policies.normalize import MinMaxNormalizer

POSE_DIM = 10  # xyz + rot6d + gripper
CHECKPOINT_FORMAT = "actstudio.action_expert"
CHECKPOINT_VERSION = 1


@dataclass
class ExpertConfig:
    horizon: int = 16  # actions predicted per chunk
    n_action_steps: int = 8  # actions executed before re-planning
    n_obs: int = 1  # state history length
    n_guide: int = 4  # guidance poses, evenly spaced over guide_horizon_s ahead
    guide_horizon_s: float = 0.8
    rate_hz: float = 20.0  # control rate the chunk is sampled at
    n_points: int = 1024
    state_feat: int = 64
    guide_feat: int = 64
    cloud_feat: int = 64
    pointnet_dims: tuple[int, ...] = (64, 128, 256)
    # Small on purpose for the CPU budget (p99 < 30 ms per chunk at DDIM-10): unloaded, one traced
    # step of (32, 64, 128) took ~2.9 ms and of (32, 64) ~1.3 ms (bench/policy.py compares them).
    # DP3's (256, 512, 1024) is for GPUs; pass --unet-dims there.
    unet_dims: tuple[int, ...] = (32, 64)
    step_embed: int = 64
    kernel_size: int = 5
    n_groups: int = 8
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    # x0 ("sample") prediction, as DP3 ships it: on 2 synthetic demos it reached 15 mm median after 300
    # steps, epsilon prediction 270 mm after 200 (same model and data, DDIM-10). "epsilon" remains available.
    prediction_type: str = "sample"
    # Positions (state history, guidance, cloud, actions) relative to the arm's current position.
    # Measured on the 39 pick_cube demos after 500 fine-tuning steps: absolute actions missed the
    # demo's next 8 targets by 10-13 mm (xy median) with exact guidance — a small FiLM U-Net cannot
    # place an absolute coordinate to the millimetre — and a 4 cm cube needs better. Relative, the
    # network only has to reproduce the guidance's offset, and the same motion anywhere on the
    # table is one pattern. Checkpoints without this key are absolute (older runs).
    relative: bool = True
    # Instruction-feature size (policies/text.py DIM = 384); 0 = no language input, as in checkpoints
    # saved before this field existed, which therefore load unchanged.
    lang_dim: int = 0
    lang_feat: int = 64
    # Metres; > 0 adds a second PointNet over the cloud points within this radius of the guidance's
    # last pose, in coordinates relative to that pose. The global max-pooled feature did not place a
    # 4 cm cube to the ~1 cm a grasp needs (bench/expert_guidance_probe.py); seen from the waypoint,
    # the object's offset is what corrects an imprecise waypoint. 0 = off (and in older checkpoints).
    cloud_focus: float = 0.0
    # > 0: a keypoint head (``CloudKeypointHead``) finds, from the cloud, where the next gripper
    # change happens (the grasp, the release); its position relative to the arm and to the guidance's
    # last pose, through an MLP of this width, joins the condition. Trained with an auxiliary loss
    # against the demo's own next gripper-change position (``Windows.target``). Why: the max-pooled
    # PointNet feature placed the cube to only ~1.8 cm; a per-point softmax over the cloud is
    # translation-equivariant (move the cube, the keypoint moves with it), which a 99-demo data set
    # cannot teach a global feature. 0 = off (and in older checkpoints).
    keypoint_feat: int = 0
    keypoint_width: int = 64
    # With a keypoint head and x0 prediction: the predicted chunk positions get g_h · keypoint added,
    # g_h = sigmoid(Linear(condition)) per chunk step (starts near 0). A FiLM U-Net reproduces a
    # conditioning offset only to ~1 cm (bench/expert_guidance_probe.py: 0.9-1.1 cm chunk-end error
    # with the keypoint head at 0.3 cm), so the approach overshot the grasp height by 2-3 cm in closed
    # loop; with the skip the network only predicts the residual from the keypoint where it gates it in.
    keypoint_skip: bool = False

    def __post_init__(self) -> None:
        # Checked here, not in the model: `train expert` builds the config before loading (and
        # back-projecting) the episodes, so a bad flag combination fails at once.
        if self.keypoint_skip and self.keypoint_feat <= 0:
            raise ValueError("keypoint_skip needs a keypoint head (keypoint_feat > 0, --keypoint-feat D)")
        if self.keypoint_skip and self.prediction_type != "sample":
            raise ValueError("keypoint_skip needs prediction_type 'sample' (x0)")

    @property
    def cond_dim(self) -> int:
        return (self.state_feat + self.guide_feat + self.cloud_feat * (2 if self.cloud_focus > 0 else 1)
                + (self.lang_feat if self.lang_dim > 0 else 0) + self.keypoint_feat)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pointnet_dims"] = list(self.pointnet_dims)
        d["unet_dims"] = list(self.unet_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExpertConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown action-expert config keys: {sorted(unknown)}")
        d = dict(d)
        d.setdefault("relative", False)  # saved before the relative frame existed
        for k in ("pointnet_dims", "unet_dims"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000.0) / (half - 1)))
        ang = t.float()[:, None] * freqs[None]
        return torch.cat([ang.sin(), ang.cos()], dim=-1)


class PointNetEncoder(nn.Module):
    """DP3's encoder: shared per-point MLP (Linear → LayerNorm → ReLU), max-pool, projection + LN."""

    def __init__(self, in_dim: int = 3, dims: tuple[int, ...] = (64, 128, 256), out_dim: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for d in dims:
            layers += [nn.Linear(prev, d), nn.LayerNorm(d), nn.ReLU()]
            prev = d
        self.mlp = nn.Sequential(*layers)
        self.proj = nn.Sequential(nn.Linear(prev, out_dim), nn.LayerNorm(out_dim))

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, 3) -> (B, out_dim); ``mask`` (B, N) bool keeps only those points in the max-pool (a
        cloud with none left pools to zeros)."""
        f = self.mlp(points)
        if mask is None:
            return self.proj(f.max(dim=1).values)
        pooled = f.masked_fill(~mask[..., None], float("-inf")).max(dim=1).values
        return self.proj(torch.where(mask.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled)))


class CloudKeypointHead(nn.Module):
    """CLAP-style coarse keypoint (as policies/keypoints.py, xyz only): a segmentation-form PointNet
    (per-point MLP ⊕ its max-pool) gives every point a heat logit and an offset; the keypoint is
    Σ softmax(heat)_i · (p_i + offset_i). Inputs are metres relative to the arm and to the guidance's
    last pose, so the head sees the same pattern wherever the object stands on the table."""

    SCALE = 0.2  # m per unit of the inputs
    OFFSET = 0.1  # m per unit of the offset output

    def __init__(self, width: int = 64):
        super().__init__()
        w = width
        self.local = nn.Sequential(nn.Linear(6, w), nn.LayerNorm(w), nn.ReLU(), nn.Linear(w, w), nn.LayerNorm(w),
                                   nn.ReLU(), nn.Linear(w, w))
        self.glob = nn.Sequential(nn.ReLU(), nn.Linear(w, w), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * w, w), nn.ReLU(), nn.Linear(w, 4))

    def forward(self, cloud: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """cloud (B, N, 3) and target (B, 3), metres in one frame (the arm's) → keypoint (B, 3) in
        that frame, heat (B, N), offset (B, N, 3)."""
        x = torch.cat([cloud, cloud - target[:, None]], dim=-1) / self.SCALE
        loc = self.local(x)
        g = self.glob(loc.max(dim=1).values)
        out = self.head(torch.cat([loc, g[:, None].expand(-1, loc.shape[1], -1)], dim=-1))
        heat, offset = out[..., 0], out[..., 1:] * self.OFFSET
        keypoint = (torch.softmax(heat, dim=1)[..., None] * (cloud + offset)).sum(1)
        return {"keypoint": keypoint, "heat": heat, "offset": offset}


def coarse_keypoint_terms(out: dict, cloud: torch.Tensor, target: torch.Tensor, sigma: float, z_weight: float,
                          k: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLAP's coarse-branch loss terms for a heat + offset keypoint (``out``: heat (B, N), offset (B, N, 3),
    keypoint (B, 3); metres): cross-entropy of the heat against a Gaussian (σ ``sigma``, height weighted
    by ``z_weight`` — a target in the air lands on what is under it) around the target, L1 on the offsets
    of the ``k`` nearest points and on the fused keypoint, both in units of ``scale`` metres. Shared by
    policies/keypoints.py's predictor and the action expert's head."""
    w = cloud.new_tensor([1.0, 1.0, z_weight])
    d2 = (((cloud - target[:, None]) * w) ** 2).sum(-1)  # (B, N)
    # In log space, so far targets never underflow to zero everywhere.
    heat_t = torch.softmax(-d2 / (2 * sigma**2), dim=1)
    ce = -(heat_t * torch.log_softmax(out["heat"], dim=1)).sum(1).mean()
    near = d2.topk(min(k, cloud.shape[1]), dim=1, largest=False).indices[..., None].expand(-1, -1, 3)
    want = target[:, None] - torch.gather(cloud, 1, near)
    off = (torch.gather(out["offset"], 1, near) - want).abs().sum(-1).mean() / scale
    kp = (out["keypoint"] - target).abs().sum(-1).mean() / scale
    return ce, off, kp


def keypoint_aux_loss(out: dict, cloud: torch.Tensor, target: torch.Tensor, sigma: float = 0.02,
                      z_weight: float = 0.3, k: int = 16) -> torch.Tensor:
    """The expert's keypoint-head loss: :func:`coarse_keypoint_terms` summed, L1 terms per ``sigma``."""
    return sum(coarse_keypoint_terms(out, cloud, target, sigma, z_weight, k, scale=sigma))


class Conv1dBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, groups: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(cin, cout, k, padding=k // 2), nn.GroupNorm(groups, cout), nn.Mish())

    def forward(self, x):
        return self.block(x)


class FiLMResBlock(nn.Module):
    """Two conv blocks; the condition sets a per-channel scale and bias between them (FiLM)."""

    def __init__(self, cin: int, cout: int, cond_dim: int, k: int, groups: int):
        super().__init__()
        self.b1 = Conv1dBlock(cin, cout, k, groups)
        self.b2 = Conv1dBlock(cout, cout, k, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, cond):
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.b1(x) * (1 + scale) + bias
        return self.b2(h) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Temporal U-Net over the action chunk (B, H, D), conditioned globally via FiLM."""

    def __init__(self, action_dim: int, cond_dim: int, dims: tuple[int, ...], step_embed: int,
                 k: int, groups: int):
        super().__init__()
        self.step_encoder = nn.Sequential(SinusoidalEmbedding(step_embed), nn.Linear(step_embed, 4 * step_embed),
                                          nn.Mish(), nn.Linear(4 * step_embed, step_embed))
        c = cond_dim + step_embed
        chans = [action_dim, *dims]
        pairs = list(zip(chans[:-1], chans[1:]))
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([FiLMResBlock(a, b, c, k, groups), FiLMResBlock(b, b, c, k, groups),
                                            nn.Conv1d(b, b, 3, 2, 1) if not last else nn.Identity()]))
        self.mid = nn.ModuleList([FiLMResBlock(dims[-1], dims[-1], c, k, groups) for _ in range(2)])
        self.up = nn.ModuleList()
        # Every up level doubles the length back; the finest skip is not concatenated (as in
        # Diffusion Policy), the final conv block works at full resolution instead.
        for a, b in reversed(pairs[1:]):
            self.up.append(nn.ModuleList([FiLMResBlock(2 * b, a, c, k, groups), FiLMResBlock(a, a, c, k, groups),
                                          nn.ConvTranspose1d(a, a, 4, 2, 1)]))
        self.final = nn.Sequential(Conv1dBlock(dims[0], dims[0], k, groups), nn.Conv1d(dims[0], action_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = torch.cat([self.step_encoder(t), cond], dim=-1)
        h = x.transpose(1, 2)
        skips = []
        for r1, r2, down in self.down:
            h = r2(r1(h, c), c)
            skips.append(h)
            h = down(h)
        for r in self.mid:
            h = r(h, c)
        for r1, r2, up in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(r2(r1(h, c), c))
        return self.final(h).transpose(1, 2)


def _mlp(din: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, dout), nn.ReLU(), nn.Linear(dout, dout))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class ActionExpert(nn.Module):
    def __init__(self, config: ExpertConfig | None = None, normalizer: MinMaxNormalizer | None = None):
        super().__init__()
        self.config = cfg = config or ExpertConfig()
        if cfg.horizon % (2 ** (len(cfg.unet_dims) - 1)):
            raise ValueError(f"horizon {cfg.horizon} must be divisible by 2^{len(cfg.unet_dims) - 1} for the U-Net")
        self.normalizer = normalizer
        self.state_mlp = _mlp(cfg.n_obs * POSE_DIM, cfg.state_feat)
        self.guide_mlp = _mlp(cfg.n_guide * POSE_DIM, cfg.guide_feat)
        self.pointnet = PointNetEncoder(3, cfg.pointnet_dims, cfg.cloud_feat)
        # Stands in for the cloud feature when there is no cloud (stage-1 pre-training, cloud-free runs).
        self.cloud_mask_token = nn.Parameter(torch.zeros(cfg.cloud_feat))
        if cfg.cloud_focus > 0:
            self.pointnet_focus = PointNetEncoder(3, cfg.pointnet_dims, cfg.cloud_feat)
            self.focus_mask_token = nn.Parameter(torch.zeros(cfg.cloud_feat))
        self.lang_mlp = _mlp(cfg.lang_dim, cfg.lang_feat) if cfg.lang_dim > 0 else None
        if cfg.keypoint_feat > 0:
            self.keypoint_head = CloudKeypointHead(cfg.keypoint_width)
            self.keypoint_mlp = _mlp(6, cfg.keypoint_feat)
            self.keypoint_mask_token = nn.Parameter(torch.zeros(cfg.keypoint_feat))
            if cfg.keypoint_skip:
                self.keypoint_gate = nn.Linear(cfg.cond_dim, cfg.horizon)
                nn.init.zeros_(self.keypoint_gate.weight)
                nn.init.constant_(self.keypoint_gate.bias, -4.0)
        self.unet = ConditionalUnet1D(POSE_DIM, cfg.cond_dim, cfg.unet_dims, cfg.step_embed, cfg.kernel_size, cfg.n_groups)
        sched = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                     clip_sample=True, prediction_type=cfg.prediction_type)
        self.train_scheduler = DDPMScheduler(**sched)
        self.infer_scheduler = DDIMScheduler(**sched, set_alpha_to_one=True, steps_offset=0)

    # -- normalisation -------------------------------------------------------------------------
    def _norm(self) -> MinMaxNormalizer:
        if self.normalizer is None:
            raise RuntimeError("the action expert has no normaliser; fit one on the training data first")
        return self.normalizer

    def origin(self, state: torch.Tensor) -> torch.Tensor | None:
        """(B, 3) the current arm position every position is taken relative to, or None (absolute)."""
        return state[:, -1, :3] if self.config.relative else None

    @staticmethod
    def shift(x: torch.Tensor, origin: torch.Tensor | None, sign: float = -1.0) -> torch.Tensor:
        """x (B, K, ≥3) with ``sign * origin`` added to its xyz (no copy when absolute)."""
        if origin is None:
            return x
        out = x.clone()
        out[..., :3] = out[..., :3] + sign * origin[:, None, :].to(x.dtype)
        return out

    def _normalize_inputs(self, state, guide, cloud):
        n = self._norm()
        o = self.origin(state)
        state = n.normalize(self.shift(state, o))
        guide = n.normalize(self.shift(guide, o))
        cloud = None if cloud is None else n.normalize(self.shift(cloud, o), slice(0, 3))
        return state, guide, cloud

    # -- conditioning --------------------------------------------------------------------------
    def keypoint(self, guide: torch.Tensor, cloud: torch.Tensor) -> dict[str, torch.Tensor]:
        """The keypoint head on normalised guidance and cloud; its outputs are metres in the model's
        frame (relative to the arm, or the base frame for an absolute model)."""
        n = self._norm()
        cloud_m = n.unnormalize(cloud, slice(0, 3))
        return self.keypoint_head(cloud_m, n.unnormalize(guide[:, -1, :3], slice(0, 3)))

    def _keypoint_feature(self, guide: torch.Tensor, keypoint: torch.Tensor, has_cloud) -> torch.Tensor:
        n = self._norm()
        # Where the keypoint is from the arm (the frame's origin in a relative model) and from where
        # the guidance is heading.
        g = n.unnormalize(guide[:, -1, :3], slice(0, 3))
        f = self.keypoint_mlp(torch.cat([keypoint, keypoint - g], dim=-1) / CloudKeypointHead.SCALE)
        token = self.keypoint_mask_token.expand(f.shape[0], -1)
        return f if has_cloud is None else torch.where(has_cloud[:, None], f, token)

    def encode(self, state: torch.Tensor, guide: torch.Tensor, cloud: torch.Tensor | None,
               has_cloud: torch.Tensor | None = None, lang: torch.Tensor | None = None,
               keypoint: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised inputs → condition vector. ``has_cloud`` (B,) bool selects per sample between the
        PointNet feature and the mask token; None means "all" if a cloud is given, else "none".
        ``lang`` (B, lang_dim) instruction features; ignored by a model without language, zeros when
        a model with language gets none. ``keypoint`` (B, 3): the keypoint head's output (metres, see
        ``keypoint``) when the caller already ran it; computed here otherwise."""
        b = state.shape[0]
        fs = self.state_mlp(state.reshape(b, -1))
        fg = self.guide_mlp(guide.reshape(b, -1))
        token = self.cloud_mask_token.expand(b, -1)
        if cloud is None or (has_cloud is not None and not bool(has_cloud.any())):
            fc = token
            if self.config.cloud_focus > 0:
                fc = torch.cat([fc, self.focus_mask_token.expand(b, -1)], dim=-1)
        else:
            fc = self.pointnet(cloud)
            if has_cloud is not None:
                fc = torch.where(has_cloud[:, None], fc, token)
            if self.config.cloud_focus > 0:
                fc = torch.cat([fc, self._focus_feature(guide, cloud, has_cloud)], dim=-1)
        parts = [fs, fg, fc]
        if self.lang_mlp is not None:
            if lang is None:
                lang = state.new_zeros(b, self.config.lang_dim)
            parts.append(self.lang_mlp(lang.reshape(b, -1).to(state.dtype)))
        if self.config.keypoint_feat > 0:
            if cloud is None or (has_cloud is not None and not bool(has_cloud.any())):
                parts.append(self.keypoint_mask_token.expand(b, -1))
            else:
                if keypoint is None:
                    keypoint = self.keypoint(guide, cloud)["keypoint"]
                parts.append(self._keypoint_feature(guide, keypoint, has_cloud))
        return torch.cat(parts, dim=-1)

    def _focus_feature(self, guide: torch.Tensor, cloud: torch.Tensor, has_cloud: torch.Tensor | None) -> torch.Tensor:
        """PointNet feature of the (normalised) cloud around the (normalised) guidance's last pose, the
        points in metres from it scaled by the focus radius."""
        r = self.config.cloud_focus
        half = self._norm().half_range[:3].to(cloud)
        local = (cloud - guide[:, -1:, :3]) * half / r
        mask = (local * local).sum(-1) <= 1.0
        f = self.pointnet_focus(local, mask)
        token = self.focus_mask_token.expand(f.shape[0], -1)
        return f if has_cloud is None else torch.where(has_cloud[:, None], f, token)

    def _keypoint_skip(self, pred: torch.Tensor, cond: torch.Tensor, keypoint: torch.Tensor | None,
                       has_cloud: torch.Tensor | None = None) -> torch.Tensor:
        """x0 prediction (normalised) + gate · keypoint (metres → normalised scale; the centre cancels).
        Samples without a cloud (``has_cloud`` False) get nothing added: their keypoint is meaningless."""
        if not self.config.keypoint_skip or keypoint is None:
            return pred
        gate = torch.sigmoid(self.keypoint_gate(cond))  # (B, H)
        if has_cloud is not None:
            gate = gate * has_cloud[:, None].to(gate)
        add = gate[..., None] * (keypoint / self._norm().half_range[:3].to(keypoint))[:, None]
        return torch.cat([pred[..., :3] + add, pred[..., 3:]], dim=-1)

    # -- training ------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor], goal_noise: float = 0.1,
                     keypoint_weight: float = 0.1) -> torch.Tensor:
        """DDPM ε-prediction (or x0 if configured) L2 loss on a batch of raw (unnormalised) arrays:
        state (B, n_obs, 10), guide (B, n_guide, 10), action (B, H, 10), optional cloud (B, N, 3),
        has_cloud (B,), lang (B, lang_dim) and target (B, 3) (the next gripper-change position, NaN
        where none follows). Gaussian noise of std ``goal_noise`` (normalised units) perturbs the guidance
        poses, standing in for imprecise waypoints at run time (paper §4.5.2). A model with a keypoint
        head adds ``keypoint_weight`` × its auxiliary loss on the samples with a cloud and a target."""
        state, guide, cloud = self._normalize_inputs(batch["state"], batch["guide"], batch.get("cloud"))
        origin = self.origin(batch["state"])
        action = self._norm().normalize(self.shift(batch["action"], origin))
        if goal_noise > 0:
            noise = torch.randn_like(guide) * goal_noise
            noise[..., 9:] = 0  # the gripper command is discrete; only the pose is imprecise
            guide = guide + noise
        has_cloud = batch.get("has_cloud")
        kp_out, aux = None, None
        if self.config.keypoint_feat > 0 and cloud is not None:
            kp_out = self.keypoint(guide, cloud)
            target = batch.get("target")
            if target is not None and keypoint_weight > 0:
                target = target if origin is None else target - origin
                ok = torch.isfinite(target).all(-1)
                if has_cloud is not None:
                    ok &= has_cloud
                if bool(ok.any()):
                    sel = {k: v[ok] for k, v in kp_out.items()}
                    cloud_m = self._norm().unnormalize(cloud[ok], slice(0, 3))
                    aux = keypoint_aux_loss(sel, cloud_m, target[ok])
        cond = self.encode(state, guide, cloud, has_cloud, batch.get("lang"),
                           keypoint=None if kp_out is None else kp_out["keypoint"])
        eps = torch.randn_like(action)
        t = torch.randint(0, self.config.num_train_timesteps, (action.shape[0],), device=action.device)
        noisy = self.train_scheduler.add_noise(action, eps, t)
        pred = self._keypoint_skip(self.unet(noisy, t, cond), cond, None if kp_out is None else kp_out["keypoint"],
                                   has_cloud)
        target = eps if self.config.prediction_type == "epsilon" else action
        loss = F.mse_loss(pred, target)
        return loss if aux is None else loss + keypoint_weight * aux

    def forward(self, batch: dict[str, torch.Tensor], goal_noise: float = 0.1,
                keypoint_weight: float = 0.1) -> torch.Tensor:
        # The training loss is the forward pass so DistributedDataParallel's hooks wrap it.
        return self.compute_loss(batch, goal_noise, keypoint_weight)

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, state: torch.Tensor, guide: torch.Tensor, cloud: torch.Tensor | None = None,
               has_cloud: torch.Tensor | None = None, steps: int = 10,
               generator: torch.Generator | None = None, denoiser=None,
               lang: torch.Tensor | None = None, extras: dict | None = None) -> torch.Tensor:
        """Raw inputs → raw action chunks (B, H, 10) by ``steps`` DDIM steps. ``denoiser`` replaces
        ``self.unet`` (e.g. a traced, frozen copy for low-latency CPU inference). ``lang`` (B, lang_dim)
        instruction features (see ``encode``). A dict passed as ``extras`` receives "keypoint" (B, 3),
        base frame, from a model with a keypoint head and a cloud."""
        denoiser = denoiser or self.unet
        origin = self.origin(state)
        state, guide, cloud = self._normalize_inputs(state, guide, cloud)
        kp = None
        if self.config.keypoint_feat > 0 and cloud is not None:
            kp = self.keypoint(guide, cloud)["keypoint"]
            if extras is not None:
                extras["keypoint"] = kp if origin is None else kp + origin
        cond = self.encode(state, guide, cloud, has_cloud, lang, keypoint=kp)
        b = state.shape[0]
        x = torch.randn((b, self.config.horizon, POSE_DIM), generator=generator, device="cpu").to(state.device)
        sched = self.infer_scheduler
        sched.set_timesteps(steps)
        for t in sched.timesteps:
            tt = t.expand(b).to(state.device)
            x = sched.step(self._keypoint_skip(denoiser(x, tt, cond), cond, kp, has_cloud), t, x).prev_sample
        return self.shift(self._norm().unnormalize(x), origin, +1.0)

    # -- persistence ---------------------------------------------------------------------------
    def checkpoint_dict(self, extra: dict | None = None) -> dict:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": self.config.to_dict(),
                "normalizer": self._norm().state_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                **(extra or {})}

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """torch.save of plain data (config dict, tensors, normaliser stats); written to a temporary
        name first so a crash mid-write never leaves a truncated checkpoint under the real name."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.checkpoint_dict(extra), tmp)
        tmp.replace(path)
        return path

    @staticmethod
    def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint")
        try:
            ck = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises many kinds for a corrupt file
            raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not an action-expert checkpoint (format field missing or wrong)")
        if ck.get("version", 0) > CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {ck['version']} is newer than this code ({CHECKPOINT_VERSION})")
        return ck

    @classmethod
    def from_checkpoint_dict(cls, ck: dict) -> "ActionExpert":
        model = cls(ExpertConfig.from_dict(ck["config"]), MinMaxNormalizer.from_state_dict(ck["normalizer"]))
        model.load_state_dict(ck["state_dict"])
        return model

    @classmethod
    def load(cls, path: str | Path, map_location: Any = "cpu") -> "ActionExpert":
        model = cls.from_checkpoint_dict(cls.read_checkpoint(path, map_location))
        return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()


# --------------------------------------------------------------------------------------------
# Runtime API for rollouts
# --------------------------------------------------------------------------------------------


@dataclass
class ActionChunk:
    poses: np.ndarray  # (H, 7) absolute EE targets, xyz + quat xyzw, base frame
    gripper: np.ndarray  # (H,) 0 closed … 1 open
    valid: bool
    reason: str = ""  # "" when valid; "nan" when the network produced non-finite values
    latency_s: float = 0.0
    n_execute: int = 8  # how many of the H actions to execute before asking again
    extra: dict = field(default_factory=dict)


def state_vector(state: Any) -> np.ndarray:
    """ArmState-like (``ee_pose`` + ``gripper``) or an array (8,) pose7 + gripper → (10,)."""
    if hasattr(state, "ee_pose"):
        pose, grip = np.asarray(state.ee_pose, dtype=np.float64), float(state.gripper)
    else:
        arr = np.asarray(state, dtype=np.float64).reshape(-1)
        if arr.shape != (8,):
            raise ValueError(f"state must be an ArmState or 8 numbers (xyz, quat xyzw, gripper), got shape {arr.shape}")
        pose, grip = arr[:7], float(arr[7])
    return np.concatenate([pose7_to_9(pose), [grip]])


def guidance_vectors(guidance: np.ndarray, n_guide: int) -> np.ndarray:
    g = np.asarray(guidance, dtype=np.float64)
    if g.ndim != 2 or g.shape != (n_guide, 8):
        raise ValueError(f"guidance must be ({n_guide}, 8): poses xyz + quat xyzw + gripper "
                         f"(WaypointTrajectory.guidance(..., n={n_guide}, with_gripper=True)); got shape {g.shape}")
    return np.concatenate([pose7_to_9(g[:, :7]), g[:, 7:8]], axis=1)


class ExpertPolicy:
    """Loads a checkpoint and turns (state, cloud, guidance) into an action chunk.

    Non-finite inputs or outputs never reach the robot: the chunk comes back with ``valid`` False and a
    reason ("nan" for the network's output, "bad_input: …" for inputs) so the rollout runner can stop
    the trial.
    """

    def __init__(self, checkpoint: str | Path | ActionExpert, device: str = "cpu", ddim_steps: int = 10,
                 seed: int = 0, jit: bool = True):
        self.device = torch.device(device)
        self.model = (checkpoint if isinstance(checkpoint, ActionExpert)
                      else ActionExpert.load(checkpoint, map_location=self.device)).to(self.device).eval()
        self.config = self.model.config
        self.ddim_steps = int(ddim_steps)
        self.seed = seed
        self._denoiser = self._freeze_unet() if jit else None
        self._text = None
        self.reset()

    def _freeze_unet(self):
        # TorchScript trace + freeze removes Python dispatch per op and folds constants: the batch-1
        # U-Net step runs ~2x faster on CPU (bench/policy.py), which is what the 30 ms budget needs.
        cfg, m = self.config, self.model
        x = torch.zeros(1, cfg.horizon, POSE_DIM, device=self.device)
        t = torch.zeros(1, dtype=torch.long, device=self.device)
        c = torch.zeros(1, cfg.cond_dim, device=self.device)
        # TorchScript is deprecated in favour of torch.compile but still ships in 2.13; jit=False
        # falls back to eager. Its warnings (deprecation, GroupNorm's shape check traced as a
        # constant — the shapes are fixed at batch 1) say nothing the caller can act on.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.optimize_for_inference(torch.jit.trace(m.unet, (x, t, c)))

    def instruction_feature(self, instruction: str | None) -> torch.Tensor | None:
        """(1, lang_dim) sentence feature of ``instruction`` (policies.text, cached on disk and in
        memory); None for a model without language or when no instruction is given (→ zeros)."""
        if self.config.lang_dim <= 0 or instruction is None:
            return None
        if self._text is None:
            from policies.text import TextEncoder  # late: loading the sentence model costs seconds

            self._text = TextEncoder()
        v = self._text.encode_one(instruction)
        if v.shape != (self.config.lang_dim,):
            raise ValueError(f"instruction feature has {v.shape[0]} dims but the checkpoint expects "
                             f"{self.config.lang_dim}")
        return torch.as_tensor(v, dtype=torch.float32, device=self.device)[None]

    def reset(self) -> None:
        self._history: deque[np.ndarray] = deque(maxlen=self.config.n_obs)
        self._gen = torch.Generator().manual_seed(self.seed)

    def _invalid(self, reason: str, t0: float) -> ActionChunk:
        h = self.config.horizon
        return ActionChunk(np.full((h, 7), np.nan), np.full(h, np.nan), False, reason,
                           time.perf_counter() - t0, self.config.n_action_steps)

    def act(self, state: Any, cloud: np.ndarray | None, guidance: np.ndarray,
            instruction: str | None = None) -> ActionChunk:
        """``instruction``: the step's text for a checkpoint trained with language (lang_dim > 0);
        ignored otherwise. Without one such a model sees a zero feature ("no instruction")."""
        t0 = time.perf_counter()
        cfg = self.config
        s = state_vector(state)
        g = guidance_vectors(guidance, cfg.n_guide)
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(g))):
            return self._invalid("bad_input: state or guidance is not finite", t0)
        self._history.append(s)
        while len(self._history) < cfg.n_obs:  # first call: repeat the current state as history
            self._history.appendleft(s)
        cloud_t = None
        if cloud is not None:
            c = np.asarray(cloud, dtype=np.float32)[:, :3]
            if not np.all(np.isfinite(c)):
                return self._invalid("bad_input: cloud is not finite", t0)
            if len(c) != cfg.n_points:
                c = farthest_point_sample(c, cfg.n_points)
            cloud_t = torch.from_numpy(c)[None].to(self.device)
        st = torch.as_tensor(np.stack(self._history), dtype=torch.float32, device=self.device)[None]
        gt = torch.as_tensor(g, dtype=torch.float32, device=self.device)[None]
        extras: dict = {}
        out = self.model.sample(st, gt, cloud_t, steps=self.ddim_steps, generator=self._gen,
                                denoiser=self._denoiser, lang=self.instruction_feature(instruction),
                                extras=extras)[0].cpu().numpy()
        if not np.all(np.isfinite(out)):
            return self._invalid("nan", t0)
        poses = pose9_to_7(out[:, :9].astype(np.float64))
        extra = {k: v[0].cpu().numpy().astype(np.float64) for k, v in extras.items()}
        return ActionChunk(poses, np.clip(out[:, 9], 0.0, 1.0), True, "", time.perf_counter() - t0,
                           cfg.n_action_steps, extra)
