"""Instruction-following metrics of LA4VLA (section 3.1 / 5.7, appendix 9) and the two test conditions.

A *trial* is one language-action sample: an instruction whose canonical direction ``u_y`` is known
(label ``y``), the robot state the policy sees, the policy's predicted action chunk and the
demonstrated ("ground-truth") chunk collected under that instruction. Endpoint displacements are the
sums of translational increments over the horizon, i.e. last chunk position minus the current
position.

Metrics (appendix 9), over N trials with predicted displacement d̂_i, ground truth d_i:
- DAR = 1/N Σ 1[d̂_i · u_{y_i} > 0]  — fraction in the instruction-aligned half-space (0.5 = chance).
- DCS = 1/N Σ cos(d̂_i, d_i); a trial with a near-zero predicted or true displacement scores 0.
- SR  = D_between / (D_within + ε): D_within averages, per label, the mean pairwise distance of
  predictions sharing the label, then over labels; D_between averages, per unordered label pair, the
  mean distance across the two groups, then over pairs.
- SS  = mean silhouette of the predicted displacements clustered by label (scikit-learn's
  definition: a_i mean distance within own label, b_i nearest mean distance to another label,
  s_i = (b_i − a_i) / max(a_i, b_i), 0 for a label with one member).

Conditions (section 5.7): *paired* — instruction and state from the same LA sample; *conflicting
state* — the instruction's direction is kept while the state (and with it the waypoint-free guidance)
comes from another sample whose instruction is the opposite direction, so the state argues for the
opposite motion and only the language can tell the policy where to go.

Canonical direction of an instruction: the first base-frame direction word in its text — the
instruction templates of recorder/primitives.py name the dominant axis first — else the primitive's
implied direction (lift → up, lower/press → down, push → forward, pull → backward). Instructions with
no direction (grasp, place, wait, rotations) are not direction-following trials and are left out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import combinations
from typing import Sequence

import numpy as np
from sklearn.metrics import silhouette_samples

from recorder.primitives import AXIS_WORDS

# recorder/primitives.py: +x forward, +y left, +z up (base frame).
DIRECTIONS: dict[str, np.ndarray] = {}
for _axis, (_pos, _neg) in enumerate(AXIS_WORDS):
    DIRECTIONS[_pos] = np.eye(3)[_axis]
    DIRECTIONS[_neg] = -np.eye(3)[_axis]
OPPOSITE: dict[str, str] = {a: b for a, b in AXIS_WORDS} | {b: a for a, b in AXIS_WORDS}
# Primitives whose instruction templates imply a direction even without a direction word.
PRIMITIVE_DIRECTION = {"lift": "upward", "lower": "downward", "press": "downward", "push": "forward",
                       "pull": "backward"}
_WORD = re.compile(r"\b(" + "|".join(DIRECTIONS) + r")\b", re.IGNORECASE)
NEAR_ZERO = 1e-6  # metres: a displacement shorter than this has no direction (DCS counts it 0)


def instruction_direction(instruction: str, primitive: str | None = None) -> str | None:
    """Direction label of an instruction ("upward", "left", …) or None when it names none."""
    m = _WORD.search(instruction or "")
    if m:
        return m.group(1).lower()
    return PRIMITIVE_DIRECTION.get(primitive or "")


def endpoint_displacement(chunk_xyz: np.ndarray, start_xyz: np.ndarray) -> np.ndarray:
    """Σ of translational increments over the horizon = last position − start, for (…, H, 3) chunks."""
    chunk_xyz = np.asarray(chunk_xyz, dtype=np.float64)
    return chunk_xyz[..., -1, :3] - np.asarray(start_xyz, dtype=np.float64)[..., :3]


def _labels_and_units(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    unknown = sorted(set(labels.tolist()) - set(DIRECTIONS))
    if unknown:
        raise ValueError(f"unknown direction labels {unknown}; expected {sorted(DIRECTIONS)}")
    return labels, np.stack([DIRECTIONS[y] for y in labels]) if len(labels) else np.zeros((0, 3))


def dar(pred: np.ndarray, labels: Sequence[str]) -> float:
    """Directional Alignment Rate."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    _, u = _labels_and_units(labels)
    if len(pred) == 0:
        return float("nan")
    return float(np.mean(np.einsum("ij,ij->i", pred, u) > 0))


def dcs(pred: np.ndarray, gt: np.ndarray, eps: float = NEAR_ZERO) -> float:
    """Direction Consistency Score: mean cosine of predicted vs demonstrated displacement."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 3)
    if len(pred) == 0:
        return float("nan")
    npred, ngt = np.linalg.norm(pred, axis=1), np.linalg.norm(gt, axis=1)
    ok = (npred > eps) & (ngt > eps)
    cos = np.zeros(len(pred))
    cos[ok] = np.einsum("ij,ij->i", pred[ok], gt[ok]) / (npred[ok] * ngt[ok])
    return float(cos.mean())


def separability_ratio(pred: np.ndarray, labels: Sequence[str], eps: float = 1e-8) -> float:
    """Separability Ratio D_between / (D_within + ε); NaN with fewer than two labels."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    labels = np.asarray(labels)
    groups = [pred[labels == y] for y in sorted(set(labels.tolist()))]
    if len(groups) < 2:
        return float("nan")
    within = []
    for g in groups:
        if len(g) >= 2:  # a label with one trial has no pairs to average
            d = np.linalg.norm(g[:, None] - g[None], axis=-1)
            within.append(d[np.triu_indices(len(g), 1)].mean())
    between = [np.linalg.norm(a[:, None] - b[None], axis=-1).mean() for a, b in combinations(groups, 2)]
    d_within = float(np.mean(within)) if within else 0.0
    return float(np.mean(between) / (d_within + eps))


def silhouette(pred: np.ndarray, labels: Sequence[str]) -> float:
    """Silhouette Score of the displacements clustered by label; NaN unless 2 ≤ labels < trials."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    labels = np.asarray(labels)
    k = len(set(labels.tolist()))
    if k < 2 or k >= len(pred):
        return float("nan")
    return float(silhouette_samples(pred, labels, metric="euclidean").mean())


def direction_metrics(pred: np.ndarray, gt: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """All four metrics plus the trial count, as one dict (JSON-ready)."""
    return {"DAR": dar(pred, labels), "DCS": dcs(pred, gt), "SR": separability_ratio(pred, labels),
            "SS": silhouette(pred, labels), "n": int(len(np.asarray(labels)))}


# --------------------------------------------------------------------------------------------
# Trials and conditions
# --------------------------------------------------------------------------------------------


@dataclass
class Trials:
    """Direction-following LA samples. ``state`` (N, n_obs, 10) and ``action`` (N, H, 10) are the
    policy's 10-D pose vectors (xyz + rot6d + gripper); ``lang`` (N, D) instruction features."""

    label: np.ndarray  # (N,) direction words
    instruction: list[str]
    state: np.ndarray
    action: np.ndarray
    lang: np.ndarray
    source: list[str] = field(default_factory=list)  # "episode[start:end]@frame", for reports

    def __len__(self) -> int:
        return len(self.label)

    @property
    def gt_displacement(self) -> np.ndarray:
        return endpoint_displacement(self.action[:, :, :3], self.state[:, -1, :3])


def conflicting_pairs(trials: Trials, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each trial i, the index j of a trial to take the state from: its label is the opposite of
    i's (up ↔ down, …). Without such a trial, one whose demonstrated motion runs against i's
    direction (u_i · d_j < 0) and whose instruction differs. Returns (kept i, chosen j); trials with
    no conflicting partner are dropped (their count shows in the report)."""
    rng = np.random.default_rng(seed)
    gt = trials.gt_displacement
    keep, partner = [], []
    for i, y in enumerate(trials.label):
        cand = np.flatnonzero(trials.label == OPPOSITE[y])
        if not len(cand):
            against = gt @ DIRECTIONS[y] < -NEAR_ZERO
            differs = np.array([s != trials.instruction[i] for s in trials.instruction])
            cand = np.flatnonzero(against & differs)
        if len(cand):
            keep.append(i)
            partner.append(int(rng.choice(cand)))
    return np.asarray(keep, dtype=int), np.asarray(partner, dtype=int)


def build_trials(records: Sequence[dict], cfg, text_encoder=None, stride: int = 4) -> Trials:
    """Direction-following trials from LA records (datasets.load_la_records): windows every
    ``stride`` frames of each segment with a direction in its instruction, while at least half a
    horizon of the segment remains (later windows mostly show the segment's end, a stop)."""
    from policies.datasets import segment_windows

    recs = [r for r in records if instruction_direction(r["instruction"], r.get("primitive")) is not None]
    if not recs:
        raise ValueError("no direction-following segments (instructions naming a direction such as "
                         "'lift … upward' or 'move … left') in the data")
    from policies.text import feature_table

    feats = feature_table((r["instruction"] for r in recs), text_encoder)
    labels, instr, states, actions, lang, source = [], [], [], [], [], []
    for r in recs:
        n = len(r["state"])
        frames = np.arange(0, max(1, n - cfg.horizon // 2), max(1, int(stride)))
        w = segment_windows(np.asarray(r["state"]), np.asarray(r["action"]), cfg, feats[r["instruction"]], frames)
        states.append(w.state.numpy())
        actions.append(w.action.numpy())
        lang.append(w.lang.numpy())
        y = instruction_direction(r["instruction"], r.get("primitive"))
        labels += [y] * len(frames)
        instr += [r["instruction"]] * len(frames)
        source += [f"{r.get('episode', '?')}[{r.get('start', 0)}:{r.get('end', n)}]@{int(f)}" for f in frames]
    return Trials(np.asarray(labels), instr, np.concatenate(states), np.concatenate(actions),
                  np.concatenate(lang), source)


def predict_displacements(model, state: np.ndarray, lang: np.ndarray | None, steps: int = 10, seed: int = 0,
                          batch: int = 512) -> np.ndarray:
    """Endpoint displacements of the model's chunks for states (N, n_obs, 10) and instruction
    features (N, D) — or none (zeros) — with the cloud masked and the guidance slots holding the
    current pose (the waypoint-agnostic input the LA windows train with)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n_guide = model.config.n_guide
    out = []
    for a in range(0, len(state), batch):
        st = torch.as_tensor(state[a:a + batch], dtype=torch.float32)
        guide = st[:, -1:].repeat(1, n_guide, 1)
        lt = None if lang is None else torch.as_tensor(lang[a:a + batch], dtype=torch.float32)
        chunk = model.sample(st, guide, None, steps=steps, generator=gen, lang=lt).numpy()
        out.append(endpoint_displacement(chunk[:, :, :3], state[a:a + batch, -1, :3]))
    return np.concatenate(out) if out else np.zeros((0, 3))


CONDITIONS = ("paired", "conflicting state", "paired, no instruction")


def evaluate(model, trials: Trials, steps: int = 10, seed: int = 0) -> dict[str, dict]:
    """Metrics per condition. "paired, no instruction" (zero instruction feature) is a reference
    beside the paper's two: how far the state alone already determines the direction."""
    gt = trials.gt_displacement
    res = {}
    pred = predict_displacements(model, trials.state, trials.lang, steps, seed)
    res["paired"] = direction_metrics(pred, gt, trials.label)
    keep, partner = conflicting_pairs(trials, seed)
    pred_c = predict_displacements(model, trials.state[partner], trials.lang[keep], steps, seed)
    res["conflicting state"] = direction_metrics(pred_c, gt[keep], trials.label[keep])
    res["conflicting state"]["dropped"] = int(len(trials) - len(keep))
    pred_0 = predict_displacements(model, trials.state, None, steps, seed)
    res["paired, no instruction"] = direction_metrics(pred_0, gt, trials.label)
    return res


def markdown_table(rows: Sequence[tuple[str, str, dict]]) -> str:
    """(model name, condition, metrics) rows → a markdown table."""
    def f(v):
        return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.2f}"

    lines = ["| Model | Condition | DAR | DCS | SR | SS | N |", "|---|---|---|---|---|---|---|"]
    for name, cond, m in rows:
        lines.append(f"| {name} | {cond} | {f(m['DAR'])} | {f(m['DCS'])} | {f(m['SR'])} | {f(m['SS'])} | {m['n']} |")
    return "\n".join(lines)
