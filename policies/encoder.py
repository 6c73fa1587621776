"""RoboAct-CLIP atomic-action encoder (roboact_clip_encoder.md §II.B), sized for a CPU.

frames (B, n=16, 3, H, W) uint8
  → frame backbone → F_1..F_n                      (small CNN trained here, or a frozen local CLIP)
  → ΔF_i = F_i − F_{i−1} → transformer with learned relative-position bias → Tem (last output)
  → F_v = MLP([Tem; F_n − F_1; F_1; F_n])          (ablation "no temporal": MLP([F_1; F_n]))
  → self-attention → subject / action / object heads (ablation "no disentangle": one projection of F_v)
Text: packaged MiniLM sentence vectors (policies/text.py) → three text heads.

Losses, each switchable: CLIP contrastive between the concatenated heads, orthogonality + L2 on the
visual heads, feature-bank recombination, auxiliary classifiers (eq. 11–24).

Departures from the paper, and why:
- Eq. 9 applies multi-head attention to the single vector F_v, where softmax over one key is the
  identity; here F_v is projected to a few tokens that attend to each other, then averaged.
- Eq. 11 as printed (a negative mean cosine) would *reward* similar heads; the text asks to minimise
  similarity, so the loss is the mean |cos| between head pairs.
- Captions repeat within a batch (a few dozen primitive × object captions), so the contrastive
  loss scores each clip against the batch's *distinct* captions instead of treating identical captions
  of other clips as negatives.
- Bank entries of classes present in the batch are the live (differentiable) batch means, so the
  recombination loss trains the visual heads; other classes use the stored, detached features.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from recorder.primitives import caption

# CLIP's published pixel statistics (OpenAI ViT); used when a CLIP checkpoint is the backbone.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class EncoderError(ValueError):
    """Bad encoder input, config or checkpoint (one-line message)."""


@dataclass
class EncoderConfig:
    actions: list[str]
    objects: list[str]
    subjects: list[str] = field(default_factory=lambda: ["robot"])
    backbone: str = "cnn"  # "cnn" or a folder with a transformers CLIP checkpoint (used frozen)
    frame_size: tuple[int, int] = (48, 64)  # (H, W): 16 frames × batch through a CNN is the CPU cost
    crop: tuple[float, float, float, float] | None = None  # (top, bottom, left, right) fractions, as the clips
    n_frames: int = 16
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_tokens: int = 4  # tokens F_v is split into for the self-attention of eq. 9
    embed_dim: int = 64  # per semantic head; the joint embedding is 3× this
    text_dim: int = 384
    temporal: bool = True  # ablation 1 when False
    disentangle: bool = True  # ablation 2 when False
    contrastive: bool = True
    ortho: bool = True  # orthogonality + L2 (eq. 11–12)
    recomb: bool = True
    aux: bool = True
    lambda_ortho: float = 1.0
    lambda_recomb: float = 1.0
    lambda_disent: float = 0.5
    lambda_aux: float = 1.0
    l2_weight: float = 0.01
    bank_every: int = 1  # "Setting_Step": bank refresh interval in training steps
    tau: float = 0.07  # initial temperature; learned like CLIP's logit scale
    # Sentence vectors of the candidate captions minus their mean, scaled to unit mean norm, go into the
    # text heads. The captions share most words ("Robot … red cube, action is …", cosine 0.7–0.85), so
    # raw vectors start the text heads with near-identical outputs and the contrastive loss stalls.
    center_text: bool = True

    def __post_init__(self):
        self.frame_size = tuple(int(v) for v in self.frame_size)
        self.crop = tuple(float(v) for v in self.crop) if self.crop else None
        if not self.actions or not self.objects or not self.subjects:
            raise EncoderError("encoder vocabulary needs at least one action, object and subject")
        if self.n_frames < 2:
            raise EncoderError("the temporal encoder needs at least 2 frames per clip")
        if not (self.contrastive or self.aux):
            raise EncoderError("enable the contrastive loss or the auxiliary classifiers: nothing to train on")

    @property
    def active_losses(self) -> list[str]:
        out = ["contrastive"] if self.contrastive else []
        if self.disentangle:
            out += [n for n in ("ortho", "recomb") if getattr(self, n)]
        return out + (["aux"] if self.aux else [])


# ------------------------------------------------------------------------------------------------
# Frame backbones
# ------------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Per-frame features from a 4-stage strided CNN (trained with the rest; ~0.1 M parameters)."""

    def __init__(self, d_model: int):
        super().__init__()
        chans = (3, 16, 32, 64, 128)
        layers = []
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers += [nn.Conv2d(a, b, 5 if i == 0 else 3, stride=2, padding=2 if i == 0 else 1),
                       nn.GroupNorm(8, b), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(chans[-1], d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N,3,H,W) in [0,1]
        x = (x - 0.45) / 0.25
        return self.proj(self.net(x).mean(dim=(2, 3)))


class ClipBackbone(nn.Module):
    """A frozen CLIP vision tower from a local transformers checkpoint folder + a trained projection.

    Only ``from_pretrained(..., local_files_only=True)``: a folder that is not complete fails here
    instead of reaching for the hub.
    """

    def __init__(self, path: str, d_model: int):
        super().__init__()
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError as exc:
            raise EncoderError("a CLIP backbone needs the transformers package") from exc
        if not Path(path).is_dir():
            raise EncoderError(f"CLIP backbone {path!r}: not a folder (give a saved transformers CLIP checkpoint)")
        try:
            self.clip = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"CLIP backbone {path!r}: cannot load ({str(exc).splitlines()[0]})") from None
        self.clip.eval().requires_grad_(False)
        self.image_size = int(self.clip.config.image_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.proj = nn.Linear(int(self.clip.config.projection_dim), d_model)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen, as in the paper: no dropout/statistics drift
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                          align_corners=False)
        with torch.no_grad():
            feats = self.clip(pixel_values=(x - self.mean) / self.std).image_embeds
        return self.proj(feats)


def make_backbone(cfg: EncoderConfig) -> nn.Module:
    return SmallCNN(cfg.d_model) if cfg.backbone == "cnn" else ClipBackbone(cfg.backbone, cfg.d_model)


# ------------------------------------------------------------------------------------------------
# Temporal difference transformer
# ------------------------------------------------------------------------------------------------


class RelPosSelfAttention(nn.Module):
    """Multi-head self-attention with a learned bias per head and relative offset (T5/Swin style)."""

    def __init__(self, d: int, heads: int, max_len: int):
        super().__init__()
        if d % heads:
            raise EncoderError(f"d_model {d} is not divisible by {heads} heads")
        self.heads, self.max_len = heads, max_len
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.rel_bias = nn.Parameter(torch.zeros(heads, 2 * max_len - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        pos = torch.arange(n, device=x.device)
        rel = pos[None, :] - pos[:, None] + self.max_len - 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.rel_bias[:, rel].unsqueeze(0))
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TemporalBlock(nn.Module):
    def __init__(self, d: int, heads: int, max_len: int):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = RelPosSelfAttention(d, heads, max_len)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.ff(self.n2(x))


class TemporalDiffTransformer(nn.Module):
    """ΔF_i = F_i − F_{i−1} (eq. 4) through the transformer (eq. 5); returns the last output (eq. 6)."""

    def __init__(self, d: int, heads: int, layers: int, n_frames: int):
        super().__init__()
        self.blocks = nn.ModuleList(TemporalBlock(d, heads, n_frames - 1) for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, n, d)
        x = feats[:, 1:] - feats[:, :-1]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, -1])


def mlp(a: int, b: int, hidden: int | None = None) -> nn.Sequential:
    hidden = hidden or max(a, b)
    return nn.Sequential(nn.Linear(a, hidden), nn.GELU(), nn.Linear(hidden, b))


# ------------------------------------------------------------------------------------------------
# The encoder
# ------------------------------------------------------------------------------------------------

SLOTS = ("subject", "object", "action")  # order of the concatenated embedding (eq. 23)


class RoboActCLIP(nn.Module):
    def __init__(self, cfg: EncoderConfig, candidate_text: torch.Tensor | np.ndarray | None = None):
        """``candidate_text`` (A·O, text_dim): sentence vectors of caption(action, object) for every
        vocabulary pair, row a·O + o — kept in the model so prediction needs no sentence encoder."""
        super().__init__()
        self.cfg = cfg
        d, e = cfg.d_model, cfg.embed_dim
        self.backbone = make_backbone(cfg)
        self.temporal = TemporalDiffTransformer(d, cfg.n_heads, cfg.n_layers, cfg.n_frames) if cfg.temporal else None
        self.fuse = mlp((4 if cfg.temporal else 2) * d, d)
        if cfg.disentangle:
            self.to_tokens = nn.Linear(d, cfg.n_tokens * d)
            self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, batch_first=True)
            self.attn_norm = nn.LayerNorm(d)
            self.heads = nn.ModuleDict({s: mlp(d, e) for s in SLOTS})
        else:
            self.video_proj = mlp(d, 3 * e)
        self.text_heads = nn.ModuleDict({s: mlp(cfg.text_dim, e, 256) for s in SLOTS})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.tau)))
        n_cls = {"subject": len(cfg.subjects), "object": len(cfg.objects), "action": len(cfg.actions)}
        self.classifiers = nn.ModuleDict({s: nn.Linear(d, n_cls[s]) for s in SLOTS}) if cfg.aux else None
        for s in SLOTS:  # feature banks (eq. 13–15) and which entries have been written
            self.register_buffer(f"bank_{s}", torch.zeros(n_cls[s], e))
            self.register_buffer(f"bank_{s}_filled", torch.zeros(n_cls[s], dtype=torch.bool))
        cand = torch.zeros(len(cfg.actions) * len(cfg.objects), cfg.text_dim)
        if candidate_text is not None:
            cand = torch.as_tensor(np.asarray(candidate_text), dtype=torch.float32)
            if cand.shape != (len(cfg.actions) * len(cfg.objects), cfg.text_dim):
                raise EncoderError(f"candidate_text has shape {tuple(cand.shape)}, expected "
                                   f"({len(cfg.actions) * len(cfg.objects)}, {cfg.text_dim})")
        self.register_buffer("candidate_text", cand)

    # -- vocabulary ---------------------------------------------------------------------------------

    def candidate_captions(self) -> list[str]:
        return [caption(a, o) for a in self.cfg.actions for o in self.cfg.objects]

    # -- forward ------------------------------------------------------------------------------------

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise EncoderError(f"frames must be (B, n, 3, H, W), got {tuple(frames.shape)}")
        if frames.shape[1] != self.cfg.n_frames:
            raise EncoderError(f"clips must have {self.cfg.n_frames} frames, got {frames.shape[1]}")
        b, n = frames.shape[:2]
        # A frame equal to its predecessor gets its predecessor's features instead of a second pass:
        # exact, and sim cameras starved of CPU repeat each image for ~4 of 16 clip frames on average.
        flat = frames.flatten(2)
        repeat = torch.zeros(b, n, dtype=torch.bool, device=frames.device)
        repeat[:, 1:] = (flat[:, 1:] == flat[:, :-1]).all(-1)
        new = ~repeat.flatten()
        x = frames.flatten(0, 1)[new]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        feats = self.backbone(x)
        return feats[torch.cumsum(new, 0) - 1].view(b, n, -1)

    def visual(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Visual features: ``heads`` {slot: (B,e)} when disentangled, ``video`` (B,3e), ``hidden`` (B,d)."""
        f = self.frame_features(frames)
        f1, fn = f[:, 0], f[:, -1]
        parts = [self.temporal(f), fn - f1, f1, fn] if self.temporal is not None else [f1, fn]
        fv = self.fuse(torch.cat(parts, dim=-1))  # eq. 8
        if not self.cfg.disentangle:
            return {"video": self.video_proj(fv), "hidden": fv, "heads": None}
        tok = self.to_tokens(fv).view(len(fv), self.cfg.n_tokens, -1)
        att, _ = self.self_attn(tok, tok, tok, need_weights=False)
        f_attn = self.attn_norm(tok + att).mean(dim=1)  # eq. 9
        heads = {s: self.heads[s](f_attn) for s in SLOTS}  # eq. 10
        return {"video": torch.cat([heads[s] for s in SLOTS], -1), "hidden": f_attn, "heads": heads}

    def text(self, text_vecs: torch.Tensor) -> torch.Tensor:
        """Sentence vectors (M, text_dim) → joint text embedding (M, 3e) (eq. 2)."""
        cand = self.candidate_text
        if self.cfg.center_text and len(cand) > 1:
            mu = cand.mean(0)
            text_vecs = (text_vecs - mu) / (cand - mu).norm(dim=1).mean().clamp_min(1e-6)
        return torch.cat([self.text_heads[s](text_vecs) for s in SLOTS], -1)

    # -- losses -------------------------------------------------------------------------------------

    def _contrastive(self, video: torch.Tensor, text_vecs: torch.Tensor, caption_ids: torch.Tensor):
        uniq, inv = torch.unique(caption_ids, return_inverse=True)
        first = torch.zeros(len(uniq), dtype=torch.long, device=video.device)
        first.scatter_(0, inv, torch.arange(len(inv), device=video.device))
        t = F.normalize(self.text(text_vecs[first]), dim=-1)
        logits = self.logit_scale.exp().clamp(max=100) * F.normalize(video, dim=-1) @ t.T  # (B, U)
        v2t = F.cross_entropy(logits, inv)
        # text → video: every clip with the caption is a positive, weighted equally.
        pos = (inv[None, :] == torch.arange(len(uniq), device=video.device)[:, None]).float()
        t2v = -(F.log_softmax(logits.T, dim=1) * pos / pos.sum(1, keepdim=True)).sum(1).mean()
        return 0.5 * (v2t + t2v)

    @staticmethod
    def _ortho_l2(heads: dict[str, torch.Tensor], l2_weight: float):
        s, o, a = (heads[k] for k in SLOTS)
        cos = (F.cosine_similarity(s, a, dim=-1).abs() + F.cosine_similarity(s, o, dim=-1).abs()
               + F.cosine_similarity(a, o, dim=-1).abs()) / 3
        l2 = l2_weight * (s.norm(dim=-1) + a.norm(dim=-1) + o.norm(dim=-1))
        return cos.mean(), l2.mean()

    @torch.no_grad()
    def update_banks(self, heads: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> None:
        """Eq. 16: each class present in the batch gets its last instance's feature."""
        for s in SLOTS:
            bank, filled = getattr(self, f"bank_{s}"), getattr(self, f"bank_{s}_filled")
            for i, c in enumerate(labels[s].tolist()):
                bank[c] = heads[s][i].detach()
                filled[c] = True

    def _recomb(self, heads, labels, n: int, generator: torch.Generator | None):
        """Eq. 17–19: recombined (subject, action, object) bank features vs. their captions' text."""
        live = {}
        for s in SLOTS:
            bank = getattr(self, f"bank_{s}").clone()
            filled = getattr(self, f"bank_{s}_filled").clone()
            y = labels[s]
            for c in torch.unique(y).tolist():
                bank[c] = heads[s][y == c].mean(0)
                filled[c] = True
            live[s] = (bank, filled)
        acts = torch.nonzero(live["action"][1]).flatten()
        objs = torch.nonzero(live["object"][1]).flatten()
        subs = torch.nonzero(live["subject"][1]).flatten()
        n_pairs = len(acts) * len(objs)
        if n_pairs < 2:
            return None  # one valid triplet: nothing to contrast against
        dev = acts.device
        pick = torch.randperm(n_pairs, generator=generator)[: min(n, n_pairs)].to(dev)
        a, o = acts[pick // len(objs)], objs[pick % len(objs)]
        s = subs[torch.randint(len(subs), (len(pick),), generator=generator).to(dev)]
        f = torch.cat([live["subject"][0][s], live["object"][0][o], live["action"][0][a]], -1)  # Combiner = concat
        t = F.normalize(self.text(self.candidate_text[a * len(self.cfg.objects) + o]), dim=-1)
        logits = self.logit_scale.exp().clamp(max=100) * F.normalize(f, dim=-1) @ t.T
        return F.cross_entropy(logits, torch.arange(len(pick), device=dev))

    def loss(self, frames: torch.Tensor, text_vecs: torch.Tensor, caption_ids: torch.Tensor,
             labels: dict[str, torch.Tensor], step: int = 0,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (eq. 24) for a batch and its parts. ``text_vecs`` (B, text_dim) per clip,
        ``caption_ids`` (B,) equal for equal captions, ``labels`` {slot: (B,) class index}."""
        cfg = self.cfg
        out = self.visual(frames)
        total = frames.new_zeros(())
        parts: dict[str, float] = {}
        if cfg.contrastive:
            lc = self._contrastive(out["video"], text_vecs, caption_ids)
            total = total + lc
            parts["contrastive"] = float(lc.detach())
        heads = out["heads"]
        if heads is not None:
            disent = frames.new_zeros(())
            if cfg.ortho:
                cos, l2 = self._ortho_l2(heads, cfg.l2_weight)
                disent = disent + cfg.lambda_ortho * (cos + l2)
                parts["ortho"], parts["l2"] = float(cos.detach()), float(l2.detach())
            if cfg.recomb:
                lr = self._recomb(heads, labels, len(frames), generator)
                if lr is not None:
                    disent = disent + cfg.lambda_recomb * lr
                    parts["recomb"] = float(lr.detach())
            total = total + cfg.lambda_disent * disent
            if self.training and step % cfg.bank_every == 0:
                self.update_banks(heads, labels)
        if self.classifiers is not None:
            la = sum(F.cross_entropy(self.classifiers[s](out["hidden"]), labels[s]) for s in SLOTS) / 3
            total = total + cfg.lambda_aux * la
            parts["aux"] = float(la.detach())
        parts["total"] = float(total.detach())
        return total, parts

    # -- prediction ---------------------------------------------------------------------------------

    @torch.no_grad()
    def action_probs(self, frames: torch.Tensor, method: str = "auto") -> torch.Tensor:
        """(B, A) probabilities over ``cfg.actions``.

        ``retrieval``: softmax of the clip's similarity to every caption(action, object), summed over
        objects (zero-shot CLIP style); ``classifier``: the auxiliary action classifier; ``auto``:
        their mean when both were trained, else whichever exists.
        """
        out = self.visual(frames)
        probs = []
        if method in ("retrieval", "auto") and self.cfg.contrastive:
            t = F.normalize(self.text(self.candidate_text), dim=-1)
            logits = self.logit_scale.exp().clamp(max=100) * F.normalize(out["video"], dim=-1) @ t.T
            p = logits.softmax(-1).view(len(frames), len(self.cfg.actions), len(self.cfg.objects)).sum(-1)
            probs.append(p)
        if method in ("classifier", "auto") and self.classifiers is not None:
            probs.append(self.classifiers["action"](out["hidden"]).softmax(-1))
        if not probs:
            raise EncoderError(f"prediction method {method!r} is not available for this checkpoint "
                               f"(losses: {', '.join(self.cfg.active_losses)})")
        return torch.stack(probs).mean(0)

    # -- checkpoints --------------------------------------------------------------------------------

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.clip.")}
        torch.save({"kind": "roboact_clip", "config": asdict(self.cfg), "state_dict": state, **(extra or {})}, tmp)
        tmp.replace(path)  # a crash mid-write never leaves a half checkpoint under the real name
        return path

    @staticmethod
    def read_checkpoint(path: str | Path) -> dict:
        try:
            ck = torch.load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise EncoderError(f"{path}: no such checkpoint") from None
        except Exception as exc:
            raise EncoderError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
        if not isinstance(ck, dict) or ck.get("kind") != "roboact_clip":
            raise EncoderError(f"{path}: not a RoboAct-CLIP encoder checkpoint")
        return ck

    @classmethod
    def from_checkpoint_dict(cls, ck: dict) -> "RoboActCLIP":
        # Checkpoints from before text centering existed were trained on raw sentence vectors.
        model = cls(EncoderConfig(**{"center_text": False, **ck["config"]}))
        # The frozen CLIP tower is not saved: it comes from its own folder.
        missing, unexpected = model.load_state_dict(ck["state_dict"], strict=False)
        missing = [k for k in missing if not k.startswith("backbone.clip.")]
        if missing or unexpected:
            raise EncoderError(f"checkpoint does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model

    @classmethod
    def load(cls, path: str | Path) -> "RoboActCLIP":
        return cls.from_checkpoint_dict(cls.read_checkpoint(path)).eval()
