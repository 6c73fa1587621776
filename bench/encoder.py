"""Ablation table for the RoboAct-CLIP encoder: segment-label accuracy on held-out sim episodes.

Variants (the paper's two ablations, §III.B, plus a floor):
  full            temporal-difference transformer + disentangled heads, all losses
  no_temporal     fusion of F_1, F_n only (ablation 1)
  no_disentangle  F_v projected straight to the joint embedding, no ortho/recomb (ablation 2)
  proprio         logistic regression on the clip's ee-position change and gripper (no images)

Usage:
  python -m bench.encoder --episodes DIR [DIR…] [--clips CLIPDIR] [--epochs 40] [--lr 3e-3] [--out runs/encoder_bench]
Clips are built from the episodes with the expert phases as labels (policies.clip_data.build_clips)
unless CLIPDIR already holds them. Every variant uses the same episode-level split.
Training time is also given as a ratio to the full model's, since the 2-core machine is shared.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from policies.clip_data import ClipDataset, build_clips
from policies.encoder_train import EncoderTrainConfig, accuracy_table, train_encoder, vocabulary
from recorder.export import find_episodes

# The sim's third-person camera: the arm and the objects lie in the upper-middle of the 640×480 view.
CROP = (0.0, 0.65, 0.15, 0.85)

VARIANTS = {
    "full": {},
    "no_temporal": {"temporal": False},
    "no_disentangle": {"disentangle": False},
}


def proprio_features(proprio: np.ndarray) -> np.ndarray:
    """(N, n, 8) → (N, 4n): ee position relative to the clip's first frame, and the gripper."""
    pos = proprio[:, :, :3] - proprio[:, :1, :3]
    return np.concatenate([pos.reshape(len(pos), -1), proprio[:, :, 7]], axis=1)


def proprio_baseline(data: ClipDataset, train_idx, test_idx, actions: list[str]) -> tuple[dict, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if data.proprio is None:
        raise SystemExit("the clips carry no proprio (built by recorder.export?); rebuild with --episodes")
    x = proprio_features(data.proprio.numpy())
    y = np.array([r.primitive for r in data.records])
    t0 = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    clf.fit(x[train_idx], y[train_idx])
    secs = time.perf_counter() - t0
    return accuracy_table(list(y[test_idx]), list(clf.predict(x[test_idx])), actions), secs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", nargs="*", default=[], help="episode files or folders (sim demos)")
    ap.add_argument("--clips", default=None, help="clip folder (built here when empty)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default %(default)s)")
    ap.add_argument("--variants", default="full,no_temporal,no_disentangle,proprio")
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
    results: dict[str, dict] = {}
    for name in args.variants.split(","):
        if name == "proprio":
            cfg = EncoderTrainConfig(seed=args.seed)
            tr, te = data.split_by_episode(cfg.holdout, cfg.seed)
            m, secs = proprio_baseline(data, tr, te, actions)
        else:
            cfg = EncoderTrainConfig(out_dir=str(out / name), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                     seed=args.seed, threads=args.threads)
            res = train_encoder(data, cfg, VARIANTS[name], progress="text", stream=sys.stderr)
            m, secs = res.metrics, res.seconds
        results[name] = {**m, "train_seconds": secs}
        print(f"{name}: macro {m['macro']:.3f}, accuracy {m['accuracy']:.3f}, {secs:.0f} s", file=sys.stderr)
        (out / "results.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    print_table(results, actions)
    return 0


def print_table(results: dict, actions: list[str]) -> None:
    any_m = next(iter(results.values()))
    support = any_m.get("support", {})
    cols = [a for a in actions if a in support]
    head = "| variant | " + " | ".join(f"{a} (n={support[a]})" for a in cols) + " | macro | accuracy | train s | × full |"
    print(head)
    print("|" + "---|" * (len(cols) + 5))
    base = results.get("full", {}).get("train_seconds")
    for name, m in results.items():
        per = m["per_primitive"]
        ratio = f"{m['train_seconds'] / base:.2f}" if base else "–"
        print(f"| {name} | " + " | ".join(f"{per.get(a, float('nan')):.2f}" for a in cols)
              + f" | {m['macro']:.3f} | {m['accuracy']:.3f} | {m['train_seconds']:.0f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
