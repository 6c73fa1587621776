"""Ablation table for the RoboAct-CLIP encoder: segment-label accuracy on held-out sim episodes.

Variants (the paper's two ablations, §III.B, plus a floor):
  full            temporal-difference transformer + disentangled heads, all losses
  no_temporal     fusion of F_1, F_n only (ablation 1)
  no_disentangle  F_v projected straight to the joint embedding, no ortho/recomb (ablation 2)
  proprio         logistic regression on the clip's ee-position change and gripper (no images)
  pixels          logistic regression on 12×16 pixels of F_1 and F_n − F_1 (what a linear model sees)

Besides per-primitive and macro accuracy on all held-out clips, the table gives the macro accuracy on
the held-out clips whose 16 frames show at least two distinct camera images ("moving"): a sim camera
starved of CPU repeats one image for seconds, and a clip of one still image shows no action at all.

Usage:
  python -m bench.encoder --episodes DIR [DIR…] [--clips CLIPDIR] [--epochs 30] [--folds 4] [--out runs/encoder_bench]
Clips are built from the episodes with the expert phases as labels (policies.clip_data.build_clips)
unless CLIPDIR already holds them. Every variant uses the same episode-level cross-validation folds (every episode is held out once,
each fold tests on every task), and the table pools the held-out predictions of all folds.
Training time is also given as a ratio to the full model's, since the 2-core machine is shared.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from policies.clip_data import ClipDataset, build_clips
from policies.encoder_train import EncoderTrainConfig, accuracy_table, train_encoder, vocabulary
from recorder.export import find_episodes

# The sim's third-person camera: the layout region (x 0.30–0.56 m, y ±0.28 m, robots/sim/tasks.py) projects
# to u 94–554, v ≤ 364 px of the 640×480 view at table height, and the bin reaches ~0.1 m beyond; the arm
# above it runs off the top edge. The old crop (0.65 of the height) cut the objects nearest the camera.
CROP = (0.0, 0.80, 0.12, 0.88)

VARIANTS = {
    "full": {},
    "no_temporal": {"temporal": False},
    "no_disentangle": {"disentangle": False},
}


def proprio_features(proprio: np.ndarray) -> np.ndarray:
    """(N, n, 8) → (N, 4n): ee position relative to the clip's first frame, and the gripper."""
    pos = proprio[:, :, :3] - proprio[:, :1, :3]
    return np.concatenate([pos.reshape(len(pos), -1), proprio[:, :, 7]], axis=1)


def pixel_features(frames) -> np.ndarray:
    """(N, n, 3, h, w) uint8 → (N, 2·3·12·16): F_1 and F_n − F_1 area-averaged to 12×16."""
    import torch.nn.functional as F

    x = F.interpolate(frames[:, [0, -1]].flatten(0, 1).float() / 255.0, size=(12, 16), mode="area")
    x = x.view(len(frames), 2, -1)
    return torch.cat([x[:, 0], x[:, 1] - x[:, 0]], 1).numpy()


def linear_predict(x: np.ndarray, data: ClipDataset, train_idx, test_idx) -> list[str]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array([r.primitive for r in data.records])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    clf.fit(x[train_idx], y[train_idx])
    return list(clf.predict(x[test_idx]))


def pooled_metrics(data: ClipDataset, test_idx: np.ndarray, pred: list[str], actions: list[str]) -> dict:
    """Accuracy table over the pooled held-out clips, plus ``moving_macro``: the macro accuracy over
    those showing ≥ 2 distinct camera images (NaN when the clips do not record it)."""
    true = [data.records[i].primitive for i in test_idx]
    m = accuracy_table(true, pred, actions)
    cams = np.array([data.records[i].camera_frames for i in test_idx])
    keep = cams >= 2
    if (cams < 0).all() or not keep.any():
        return {**m, "moving_macro": float("nan"), "moving_n": 0}
    sub = accuracy_table([t for t, k in zip(true, keep) if k], [p for p, k in zip(pred, keep) if k], actions)
    return {**m, "moving_macro": sub["macro"], "moving_n": int(keep.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", nargs="*", default=[], help="episode files or folders (sim demos)")
    ap.add_argument("--clips", default=None, help="clip folder (built here when empty)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default %(default)s)")
    ap.add_argument("--folds", type=int, default=4, help="episode-level cross-validation folds (default %(default)s)")
    ap.add_argument("--no-balance", action="store_true", help="plain epochs instead of class-balanced draws")
    ap.add_argument("--variants", default="full,no_temporal,no_disentangle,proprio,pixels")
    ap.add_argument("--out", default="runs/encoder_bench")
    args = ap.parse_args(argv)
    out = Path(args.out)
    clips = Path(args.clips) if args.clips else out / "clips"
    if not (clips / "captions.jsonl").is_file():
        eps = find_episodes(args.episodes)
        if not eps:
            print("error: no clips and no episodes given", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        n = build_clips(eps, clips, crop=CROP)
        print(f"built {n} clips from {len(eps)} episodes in {time.perf_counter() - t0:.0f} s")
    data = ClipDataset(clips)
    actions = vocabulary(data)["action"]
    cams = np.array([r.camera_frames for r in data.records])
    if (cams >= 0).all():
        print(f"{len(data)} clips; distinct camera images per 16-frame clip: mean {cams.mean():.1f}, "
              f"{np.mean(cams == 1):.0%} show one still image", file=sys.stderr)
    folds = data.episode_folds(args.folds, args.seed)
    results: dict[str, dict] = {}
    for name in args.variants.split(","):
        if name not in VARIANTS and name not in ("proprio", "pixels"):
            print(f"error: unknown variant {name!r} (full, no_temporal, no_disentangle, proprio, pixels)", file=sys.stderr)
            return 2
        if name == "proprio" and data.proprio is None:
            print("error: the clips carry no proprio (built by recorder.export?); rebuild with --episodes", file=sys.stderr)
            return 2
        test_all, pred_all, secs = [], [], 0.0
        for f, (tr, te) in enumerate(folds):
            t0 = time.perf_counter()
            if name == "proprio":
                pred = linear_predict(proprio_features(data.proprio.numpy()), data, tr, te)
            elif name == "pixels":
                pred = linear_predict(pixel_features(data.frames), data, tr, te)
            else:
                cfg = EncoderTrainConfig(out_dir=str(out / name / f"fold{f}"), epochs=args.epochs,
                                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads,
                                         balance=not args.no_balance)
                res = train_encoder(data, cfg, VARIANTS[name], progress="text", stream=sys.stderr, split=(tr, te))
                pred = res.metrics["predictions"]
            secs += time.perf_counter() - t0
            test_all += te.tolist()
            pred_all += pred
        m = pooled_metrics(data, np.array(test_all), pred_all, actions)
        m.pop("predictions")
        results[name] = {**m, "train_seconds": secs}
        print(f"{name}: macro {m['macro']:.3f}, accuracy {m['accuracy']:.3f}, {secs:.0f} s", file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    print_table(results, actions)
    return 0


def print_table(results: dict, actions: list[str]) -> None:
    any_m = next(iter(results.values()))
    support = any_m.get("support", {})
    cols = [a for a in actions if a in support]
    moving_n = max(m.get("moving_n", 0) for m in results.values())
    head = ("| variant | " + " | ".join(f"{a} (n={support[a]})" for a in cols)
            + f" | macro | accuracy | macro, moving clips (n={moving_n}) | train s | × full |")
    print(head)
    print("|" + "---|" * (len(cols) + 6))
    base = results.get("full", {}).get("train_seconds")
    for name, m in results.items():
        per = m["per_primitive"]
        ratio = f"{m['train_seconds'] / base:.2f}" if base else "–"
        print(f"| {name} | " + " | ".join(f"{per.get(a, float('nan')):.2f}" for a in cols)
              + f" | {m['macro']:.3f} | {m['accuracy']:.3f} | {m.get('moving_macro', float('nan')):.3f}"
              f" | {m['train_seconds']:.0f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
