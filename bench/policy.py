"""Policy benchmarks: FPS methods, action-expert inference latency, training throughput.

    python -m bench.policy [--quick]

Prints tables; every figure comes with a ratio against a baseline measured in the same run, because
these machines are shared and absolute timings drift with the neighbours' load.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from policies import geometry as geo
from policies.action_expert import ActionExpert, ExpertConfig, ExpertPolicy
from policies.datasets import DEFAULT_WORKSPACE, synthetic_windows
from policies.normalize import MinMaxNormalizer

BUNDLED_EXPERT = Path(__file__).resolve().parents[1] / "assets" / "checkpoints" / "expert_multitask.pt"


def _time(fn, n: int, warmup: int = 2) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def _scene_depth(h: int = 480, w: int = 640) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A D435-like top view of a table (1 m below the camera) with three boxes: depth (uint16, 1 mm),
    K, T_base_camera. Every pixel has a return, like a clean sim render (the worst case for FPS)."""
    K = np.array([[615.0, 0, w / 2], [0, 615.0, h / 2], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])  # optical axis straight down
    T[:3, 3] = [0.5, 0.0, 1.0]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = np.full((h, w), 1.0)
    for cx, cy, s in ((0.5, 0.0, 0.05), (0.6, 0.15, 0.04), (0.4, -0.2, 0.06)):
        top = 1.0 - 2 * s
        x = (u - K[0, 2]) * top / K[0, 0] + 0.5
        y = -(v - K[1, 2]) * top / K[1, 1]
        depth = np.where((np.abs(x - cx) < s) & (np.abs(y - cy) < s), top, depth)
    return (depth * 1000).astype(np.uint16), K, T


def bench_clouds(quick: bool) -> None:
    depth, K, T = _scene_depth()
    lo, hi = DEFAULT_WORKSPACE
    n_rep = 3 if quick else 10
    full = geo.depth_to_points(depth, 0.001, K, T)
    t_bp = _time(lambda: geo.depth_to_points(depth, 0.001, K, T), n_rep)
    cropped = geo.crop(geo.depth_to_points(depth, 0.001, K, T, stride=2), lo, hi)
    vox = geo.voxel_downsample(cropped, 0.005)
    rows = []
    base = None
    cases = [("open3d FPS, full cloud", full, "open3d"), ("torch FPS, full cloud", full, "torch"),
             ("open3d FPS, stride 2 + crop", cropped, "open3d"), ("torch FPS, stride 2 + crop", cropped, "torch"),
             ("open3d FPS, + 5 mm voxel", vox, "open3d"), ("torch FPS, + 5 mm voxel", vox, "torch")]
    for name, pts, method in cases:
        reps = 1 if len(pts) > 100_000 and quick else n_rep
        t = np.median(_time(lambda: geo.farthest_point_sample(pts, 1024, method=method), reps, warmup=1))
        base = base or t
        rows.append([name, f"{len(pts):,}", f"{t * 1e3:.1f}", f"{t / base:.2f}"])
    t_pipe = _time(lambda: geo.cloud_from_depth(depth, 0.001, K, T, lo, hi, 1024), n_rep)
    rows.append(["whole pipeline (cloud_from_depth)", f"{len(full):,}", f"{np.median(t_pipe) * 1e3:.1f}",
                 f"{np.median(t_pipe) / base:.2f}"])
    _table(f"FPS to 1024 points (640x480 depth → {len(full):,} points; back-projection "
           f"{np.median(t_bp) * 1e3:.1f} ms)", ["input", "points", "median ms", "ratio vs first row"], rows)


def bench_inference(quick: bool) -> None:
    rng = np.random.default_rng(0)
    norm = MinMaxNormalizer.fit(rng.uniform(-1, 1, (256, 10)))
    n = 30 if quick else 200
    rows = []
    base = None
    # The default U-Net against DP3's three-level layout (scaled down), same run, same load.
    cases = [(f"{dims}", ActionExpert(ExpertConfig(unet_dims=dims), norm).eval(), modes)
             for dims, modes in (((32, 64), (False, True)), ((32, 64, 128), (True,)))]
    if BUNDLED_EXPERT.exists():  # what a new user actually rolls out
        cases.append(("bundled expert_multitask.pt", ActionExpert.load(BUNDLED_EXPERT).eval(), (True,)))
    for label, model, modes in cases:
        cfg = model.config
        params = sum(p.numel() for p in model.parameters())
        state = np.r_[0.5, 0, 0.3, 1, 0, 0, 0, 1.0]
        guide = np.tile(np.r_[0.5, 0.05, 0.25, 1, 0, 0, 0, 1.0], (cfg.n_guide, 1))
        cloud = rng.uniform((0.25, -0.35, 0.02), (0.75, 0.35, 0.5), (cfg.n_points, 3)).astype(np.float32)
        for jit in modes:
            pol = ExpertPolicy(model, ddim_steps=10, jit=jit)
            for steps in (5, 10, 16):
                pol.ddim_steps = steps
                lat = np.array([pol.act(state, cloud, guide).latency_s for _ in range(n + 3)][3:])
                p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
                base = base or p50
                rows.append([f"{label} {params / 1e6:.2f} M", "traced+frozen" if jit else "eager", str(steps),
                             f"{p50 * 1e3:.1f}", f"{p99 * 1e3:.1f}", f"{p50 / base:.2f}",
                             "yes" if p99 < 0.030 else "no"])
    _table(f"inference latency per chunk, batch 1, CPU, torch threads {torch.get_num_threads()} "
           f"({n} chunks each; horizon 16, 1024-point cloud through the PointNet included)",
           ["model (U-Net dims), params", "mode", "DDIM steps", "p50 ms", "p99 ms", "p50 ratio vs row 1", "p99 < 30 ms"], rows)


def bench_training(quick: bool) -> None:
    cfg = ExpertConfig()
    windows = synthetic_windows(20, cfg, seed=0)
    rng = np.random.default_rng(0)
    model = ActionExpert(cfg, MinMaxNormalizer.fit(windows.pose_vectors(relative=cfg.relative))).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_steps = 3 if quick else 8
    rows = []
    base = None
    # The bundled recipe: 512-point clouds, a smaller PointNet, the keypoint head and its auxiliary loss.
    rcfg = ExpertConfig(n_points=512, pointnet_dims=(32, 64, 128), keypoint_feat=32, keypoint_skip=True)
    recipe = ActionExpert(rcfg, model.normalizer).train()
    recipe_opt = torch.optim.AdamW(recipe.parameters(), lr=1e-4)
    for stage, batch in (("pretrain (cloud masked)", 256), ("pretrain (cloud masked)", 1024),
                         ("finetune (1024-pt clouds)", 64), ("finetune (1024-pt clouds)", 256),
                         ("finetune, bundled recipe (512 pts, keypoint head)", 32),
                         ("finetune, bundled recipe (512 pts, keypoint head)", 256)):
        m, o = (recipe, recipe_opt) if "recipe" in stage else (model, opt)
        idx = torch.as_tensor(rng.integers(0, len(windows), batch))
        b = windows.batch(idx, with_cloud=False)
        if stage.startswith("finetune"):
            b["cloud"] = torch.rand(batch, m.config.n_points, 3) * 0.5
            b["has_cloud"] = torch.ones(batch, dtype=torch.bool)
            b["target"] = b["cloud"][:, 0] + 0.01  # a grasp point near the cloud

        def step(m=m, o=o, b=b):  # bound now: the loop rebinds them
            loss = m(b, 0.1)
            o.zero_grad()
            loss.backward()
            o.step()

        t = np.median(_time(step, n_steps, warmup=1))
        sps = batch / t
        base = base or sps
        rows.append([stage, str(batch), f"{t * 1e3:.0f}", f"{sps:,.0f}", f"{sps / base:.2f}"])
    _table("training throughput, CPU (one optimiser step = forward + backward + AdamW)",
           ["stage", "batch", "ms/step", "samples/s", "ratio vs first row"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke run)")
    ap.add_argument("--only", choices=("clouds", "inference", "training"), default=None)
    args = ap.parse_args(argv)
    print(f"bench/policy.py — host CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} "
          "(shared machine: compare ratios, not absolute times)")
    for name, fn in (("clouds", bench_clouds), ("inference", bench_inference), ("training", bench_training)):
        if args.only in (None, name):
            fn(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
