"""Label suggestions for segments: the encoder's top primitives with confidence.

    from policies.suggest import Suggester
    s = Suggester("runs/encoder/encoder.pt")          # load once (≈ 0.1 s; no sentence model needed)
    s.suggest("episode.h5", [(0, 49), (49, 61)], k=3)  # [[("move", 0.91), ("lower", 0.05), …], …]

``suggest`` accepts an episode path or the frames themselves ((T,H,W,3) uint8 array or any sequence of
frames), and segments as (start, end) pairs (end exclusive), recorder Segment objects or dicts with
start/end. Each segment's 16 uniformly spread frames (recorder.export.clip_indices, as in training) are
scored; confidence is the encoder's probability (retrieval against every primitive × object caption,
averaged with the auxiliary classifier when it was trained). Pure compute, no Qt: the Annotate tab
calls it on a worker thread.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from policies.clip_data import crop_frames, resize_frames
from policies.encoder import EncoderError, RoboActCLIP
from recorder.export import clip_indices

Suggestion = list[tuple[str, float]]


def _span(seg) -> tuple[int, int]:
    if isinstance(seg, dict):
        return int(seg["start"]), int(seg["end"])
    if hasattr(seg, "start") and hasattr(seg, "end"):
        return int(seg.start), int(seg.end)
    a, b = seg
    return int(a), int(b)


class Suggester:
    def __init__(self, checkpoint: str | os.PathLike | RoboActCLIP, method: str = "auto"):
        self.model = checkpoint if isinstance(checkpoint, RoboActCLIP) else RoboActCLIP.load(checkpoint)
        self.model.eval()
        self.method = method
        self.primitives = list(self.model.cfg.actions)

    def _clips(self, source, spans: list[tuple[int, int]]) -> np.ndarray:
        n, size, crop = self.model.cfg.n_frames, self.model.cfg.frame_size, self.model.cfg.crop
        if isinstance(source, (str, os.PathLike)):
            from recorder.episode import EpisodeReader

            with EpisodeReader(source) as r:
                if r.camera is None:
                    raise EncoderError(f"{Path(source).name}: recorded without a camera; nothing to look at")
                total = len(r.time)
                self._check(spans, total, Path(source).name)
                cache: dict[int, np.ndarray] = {}
                clips = []
                for a, b in spans:
                    idx = clip_indices(a, b, n)
                    for i in idx:
                        if int(i) not in cache:
                            cache[int(i)] = r.rgb(int(i))
                    clips.append(resize_frames(crop_frames(np.stack([cache[int(i)] for i in idx]), crop), size))
                return np.stack(clips)
        frames = source
        total = len(frames)
        self._check(spans, total, "frames")
        clips = []
        for a, b in spans:
            clip = np.stack([np.asarray(frames[int(i)]) for i in clip_indices(a, b, n)])
            if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
                raise EncoderError(f"frames must be (H, W, 3) uint8 images, got {clip.shape[1:]} {clip.dtype}")
            clips.append(resize_frames(crop_frames(clip, crop), size))
        return np.stack(clips)

    @staticmethod
    def _check(spans, total: int, name: str) -> None:
        for a, b in spans:
            if not 0 <= a < b <= total:
                raise EncoderError(f"{name}: segment [{a}, {b}) is outside 0..{total} or empty")

    def probabilities(self, source, segments: Iterable) -> np.ndarray:
        """(S, A) probabilities over ``self.primitives`` for each segment."""
        spans = [_span(s) for s in segments]
        if not spans:
            return np.zeros((0, len(self.primitives)), np.float32)
        clips = torch.from_numpy(self._clips(source, spans)).permute(0, 1, 4, 2, 3)
        with torch.no_grad():
            return torch.cat([self.model.action_probs(clips[i:i + 32], self.method)
                              for i in range(0, len(clips), 32)]).numpy()

    def suggest(self, source, segments: Iterable, k: int = 3) -> list[Suggestion]:
        """Per segment, the top-``k`` (primitive, confidence) pairs, most likely first."""
        probs = self.probabilities(source, segments)
        out = []
        for p in probs:
            order = np.argsort(-p)[:max(1, k)]
            out.append([(self.primitives[i], float(p[i])) for i in order])
        return out


_CACHE: dict[tuple[str, float], Suggester] = {}


def suggest(source, segments: Sequence, checkpoint: str | os.PathLike, k: int = 3) -> list[Suggestion]:
    """One-call form; the model is loaded once per checkpoint file version."""
    path = Path(checkpoint)
    try:
        key = (str(path.resolve()), path.stat().st_mtime)
    except FileNotFoundError:
        raise EncoderError(f"{checkpoint}: no such checkpoint") from None
    if key not in _CACHE:
        _CACHE.clear()  # one model in memory at a time; a retrained checkpoint replaces the old one
        _CACHE[key] = Suggester(path)
    return _CACHE[key].suggest(source, segments, k)
