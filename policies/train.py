"""Training loop for the action expert: stage 1 action pre-training (cloud masked, large batches,
synthetic trajectories welcome), stage 2 point-cloud fine-tuning (paper §3.2.2). Stage "la-pretrain"
is LA4VLA's language-action pre-training: stage 1 on instruction + state → action windows
(datasets.la_windows), for a model with ``lang_dim > 0``.

Runs headless in its own process (``python main.py train expert …``), streams progress as JSON lines a
GUI can plot, checkpoints periodically and on SIGINT/SIGTERM, resumes with the step count intact, and
runs unchanged on CUDA or under ``torchrun`` (DDP; gloo on CPU, NCCL on GPU).
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from diffusers.optimization import get_scheduler

from policies.action_expert import ActionExpert, ExpertConfig
from policies.cloud_augment import add_distractor_copies
from policies.datasets import Windows
from policies.normalize import MinMaxNormalizer

STAGES = ("pretrain", "finetune", "la-pretrain")


@dataclass
class TrainConfig:
    stage: str = "pretrain"
    out_dir: str = "runs/expert"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup_steps: int = 50
    lr_schedule: str = "cosine"
    goal_noise: float = 0.1  # std of the guidance-pose noise, normalised units (paper §4.5.2)
    # Auxiliary keypoint loss (models with a keypoint head only). Its raw size is ~10-20 at the start
    # against a diffusion loss of ~0.1: at weight 1 it dominates the clipped gradient norm.
    keypoint_weight: float = 0.1
    grad_clip: float = 1.0
    # Probability per sample of pasting a copy of the next contact's object a few cm away in the
    # cloud (policies/cloud_augment.py): teaches the keypoint head to follow the guidance to the
    # right one of two alike objects. 0 = off.
    distractor_copies: float = 0.0
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if self.goal_noise < 0 or self.keypoint_weight < 0:
            raise ValueError("goal_noise and keypoint_weight must be >= 0")
        if not 0 <= self.distractor_copies <= 1:
            raise ValueError("distractor_copies is a probability in [0, 1]")


@dataclass
class TrainResult:
    step: int
    loss: float
    checkpoint: Path
    cancelled: bool = False
    losses: list[float] = field(default_factory=list)


class Progress:
    """Emits training events: JSON lines on stdout (``json``), a tqdm bar (``bar``) or nothing.

    Only rank 0 reports; every line is flushed so a parent process can plot it live.
    """

    def __init__(self, mode: str = "json", total: int = 0, enabled: bool = True, stream=None):
        self.mode = mode if enabled else "none"
        self.stream = stream or sys.stdout
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def emit(self, event: str, **fields) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps({"event": event, **fields}) + "\n")
            self.stream.flush()
        elif self._bar is not None:
            if event == "step":
                self._bar.n = fields["step"]
                self._bar.set_postfix(loss=f"{fields['loss']:.4f}", lr=f"{fields['lr']:.1e}")
                self._bar.refresh()
            elif event in ("checkpoint", "done", "cancelled"):
                self._bar.write(f"{event}: {fields.get('path') or fields.get('checkpoint')}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop polls, so a cancel ends on a step boundary with a checkpoint."""

    def __init__(self):
        self.set = False
        self._old = {}

    def __enter__(self):
        if threading_is_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _distributed() -> tuple[int, int, int]:
    """(rank, world, local_rank) from torchrun's environment; (0, 1, 0) for a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no GPU here")
    return dev


def _rank_batches(n: int, batch: int, epoch: int, seed: int, rank: int, world: int) -> list[torch.Tensor]:
    # The same permutation on every rank (seeded by epoch), each rank taking its stride — what
    # DistributedSampler does, on index tensors. Deterministic, so a resume lands on the same batches.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))[rank::world]
    if len(perm) < batch:
        return [perm]
    return list(perm[: len(perm) // batch * batch].split(batch))


def steps_per_epoch(n: int, batch: int, world: int) -> int:
    per_rank = math.ceil(n / world) if world > 1 else n
    return max(1, per_rank // batch)


def train(cfg: TrainConfig, windows: Windows, model_cfg: ExpertConfig | None = None, *,
          init_checkpoint: str | Path | None = None, resume: str | Path | None = None,
          progress: str = "json", stop_after: int | None = None,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train on ``windows``. Start fresh (normaliser fitted on the data), from ``init_checkpoint``
    (stage 2 from a stage-1 model: weights and normaliser kept), or ``resume`` a run from its
    checkpoint (model, optimiser, LR schedule and step). ``stop_after`` ends the run early as if
    cancelled (tests, GUI "pause")."""
    rank, world, local_rank = _distributed()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo")
    device = _pick_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed + rank)
    out = Path(cfg.out_dir)
    report = Progress(progress, cfg.steps, enabled=rank == 0)

    start_step, ck = 0, None
    if resume is not None:
        ck = ActionExpert.read_checkpoint(resume)
        if "train" not in ck:
            raise ValueError(f"{resume}: has no training state to resume from (a final export?)")
        model = ActionExpert.from_checkpoint_dict(ck)
        start_step = int(ck["train"]["step"])
    elif init_checkpoint is not None:
        model = ActionExpert.from_checkpoint_dict(ActionExpert.read_checkpoint(init_checkpoint))
    else:
        fresh_cfg = model_cfg or ExpertConfig()
        model = ActionExpert(fresh_cfg, MinMaxNormalizer.fit(windows.pose_vectors(relative=fresh_cfg.relative)))
    mcfg = model.config
    if windows.action.shape[1] != mcfg.horizon or windows.guide.shape[1] != mcfg.n_guide \
            or windows.state.shape[1] != mcfg.n_obs:
        raise ValueError("training windows do not match the model config (horizon / n_guide / n_obs)")
    use_cloud = cfg.stage == "finetune"
    if cfg.stage == "la-pretrain" and (windows.lang is None or mcfg.lang_dim <= 0):
        raise ValueError("stage 'la-pretrain' needs instruction features in the data and a model with "
                         "lang_dim > 0 (language-action windows)")
    if windows.lang is not None and mcfg.lang_dim > 0 and windows.lang.shape[1] != mcfg.lang_dim:
        raise ValueError(f"instruction features have {windows.lang.shape[1]} dims, the model expects {mcfg.lang_dim}")
    if use_cloud and not windows.has_clouds:
        raise ValueError("stage 'finetune' needs point clouds in the data (episodes with depth)")
    model.to(device).train()
    net: torch.nn.Module = model
    if world > 1:
        # Stage 1 never touches the PointNet and stage 2 never the mask token: tell DDP so.
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_scheduler(cfg.lr_schedule, opt, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps)
    if ck is not None:
        opt.load_state_dict(ck["train"]["optimizer"])
        sched.load_state_dict(ck["train"]["lr_scheduler"])
        # Restoring the noise RNG makes a resumed run draw what an uninterrupted one would have.
        rng = ck["train"].get("rng")
        if rng is not None and world == 1:
            torch.set_rng_state(rng)

    n = len(windows)
    spe = steps_per_epoch(n, cfg.batch_size, world)
    report.emit("start", stage=cfg.stage, step=start_step, total_steps=cfg.steps, windows=n,
                batch_size=cfg.batch_size, world_size=world, device=str(device),
                params=sum(p.numel() for p in model.parameters()), steps_per_epoch=spe)

    def save(name: str, step: int, loss: float) -> Path:
        train_state = {"step": step, "epoch": step // spe, "loss": loss, "optimizer": opt.state_dict(),
                       "lr_scheduler": sched.state_dict(), "config": asdict(cfg), "rng": torch.get_rng_state()}
        return model.save(out / name, extra={"train": train_state})

    step, loss_val, losses = start_step, float("nan"), []
    t_last, step_last = time.perf_counter(), start_step
    rate_ema = None
    last_ckpt: Path | None = None
    cancelled = False
    batches: list[torch.Tensor] = []
    epoch_loaded = -1
    aug_gen = torch.Generator().manual_seed(cfg.seed + start_step)
    with _StopFlag() as stop:
        while step < cfg.steps:
            epoch, pos = divmod(step, spe)
            if epoch != epoch_loaded:
                batches = _rank_batches(n, cfg.batch_size, epoch, cfg.seed, rank, world)
                epoch_loaded = epoch
            batch = windows.batch(batches[pos % len(batches)], device, with_cloud=use_cloud)
            if cfg.distractor_copies > 0 and "cloud" in batch and "target" in batch:
                batch["cloud"] = add_distractor_copies(batch["cloud"].cpu(), batch["target"].cpu(),
                                                       cfg.distractor_copies, aug_gen).to(device)
            loss = net(batch, cfg.goal_noise, cfg.keypoint_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            loss_val = float(loss.detach())
            if not math.isfinite(loss_val):
                report.emit("error", step=step, message="loss became non-finite; lower --lr")
                report.close()
                raise FloatingPointError(f"training loss became {loss_val} at step {step}; lower the learning rate")
            losses.append(loss_val)
            if on_step is not None:
                on_step(step, loss_val)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                rate = (step - step_last) / max(now - t_last, 1e-9)
                rate_ema = rate if rate_ema is None else 0.7 * rate_ema + 0.3 * rate
                t_last, step_last = now, step
                report.emit("step", step=step, epoch=step // spe, loss=loss_val, lr=sched.get_last_lr()[0],
                            samples_per_s=rate_ema * len(batch["action"]) * world,
                            eta_s=(cfg.steps - step) / max(rate_ema, 1e-9))
            want_stop = stop.set or (stop_after is not None and step >= stop_after)
            if world > 1:
                # Every rank must leave on the same step, or the others hang in the next all-reduce.
                flag = torch.tensor([1.0 if want_stop else 0.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                want_stop = bool(flag.item())
            if want_stop and step < cfg.steps:
                cancelled = True
                break
            if step % cfg.ckpt_every == 0 and step < cfg.steps and rank == 0:
                last_ckpt = save("last.pt", step, loss_val)
                report.emit("checkpoint", step=step, path=str(last_ckpt))
    final = None
    if rank == 0:
        final = save("last.pt", step, loss_val)
        report.emit("checkpoint", step=step, path=str(final))
        if cancelled:
            report.emit("cancelled", step=step, checkpoint=str(final))
        else:
            report.emit("done", step=step, loss=loss_val, checkpoint=str(final))
    report.close()
    if world > 1:
        dist.barrier()
    return TrainResult(step, loss_val, final or out / "last.pt", cancelled, losses)
