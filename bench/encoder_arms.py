"""Segment-label accuracy per robot on held-out sim episodes: encoders next to the proprio baseline.

Item 5 of issue 14: the encoder bundled in session 3 was trained on sim-xarm6 images only and calls a
sim-franka "move" a "transport". This trains one full RoboAct-CLIP model on the training episodes of
both sim robots, then scores every model on held-out episodes of each robot (seeds no model saw):

  new            the full model trained here (both robots)
  old            a given checkpoint (``--old``, the bundled one), as it is
  proprio        logistic regression on the clip's ee-position change and gripper (bench/encoder.py),
                 fitted on the same training clips
  pixels         logistic regression on 12×16 pixels of F_1 and F_n − F_1, same training clips

Per robot: per-primitive recall, macro (their mean), accuracy; and a paired bootstrap over held-out
episodes of new − old macro (95 % interval), which is how "as good within the noise" is judged.

Usage:
  python -m bench.encoder_arms --train DIR… --test DIR… --clips CLIPDIR --out DIR [--old CKPT] [--epochs 15]
Clips are built from the successful episodes (expert phases as labels, bench.encoder.CROP) unless
CLIPDIR holds them; their ``robot`` field says which arm each clip shows. The held-out episodes are
named by --test (file names) also when the clips already exist.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.encoder import CROP, linear_predict, pixel_features, proprio_features
from policies.clip_data import ClipDataset, build_clips
from policies.encoder import RoboActCLIP
from policies.encoder_train import EncoderTrainConfig, accuracy_table, evaluate, train_encoder, vocabulary
from recorder.export import find_episodes


def successful(episodes) -> list:
    """The episodes whose recorded outcome is "success"."""
    from recorder.episode import EpisodeReader

    keep = []
    for p in episodes:
        with EpisodeReader(p) as r:
            if r.meta.get("outcome") == "success":
                keep.append(p)
    return keep


def split_indices(data: ClipDataset, test_episodes: set[str]) -> tuple[np.ndarray, np.ndarray]:
    test = np.array([i for i, r in enumerate(data.records) if r.episode in test_episodes], dtype=int)
    train = np.array([i for i, r in enumerate(data.records) if r.episode not in test_episodes], dtype=int)
    return train, test


def per_robot(data: ClipDataset, test_idx: np.ndarray, pred: list[str], actions: list[str]) -> dict[str, dict]:
    """{robot: accuracy_table} over the held-out clips of each robot."""
    out = {}
    for robot in sorted({data.records[i].robot for i in test_idx}):
        keep = [k for k, i in enumerate(test_idx) if data.records[i].robot == robot]
        m = accuracy_table([data.records[test_idx[k]].primitive for k in keep], [pred[k] for k in keep], actions)
        m["episodes"] = len({data.records[test_idx[k]].episode for k in keep})
        out[robot] = m
    return out


def macro_of(true: list[str], pred: list[str], actions: list[str]) -> float:
    return accuracy_table(true, pred, actions)["macro"]


def paired_bootstrap(data: ClipDataset, idx: np.ndarray, pred_a: list[str], pred_b: list[str], actions: list[str],
                     n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(macro_a − macro_b, 2.5 %, 97.5 %) with whole held-out episodes resampled (clips of one episode
    share its layout, so they are not independent draws)."""
    rng = np.random.default_rng(seed)
    eps = sorted({data.records[i].episode for i in idx})
    by_ep = {e: [k for k, i in enumerate(idx) if data.records[i].episode == e] for e in eps}
    true = [data.records[i].primitive for i in idx]
    diffs = []
    for _ in range(n):
        ks = [k for e in rng.choice(eps, len(eps)) for k in by_ep[e]]
        t = [true[k] for k in ks]
        diffs.append(macro_of(t, [pred_a[k] for k in ks], actions) - macro_of(t, [pred_b[k] for k in ks], actions))
    d = macro_of(true, pred_a, actions) - macro_of(true, pred_b, actions)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(d), float(lo), float(hi)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", nargs="*", default=[], help="training episode files or folders")
    ap.add_argument("--test", nargs="*", default=[], help="held-out episode files or folders")
    ap.add_argument("--clips", required=True, help="clip folder (built here from --train and --test when empty)")
    ap.add_argument("--old", default=None, help="an existing encoder checkpoint to score as it is")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--all-outcomes", action="store_true",
                    help="also clip failed demos (default: successful ones only — a timed-out demo's expert "
                         "phases no longer say what its images show)")
    ap.add_argument("--out", default="runs/encoder_arms")
    args = ap.parse_args(argv)
    out, clips = Path(args.out), Path(args.clips)
    out.mkdir(parents=True, exist_ok=True)
    test_eps = {p.name for p in find_episodes(args.test)} if args.test else set()
    if not (clips / "captions.jsonl").is_file():
        train_eps = find_episodes(args.train) if args.train else []
        if not train_eps or not test_eps:
            print("error: no clip folder yet, and --train / --test episodes are missing", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        eps = list(train_eps) + list(find_episodes(args.test))
        if not args.all_outcomes:
            eps = successful(eps)
        n = build_clips(eps, clips, crop=CROP)
        print(f"built {n} clips from {len(eps)} episodes in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    data = ClipDataset(clips)
    if not test_eps:
        print("error: --test names the held-out episodes (by file name)", file=sys.stderr)
        return 2
    if any(not r.robot for r in data.records):
        print(f"error: {clips}: clips without a robot field (built before it was kept); rebuild them", file=sys.stderr)
        return 2
    actions = vocabulary(data)["action"]
    tr, te = split_indices(data, test_eps)
    print(f"{len(tr)} training clips, {len(te)} held-out clips", file=sys.stderr)
    preds: dict[str, list[str]] = {}
    secs: dict[str, float] = {}

    t0 = time.perf_counter()
    cfg = EncoderTrainConfig(out_dir=str(out / "new"), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, threads=args.threads)
    res = train_encoder(data, cfg, {}, progress="text", stream=sys.stderr, split=(tr, te))
    preds["new"], secs["new"] = res.metrics["predictions"], time.perf_counter() - t0
    if args.old:
        t0 = time.perf_counter()
        old = RoboActCLIP.load(args.old)
        if tuple(old.cfg.crop or ()) != tuple(data.crop or ()):
            print(f"warning: {args.old} crops {old.cfg.crop}, the clips {data.crop}", file=sys.stderr)
        preds["old"], secs["old"] = evaluate(old, data, te)["predictions"], time.perf_counter() - t0
    for name, feats in (("proprio", lambda: proprio_features(data.proprio.numpy())),
                        ("pixels", lambda: pixel_features(data.frames))):
        t0 = time.perf_counter()
        preds[name], secs[name] = linear_predict(feats(), data, tr, te), time.perf_counter() - t0

    results = {name: per_robot(data, te, p, actions) for name, p in preds.items()}
    robots = sorted(results["new"])
    boot = {}
    if "old" in preds:
        for robot in robots:
            idx = [k for k, i in enumerate(te) if data.records[i].robot == robot]
            boot[robot] = paired_bootstrap(data, te[idx], [preds["new"][k] for k in idx],
                                           [preds["old"][k] for k in idx], actions)
    # What each model calls the held-out "move" clips, per robot (the symptom).
    move = {name: {robot: _counts([p[k] for k, i in enumerate(te)
                                   if data.records[i].robot == robot and data.records[i].primitive == "move"])
                   for robot in robots} for name, p in preds.items()}
    report = {"results": results, "seconds": secs, "bootstrap_new_minus_old": boot, "move_predicted_as": move,
              "train_clips": int(len(tr)), "test_clips": int(len(te)), "test_episodes": sorted(test_eps),
              "checkpoint": str(res.checkpoint)}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print_table(results, actions, secs)
    for robot, (d, lo, hi) in boot.items():
        print(f"\n{robot}: new − old macro {d:+.3f} (95 % paired bootstrap over held-out episodes {lo:+.3f} … {hi:+.3f})")
    for name, per in move.items():
        print(f"{name}: held-out 'move' clips predicted as " + "; ".join(
            f"{robot}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for robot, c in per.items()))
    return 0


def _counts(labels: list[str]) -> dict[str, int]:
    c: dict[str, int] = {}
    for x in labels:
        c[x] = c.get(x, 0) + 1
    return dict(sorted(c.items(), key=lambda kv: -kv[1]))


def print_table(results: dict, actions: list[str], secs: dict) -> None:
    robots = sorted(next(iter(results.values())))
    for robot in robots:
        sup = results["new"][robot]["support"]
        cols = [a for a in actions if a in sup]
        print(f"\n{robot} ({results['new'][robot]['episodes']} held-out episodes, {results['new'][robot]['n']} clips)")
        print("| model | " + " | ".join(f"{a} (n={sup[a]})" for a in cols) + " | macro | accuracy |")
        print("|" + "---|" * (len(cols) + 3))
        for name, per_r in results.items():
            m = per_r[robot]
            print(f"| {name} | " + " | ".join(f"{m['per_primitive'].get(a, float('nan')):.2f}" for a in cols)
                  + f" | {m['macro']:.3f} | {m['accuracy']:.3f} |")
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()))


if __name__ == "__main__":
    sys.exit(main())
