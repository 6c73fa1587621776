"""Colour-swap augmentation for the instruction-conditioned waypoint predictor.

Every demo asks for the red cube, so a predictor trained on them learns "go to the red points" and
never reads the colour word: told "pick up the teal cube" in a scene whose task cube is teal it went
22-46 cm astray (session 6, the ``colour`` scene variation). This swaps, per training sample, the
demo cubes' colours for others *in the cloud and in every text of the sample alike*: the red and the
blue cube trade places, or the red one turns lime and the instruction says "lime". The target stays
put, so the only way to find it is to match the word to the points' colour.

Points are told apart by chromaticity (each point's rgb over its largest channel): measured on a
sim-xArm6 demo frame, the three cubes' points sit within 0.1 of their reference colour and every
other surface (arm, bin, table edge, the yellow button cap) outside it or unsaturated. A recoloured
point keeps its shading: the new colour is scaled by the point's brightness relative to the old one.

The swap colours leave out the ``colour`` scene variation's (robots/sim/variations.py
``UNSEEN_COLOURS``: orange, purple, pink, teal, white), so that row still measures colours and words
the predictor never saw.
"""
from __future__ import annotations

import functools
import itertools
import re
from typing import Callable, Sequence

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# Colour names → colours, and the per-point cue the predictor gets from them
# --------------------------------------------------------------------------------------------

MAX_CUES = 2  # colours named in one instruction that get a cue channel ("the red cube on the green cube")
CUE_SIGMA = 0.2  # chromaticity distance at which a point's cue falls to exp(-1/2)
CUE_MIN_BRIGHTNESS = 0.1  # darker points have no reliable hue: their cue fades to 0
LIGHTNESS_SIGMA = 0.08  # grey names: how fast the cue fades below half the named colour's brightness


@functools.lru_cache(maxsize=1)
def _colour_table() -> dict[str, tuple[float, float, float]]:
    # matplotlib's XKCD_COLORS: the 949 colour names of the xkcd colour survey, the names people
    # actually use ("teal", "pink", "orange"), single words only.
    from matplotlib.colors import XKCD_COLORS, to_rgb

    return {k.removeprefix("xkcd:"): to_rgb(v) for k, v in XKCD_COLORS.items() if " " not in k}


def named_colours(text: str, k: int = MAX_CUES) -> np.ndarray:
    """(k, 3) rgb of the colours ``text`` names, in order of mention, NaN rows where fewer. This is
    how the predictor grounds a colour word it never trained on: a table lookup, as a vision-language
    model would know the colour, instead of a meaning learnt from the demos' three cube colours."""
    table = _colour_table()
    out = np.full((k, 3), np.nan, np.float32)
    seen: list[str] = []
    for w in re.findall(r"[a-z]+", str(text).lower()):
        if w in table and w not in seen:
            seen.append(w)
    for i, w in enumerate(seen[:k]):
        out[i] = table[w]
    return out


def _chroma(rgb: torch.Tensor) -> torch.Tensor:
    return rgb / rgb.max(dim=-1, keepdim=True).values.clamp_min(1e-3)


def colour_cues(rgb: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """rgb (B, N, 3) in [0, 1], refs (B, K, 3) named colours (NaN rows: none) → (B, N, K) in [0, 1]:
    how much each point looks like each named colour. Chromaticity (rgb over its largest channel)
    is compared so a cube's shaded faces match as well as its lit ones."""
    have = torch.isfinite(refs).all(dim=-1)  # (B, K)
    refs = torch.nan_to_num(refs, nan=0.0)
    ref = _chroma(refs)
    d = (_chroma(rgb)[:, :, None, :] - ref[:, None, :, :]).norm(dim=-1)  # (B, N, K)
    cue = torch.exp(-0.5 * (d / CUE_SIGMA) ** 2)
    value = rgb.max(dim=-1).values  # (B, N)
    bright = (value / CUE_MIN_BRIGHTNESS).clamp(0, 1)[..., None]
    # A grey name (white, silver) has no hue to match: every unsaturated point would. Lightness tells
    # a white cube from the grey bin and arm — a point may be up to half as bright as the named colour
    # (its shaded faces), not darker — weighted in as the named colour's saturation falls.
    ref_value = refs.max(dim=-1).values.clamp_min(1e-3)  # (B, K)
    ref_sat = (ref_value - refs.min(dim=-1).values) / ref_value
    ratio = value[:, :, None] / ref_value[:, None, :]
    light = torch.exp(-0.5 * ((0.5 - ratio).clamp_min(0) / LIGHTNESS_SIGMA) ** 2)
    grey = (1 - ref_sat / 0.25).clamp(0, 1)[:, None, :]
    cue = cue * (grey * light + (1 - grey))
    return cue * bright * have[:, None, :]


# --------------------------------------------------------------------------------------------
# Swaps
# --------------------------------------------------------------------------------------------

# The demo cubes' colours (robots/sim/world.py CUBE_COLOURS): the ones found and replaced.
SOURCE_COLOURS = {"red": (0.85, 0.12, 0.10), "green": (0.15, 0.70, 0.20), "blue": (0.12, 0.30, 0.85)}
# What they may become (the sources included: a permutation among them is the hardest case); the
# others are painted in their xkcd colour (``named_colours``).
SWAP_NAMES = ("lime", "navy", "magenta", "brown", "maroon")
SWAP_COLOURS = {**SOURCE_COLOURS, **{n: tuple(float(v) for v in named_colours(n, 1)[0]) for n in SWAP_NAMES}}
MATCH_DISTANCE = 0.2  # chromaticity distance of a point to its cube's reference colour (orange is 0.34 from red)
MIN_SATURATION = 0.4


def colour_masks(rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """(…, N, 3) colours in [0, 1] → per source colour, a (…, N) mask of the points that show it."""
    mx = rgb.max(dim=-1).values.clamp_min(1e-3)
    chroma = _chroma(rgb)
    sat = (mx - rgb.min(dim=-1).values) / mx
    out = {}
    for name, ref in SOURCE_COLOURS.items():
        r = torch.as_tensor(ref, dtype=rgb.dtype)
        out[name] = ((chroma - r / r.max()).norm(dim=-1) < MATCH_DISTANCE) & (sat > MIN_SATURATION)
    return out


def rename_colours(text: str, mapping: dict[str, str]) -> str:
    """``text`` with every source-colour word replaced by its new name (whole words, at once)."""
    if not mapping:
        return text
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    return pattern.sub(lambda m: mapping[m.group(1)], text)


def colour_words(text: str) -> tuple[str, ...]:
    """The source colours ``text`` names, in a fixed order."""
    return tuple(c for c in SOURCE_COLOURS if re.search(rf"\b{c}\b", text))


class ColourSwap:
    """Per-sample colour swaps for a batch: recoloured clouds and the matching text features.

    ``texts`` are the data set's texts (``KeypointData.texts``); ``encode`` maps a list of strings to
    (n, D) features (policies.text.TextEncoder.encode). The features of every renamed text are
    computed here once (at most 8·7 per text: two colour words in "stack the red cube on the green
    cube"); so are the named colours of every renamed text (``refs``)."""

    def __init__(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray], prob: float = 0.5):
        self.prob = float(prob)
        self.texts = list(texts)
        self.words = [colour_words(t) for t in self.texts]
        variants: dict[tuple[int, tuple[str, ...]], str] = {}
        for i, (text, words) in enumerate(zip(self.texts, self.words)):
            for names in itertools.permutations(SWAP_COLOURS, len(words)):
                if words:
                    variants[(i, names)] = rename_colours(text, dict(zip(words, names)))
        keys = list(variants)
        feats = np.asarray(encode([variants[k] for k in keys]), dtype=np.float32) if keys else np.zeros((0, 0))
        self._features = {k: torch.as_tensor(f) for k, f in zip(keys, feats)}
        self._renamed = variants
        self._refs = {k: torch.as_tensor(named_colours(t)) for k, t in variants.items()}
        self._swap_rgb = {n: torch.as_tensor(c, dtype=torch.float32) for n, c in SWAP_COLOURS.items()}

    @property
    def active(self) -> bool:
        return self.prob > 0 and bool(self._features)

    def renamed(self, text_id: int, mapping: dict[str, str]) -> str:
        return self._renamed.get((text_id, tuple(mapping[w] for w in self.words[text_id])), self.texts[text_id])

    def refs(self, text_id: int, mapping: dict[str, str]) -> torch.Tensor:
        """(MAX_CUES, 3) the colours the renamed text ``text_id`` names."""
        key = (text_id, tuple(mapping[w] for w in self.words[text_id]))
        return self._refs[key] if key in self._refs else torch.as_tensor(named_colours(self.texts[text_id]))

    def __call__(self, cloud: torch.Tensor, features: torch.Tensor, text_ids: Sequence[torch.Tensor],
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, str] | None]]:
        """cloud (B, N, 6) xyz+rgb, features (B, K·D) the samples' K text features side by side, and
        ``text_ids`` the K id tensors (B,) they came from. Returns new clouds and features (inputs
        untouched) and each sample's mapping (None where it was left alone)."""
        b = cloud.shape[0]
        cloud, features = cloud.clone(), features.clone()
        d = features.shape[1] // len(text_ids)
        masks = colour_masks(cloud[..., 3:6])
        pool = list(SWAP_COLOURS)
        maps: list[dict[str, str] | None] = []
        for i in range(b):
            if float(torch.rand(1, generator=gen)) >= self.prob:
                maps.append(None)
                continue
            order = torch.randperm(len(pool), generator=gen)[:len(SOURCE_COLOURS)].tolist()
            mapping = {src: pool[j] for src, j in zip(SOURCE_COLOURS, order)}
            rgb = cloud[i, :, 3:6]
            new = rgb.clone()
            for src, dst in mapping.items():
                m = masks[src][i]
                if not bool(m.any()):
                    continue
                ref = torch.as_tensor(SOURCE_COLOURS[src], dtype=rgb.dtype)
                # The point's shading relative to its cube's reference brightness carries over.
                shade = rgb[m].max(dim=-1, keepdim=True).values / ref.max()
                new[m] = (self._swap_rgb[dst] * shade).clamp(0, 1)
            cloud[i, :, 3:6] = new
            for k, ids in enumerate(text_ids):
                t = int(ids[i])
                if self.words[t]:
                    features[i, k * d:(k + 1) * d] = self._features[(t, tuple(mapping[w] for w in self.words[t]))]
            maps.append(mapping)
        return cloud, features, maps
