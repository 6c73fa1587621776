"""Does the action expert follow displaced guidance, or correct it from the point cloud?

    python -m bench.expert_guidance_probe --checkpoint CKPT [CKPT …] --episodes DEMOS… [--sigma 0.02] \
        [--frames approach grasp release]

For approach frames (or, with ``--frames grasp release``, the frames whose chunk ends at the next
contact: where the fingers close, or, gripper closed, where the cube is let go or the button pushed) of recorded demos (gripper open, the demo's chunk going down), the expert predicts
a chunk twice: with the guidance of the demo's own waypoints, and with guidance rebuilt from the
waypoints displaced by N(0, sigma²) per axis (policies.datasets.perturb_waypoints, as rollouts'
``--waypoint-noise``). The table gives the chunk-end position error against the demo's commanded
action in both cases, and how far the guidance moved. An expert that follows the guidance shows an
error that grows by about the displacement; one that locates the object in the cloud does not, while
staying as precise as with exact guidance. Use held-out demos (new layouts): on training episodes the
state history alone can identify the demo. A model with a keypoint head (``--keypoint-feat``) also
gets the distance from its keypoint to the demo's grasp position (displaced guidance).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from policies.action_expert import ActionExpert
from policies.datasets import episode_windows, open_episodes


def probe_frames(w, n: int, frames: str, per_episode: int) -> torch.Tensor:
    """Window indices (of the first, exact-guidance half) to probe. ``approach``: gripper open, the
    demo's chunk going down. ``grasp`` / ``release`` (closed gripper: a release or a press): the
    demo's chunk ends within 1 cm of the next contact (``Windows.target``) while the arm is still
    more than 1 cm from it — the chunks that decide where the fingers close, the cube is let go or
    the button is pushed."""
    state, act = w.state[:n, -1], w.action[:n]
    if frames == "approach":
        sel = (state[:, 9] > 0.5) & (act[:, -1, 2] < state[:, 2] - 0.01)
    else:
        tgt = w.target[:n]
        ends_at = (act[:, -1, :3] - tgt).norm(dim=-1) < 0.01
        away = (state[:, :3] - tgt).norm(dim=-1) > 0.01
        sel = ends_at & away & ((state[:, 9] > 0.5) if frames == "grasp" else (state[:, 9] <= 0.5))
    idx = torch.nonzero(sel).flatten()
    return idx[:: max(1, len(idx) // per_episode)]


def probe(model: ActionExpert, episodes, sigma: float, per_episode: int = 8, seed: int = 123,
          frames: str = "approach") -> dict:
    rng = np.random.default_rng(seed)
    errs: dict[str, list[float]] = {"exact": [], "displaced": [], "shift": [], "keypoint": []}
    for ep in episodes:
        w = episode_windows(ep, model.config, waypoint_noise=sigma, noise_variants=1, rng=rng)
        n = len(w) // 2  # first half exact guidance, second half displaced (same frames)
        approach = probe_frames(w, n, frames, per_episode)
        if not len(approach):
            continue
        for name, offset in (("exact", 0), ("displaced", n)):
            b = w.batch(approach + offset)
            extras: dict = {}
            with torch.no_grad():
                pred = model.sample(b["state"], b["guide"], b["cloud"], generator=torch.Generator().manual_seed(0),
                                    extras=extras)
            errs[name] += (pred[:, -1, :3] - b["action"][:, -1, :3]).norm(dim=-1).tolist()
            if "keypoint" in extras and name == "displaced":  # the grasp as the head places it
                d = (extras["keypoint"] - b["target"]).norm(dim=-1)
                errs["keypoint"] += d[torch.isfinite(d)].tolist()  # frames with a grasp still ahead
        errs["shift"] += (w.guide[approach + n, -1, :3] - w.guide[approach, -1, :3]).norm(dim=-1).tolist()
    return {k: np.asarray(v) * 100 for k, v in errs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", nargs="+", required=True)
    ap.add_argument("--episodes", nargs="+", required=True, help="demo .h5 files or folders (held out)")
    ap.add_argument("--sigma", type=float, default=0.02, help="waypoint displacement std, m (default %(default)s)")
    ap.add_argument("--frames", nargs="+", choices=("approach", "grasp", "release"), default=["approach"],
                    help="which frames to probe (see probe_frames; default approach)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    episodes = open_episodes(args.episodes)
    print(f"{len(episodes)} episodes, waypoints displaced by Gaussian noise of std {args.sigma * 100:g} cm per axis; "
          "chunk-end position error vs the demo's action, cm (median / p90)")
    print("| checkpoint | frames | n | exact guidance | displaced guidance | guidance moved | growth / moved "
          "| keypoint head's contact error |")
    print("|---|---|---|---|---|---|---|---|")
    for ck, kind in ((c, k) for c in args.checkpoint for k in args.frames):
        e = probe(ActionExpert.load(ck).eval(), episodes, args.sigma, frames=kind)
        if not len(e["exact"]):
            print(f"| {ck} | {kind} | 0 | – | – | – | – | – |")
            continue
        med = {k: float(np.median(v)) if len(v) else float("nan") for k, v in e.items()}
        p90 = {k: float(np.percentile(v, 90)) if len(v) else float("nan") for k, v in e.items()}
        growth = (med["displaced"] - med["exact"]) / med["shift"] if med["shift"] > 0 else float("nan")
        kp = f"{med['keypoint']:.2f} / {p90['keypoint']:.2f}" if len(e["keypoint"]) else "–"
        print(f"| {ck} | {kind} | {len(e['exact'])} | {med['exact']:.2f} / {p90['exact']:.2f} | "
              f"{med['displaced']:.2f} / {p90['displaced']:.2f} | {med['shift']:.2f} / {p90['shift']:.2f} | "
              f"{growth:.2f} | {kp} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
