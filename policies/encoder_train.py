"""Training and evaluation of the RoboAct-CLIP encoder on a clip folder (policies/clip_data.py).

Streams JSON lines like the expert trainer (``{"event": "start"|"step"|"epoch"|"checkpoint"|"done"|
"cancelled"|"error", ...}``, one flushed line each) so the Train tab can plot them; checkpoints at
every epoch end and on SIGINT/SIGTERM; ``resume`` continues a run with its optimiser and epoch.
Held-out evaluation splits whole episodes per task (ClipDataset.split_by_episode).
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from policies.clip_data import ClipDataset
from policies.encoder import SLOTS, EncoderConfig, RoboActCLIP
from recorder.primitives import PRIMITIVES, caption


@dataclass
class EncoderTrainConfig:
    out_dir: str = "runs/encoder"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    holdout: float = 0.25  # share of episodes per task held out for evaluation
    seed: int = 0
    augment: bool = True  # a random shift per clip (same for its 16 frames) + brightness jitter
    # Draw each epoch's clips with probability ∝ 1/(clips of their primitive): sim demos are ~37 % "move",
    # and unbalanced batches let every image variant settle on predicting "move" for everything.
    balance: bool = True
    log_every: int = 5
    # torch intra-op threads; 0 keeps torch's default. On a loaded small box 1 is ~10x cheaper in CPU
    # time than 2 (OpenMP workers spin while they wait for a core).
    threads: int = 0


@dataclass
class EncoderTrainResult:
    checkpoint: Path
    epochs_done: int
    steps: int
    seconds: float
    metrics: dict = field(default_factory=dict)
    cancelled: bool = False


class JsonProgress:
    """JSON lines (``json``), one human line per epoch (``text``) or nothing (``none``)."""

    def __init__(self, mode: str = "json", stream=None):
        if mode not in ("json", "text", "none"):
            raise ValueError(f"progress must be json | text | none, got {mode!r}")
        self.mode, self.stream = mode, stream or sys.stdout

    def emit(self, event: str, **fields) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        elif self.mode == "text" and event in ("start", "epoch", "done", "cancelled", "error"):
            body = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
                            if not isinstance(v, (dict, list)))
            self.stream.write(f"{event}: {body}\n")
        else:
            return
        self.stream.flush()


class _StopFlag:
    """SIGINT/SIGTERM end the run on a step boundary, with a checkpoint."""

    def __init__(self):
        self.set, self._old = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, lambda *_: setattr(self, "set", True))
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def vocabulary(data: ClipDataset) -> dict[str, list[str]]:
    v = data.vocab()
    order = {p: i for i, p in enumerate(PRIMITIVES)}
    v["action"] = sorted(v["action"], key=lambda p: order.get(p, len(order)))
    return v


def text_tables(data: ClipDataset, actions: list[str], objects: list[str], text_encoder=None):
    """(per-clip sentence vectors (N, D), candidate vectors (A·O, D)) from one encoder call."""
    if text_encoder is None:
        from policies.text import TextEncoder

        text_encoder = TextEncoder()
    cands = [caption(a, o) for a in actions for o in objects]
    clip_caps = [r.caption for r in data.records]
    uniq = sorted(set(cands) | set(clip_caps))
    vecs = text_encoder.encode(uniq)
    row = {t: i for i, t in enumerate(uniq)}
    return (torch.from_numpy(vecs[[row[c] for c in clip_caps]]),
            torch.from_numpy(vecs[[row[c] for c in cands]]))


def _augment(frames: torch.Tensor, gen: torch.Generator, shift: int = 3) -> torch.Tensor:
    x = frames.float()
    b, n, c, h, w = x.shape
    pad = torch.nn.functional.pad(x.flatten(0, 1), (shift, shift, shift, shift), mode="replicate").view(
        b, n, c, h + 2 * shift, w + 2 * shift)
    out = torch.empty_like(x)
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
    for i in range(b):
        out[i] = pad[i, :, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    gain = 1.0 + 0.2 * (torch.rand(b, 1, 1, 1, 1, generator=gen) - 0.5)
    # Back to uint8: the encoder scales uint8 by 1/255 but takes float input as already in [0, 1], so
    # float 0..255 here trained the CNN on inputs 255× brighter than it sees at evaluation.
    return (out * gain).round().clamp(0, 255).to(torch.uint8)


def epoch_order(train_idx: np.ndarray, labels: np.ndarray, balance: bool, gen: torch.Generator) -> np.ndarray:
    """One epoch of clip indices: a permutation, or (``balance``) as many draws with replacement where
    every primitive is equally likely."""
    if not balance:
        return train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = torch.from_numpy(1.0 / counts[inv])
    return train_idx[torch.multinomial(w, len(train_idx), replacement=True, generator=gen).numpy()]


@torch.no_grad()
def predict(model: RoboActCLIP, frames: torch.Tensor, batch: int = 32, method: str = "auto") -> np.ndarray:
    model.eval()
    out = [model.action_probs(frames[i:i + batch], method) for i in range(0, len(frames), batch)]
    return torch.cat(out).numpy()


def accuracy_table(true: list[str], pred: list[str], classes: list[str]) -> dict:
    """Per-class accuracy (recall), macro mean over classes present, overall accuracy."""
    per = {}
    for c in classes:
        idx = [i for i, t in enumerate(true) if t == c]
        if idx:
            per[c] = float(np.mean([pred[i] == c for i in idx]))
    return {"per_primitive": per, "macro": float(np.mean(list(per.values()))) if per else float("nan"),
            "accuracy": float(np.mean([a == b for a, b in zip(true, pred)])) if true else float("nan"),
            "n": len(true), "support": {c: sum(t == c for t in true) for c in per}, "predictions": list(pred)}


def evaluate(model: RoboActCLIP, data: ClipDataset, idx, method: str = "auto") -> dict:
    idx = np.asarray(idx, dtype=int)
    if len(idx) == 0:
        return accuracy_table([], [], model.cfg.actions)
    probs = predict(model, data.frames[idx], method=method)
    pred = [model.cfg.actions[i] for i in probs.argmax(1)]
    return accuracy_table([data.records[i].primitive for i in idx], pred, model.cfg.actions)


def train_encoder(data: ClipDataset | str | Path, cfg: EncoderTrainConfig, model_options: dict | None = None, *,
                  progress: str = "json", text_encoder=None, resume: str | Path | None = None,
                  stop_after: int | None = None, stream=None,
                  split: tuple[np.ndarray, np.ndarray] | None = None) -> EncoderTrainResult:
    """Train on the training episodes of ``data``, evaluate on its held-out episodes, save
    ``<out_dir>/encoder.pt``. ``model_options`` are EncoderConfig fields (ablation switches etc.);
    ``split`` (train, test) clip indices replaces the held-out split (cross-validation folds)."""
    report = JsonProgress(progress, stream)
    if not isinstance(data, ClipDataset):
        data = ClipDataset(data, tuple((model_options or {}).get("frame_size", EncoderConfig.frame_size)))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    voc = vocabulary(data)
    out = Path(cfg.out_dir)
    ck = RoboActCLIP.read_checkpoint(resume) if resume is not None else None
    if ck is not None:
        model = RoboActCLIP.from_checkpoint_dict(ck)
        if model.cfg.actions != voc["action"] or model.cfg.objects != voc["object"]:
            raise ValueError(f"{resume}: trained on another vocabulary than this clip folder")
    else:
        mcfg = EncoderConfig(actions=voc["action"], objects=voc["object"], subjects=voc["subject"],
                             n_frames=int(data.frames.shape[1]), frame_size=tuple(data.frames.shape[-2:]), crop=data.crop,
                             **{k: v for k, v in (model_options or {}).items() if k != "frame_size"})
        model = RoboActCLIP(mcfg)
    mcfg = model.cfg
    clip_text, cand = text_tables(data, mcfg.actions, mcfg.objects, text_encoder)
    model.candidate_text.copy_(cand)
    labels_all = {
        "subject": torch.tensor([mcfg.subjects.index(r.subject) for r in data.records]),
        "object": torch.tensor([mcfg.objects.index(r.object) for r in data.records]),
        "action": torch.tensor([mcfg.actions.index(r.primitive) for r in data.records]),
    }
    cap_ids = labels_all["action"] * len(mcfg.objects) + labels_all["object"]
    train_idx, test_idx = split if split is not None else data.split_by_episode(cfg.holdout, cfg.seed)
    train_idx, test_idx = np.asarray(train_idx, dtype=int), np.asarray(test_idx, dtype=int)
    if len(train_idx) == 0:
        raise ValueError("no training clips after the held-out split")
    train_labels = labels_all["action"][train_idx].numpy()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    spe = max(1, math.ceil(len(train_idx) / cfg.batch_size))
    total, warm = cfg.epochs * spe, max(1, cfg.epochs * spe // 10)
    # Warm-up then cosine, as a function of the step: a resumed run with more epochs stretches it.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / max(1, total)))))
    epoch0, step = 0, 0
    if ck is not None and "train" in ck:
        opt.load_state_dict(ck["train"]["optimizer"])
        sched.load_state_dict(ck["train"]["scheduler"])
        epoch0, step = int(ck["train"]["epoch"]), int(ck["train"]["step"])
    report.emit("start", clips=len(data), train_clips=int(len(train_idx)), test_clips=int(len(test_idx)),
                epochs=cfg.epochs, steps_per_epoch=spe, total_steps=cfg.epochs * spe, step=step,
                actions=mcfg.actions, objects=mcfg.objects, losses=mcfg.active_losses,
                temporal=mcfg.temporal, disentangle=mcfg.disentangle,
                params=sum(p.numel() for p in model.parameters() if p.requires_grad))

    def save(epoch: int, metrics: dict | None = None) -> Path:
        return model.save(out / "encoder.pt", extra={
            "train": {"epoch": epoch, "step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "config": asdict(cfg), "test_episodes": sorted({data.records[i].episode for i in test_idx})},
            "metrics": metrics or {}})

    t0 = time.perf_counter()
    cancelled, epoch = False, epoch0
    with _StopFlag() as stop:
        for epoch in range(epoch0, cfg.epochs):
            model.train()
            perm = epoch_order(train_idx, train_labels, cfg.balance, gen)
            sums: dict[str, float] = {}
            for b in range(spe):
                idx = torch.from_numpy(perm[b * cfg.batch_size:(b + 1) * cfg.batch_size])
                if len(idx) < 2:
                    continue  # a contrastive batch of one has no negatives
                frames = data.frames[idx]
                frames = _augment(frames, gen) if cfg.augment else frames
                loss, parts = model.loss(frames, clip_text[idx], cap_ids[idx],
                                         {s: labels_all[s][idx] for s in SLOTS}, step, gen)
                if not math.isfinite(parts["total"]):
                    report.emit("error", step=step, message="loss became non-finite; lower --lr")
                    raise FloatingPointError(f"encoder loss became non-finite at step {step}; lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                if step % cfg.log_every == 0:
                    report.emit("step", step=step, epoch=epoch, lr=sched.get_last_lr()[0],
                                elapsed_s=time.perf_counter() - t0, **parts)
                if stop.set or (stop_after is not None and step >= stop_after):
                    cancelled = True
                    break
            if cancelled:
                break
            report.emit("epoch", epoch=epoch + 1, step=step, elapsed_s=time.perf_counter() - t0,
                        **{k: v / spe for k, v in sums.items()})
            save(epoch + 1)
    metrics = evaluate(model, data, test_idx) if len(test_idx) else {}
    path = save(epoch + (0 if cancelled else 1), metrics)
    seconds = time.perf_counter() - t0
    if cancelled:
        report.emit("cancelled", step=step, checkpoint=str(path))
    else:
        report.emit("done", step=step, checkpoint=str(path), seconds=seconds,
                    macro=metrics.get("macro"), accuracy=metrics.get("accuracy"),
                    per_primitive=metrics.get("per_primitive"))
    return EncoderTrainResult(path, epoch + (0 if cancelled else 1), step, seconds, metrics, cancelled)
