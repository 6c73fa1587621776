"""Load an ActStudio LeRobot export with the real ``lerobot`` package and check it against its source.

Runs in the separate lerobot venv (scripts/setup-lerobot-venv.sh), never in .venv:

    $ACTSTUDIO_LEROBOT_VENV/bin/python scripts/lerobot_check.py OUT EXPECTED.npz

EXPECTED.npz (written by tests/test_export_lerobot.py from the HDF5 episodes, since this venv has no
h5py) holds per frame ``state``, ``ee_pose``, ``action``, ``episode``, ``frame``, ``pixel`` (the
uniform grey level the test painted into each frame), optionally ``depth_mm`` (the uniform
recorded depth of each frame), and ``subtasks`` (a JSON list per episode of
[start_s, text]). Prints a log and ``LEROBOT CHECK OK`` last; exits 1 on the first mismatch.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def fail(msg: str) -> None:
    print(f"LEROBOT CHECK FAILED: {msg}")
    sys.exit(1)


def main(out: str, expected: str) -> None:
    import lerobot
    import torch
    from lerobot.datasets import LeRobotDataset
    from lerobot.datasets.language_render import active_at
    from lerobot.utils.import_utils import get_safe_default_video_backend

    exp = np.load(expected)
    subtasks = json.loads(str(exp["subtasks"]))
    print(f"lerobot {getattr(lerobot, '__version__', '?')}, torch {torch.__version__}, python {sys.version.split()[0]}")
    backends = ["pyav"]
    default_backend = get_safe_default_video_backend()
    print(f"lerobot default video backend here: {default_backend}")
    if default_backend == "torchcodec":
        backends.append("torchcodec")
    for backend in backends:
        ds = LeRobotDataset("actstudio/export-check", root=out, video_backend=backend)
        m = ds.meta
        print(f"[{backend}] {ds!r}".replace("\n", " "))
        print(f"[{backend}] codebase {m.info.codebase_version}, fps {m.fps}, episodes {m.total_episodes}, "
              f"frames {m.total_frames}, tasks {list(m.tasks.index)}, cameras {m.camera_keys}, "
              f"language columns {m.has_language_columns}")
        if m.info.codebase_version != "v3.0":
            fail(f"codebase_version {m.info.codebase_version}")
        if len(ds) != len(exp["state"]) or m.total_episodes != int(exp["episode"].max()) + 1:
            fail(f"{len(ds)} frames / {m.total_episodes} episodes, expected {len(exp['state'])}")
        # first, middle and last frame of every episode
        idx = []
        for e in range(m.total_episodes):
            rows = np.flatnonzero(exp["episode"] == e)
            idx += [int(rows[0]), int(rows[len(rows) // 2]), int(rows[-1])]
        for i in idx:
            item = ds[i]
            for key, name in (("observation.state", "state"), ("observation.ee_pose", "ee_pose"), ("action", "action")):
                got = item[key].numpy()
                if not np.allclose(got, exp[name][i].astype(np.float32), atol=1e-6):
                    fail(f"frame {i} {key}: {got} != {exp[name][i]}")
            if int(item["episode_index"]) != int(exp["episode"][i]) or int(item["frame_index"]) != int(exp["frame"][i]):
                fail(f"frame {i}: episode/frame index {int(item['episode_index'])}/{int(item['frame_index'])}")
            img = item["observation.images.rgb"]
            if tuple(img.shape) != (3, *exp["hw"].tolist()):
                fail(f"frame {i}: image shape {tuple(img.shape)}")
            level = float(img.mean()) * 255
            if abs(level - float(exp["pixel"][i])) > 3:
                fail(f"frame {i}: decoded grey level {level:.1f}, painted {exp['pixel'][i]} (wrong frame?)")
            if "observation.images.depth" in item:
                dep = item["observation.images.depth"]
                if tuple(dep.shape) != (1, *exp["hw"].tolist()):
                    fail(f"frame {i}: depth shape {tuple(dep.shape)}")
                err = float((dep - float(exp["depth_mm"][i])).abs().max())
                if err > 2.0:  # 12-bit log quantisation: ~1.3 mm steps at 0.5 m
                    fail(f"frame {i}: depth off by {err:.2f} mm from the recorded {exp['depth_mm'][i]} mm")
            t = float(item["timestamp"])
            want = [tuple(r) for r in subtasks[int(exp["episode"][i])]]
            rows = item.get("language_persistent") or []
            got = [(round(float(r["timestamp"]), 5), r["content"]) for r in rows if r["style"] == "subtask"]
            if [(round(a, 5), b) for a, b in want] != got:
                fail(f"frame {i}: subtasks {got} != {want}")
            act = active_at(t, persistent=rows, style="subtask")
            want_active = [b for a, b in want if a <= t + 1e-6]
            if (act["content"] if act else None) != (want_active[-1] if want_active else None):
                fail(f"frame {i}: active subtask {act} at t={t}")
            if i == idx[1]:
                dep = item.get("observation.images.depth")
                print(f"[{backend}] item {i}: task {item['task']!r}, t={t:.3f}, state[:3]={item['observation.state'][:3].tolist()}, "
                      f"image {tuple(img.shape)} grey {level:.1f} (painted {int(exp['pixel'][i])}), "
                      + (f"depth {tuple(dep.shape)} {float(dep.mean()):.1f} mm (recorded {int(exp['depth_mm'][i])}), "
                         if dep is not None else "")
                      + f"active subtask {act['content'] if act else None!r}")
        print(f"[{backend}] {len(idx)} items match the HDF5 source (state, ee_pose, action, indices, decoded frame"
              f"{', depth' if 'observation.images.depth' in m.features else ''}, subtasks)")
    # temporal windows, as a policy's training loader asks for them
    fps = ds.meta.fps
    ds = LeRobotDataset("actstudio/export-check", root=out, video_backend="pyav",
                        delta_timestamps={"action": [0.0, 1 / fps, 2 / fps], "observation.images.rgb": [-1 / fps, 0.0]})
    item = ds[int(idx[1])]
    if tuple(item["action"].shape) != (3, 8) or tuple(item["observation.images.rgb"].shape)[:2] != (2, 3):
        fail(f"delta_timestamps shapes {tuple(item['action'].shape)} {tuple(item['observation.images.rgb'].shape)}")
    i = int(idx[1])
    if not np.allclose(item["action"].numpy(), exp["action"][i:i + 3].astype(np.float32), atol=1e-6):
        fail("delta_timestamps action window differs from the source")
    print(f"delta_timestamps: action {tuple(item['action'].shape)}, rgb {tuple(item['observation.images.rgb'].shape)} match")
    print(f"stats keys: {sorted(ds.meta.stats)}")
    compare_with_lerobot_writer(Path(out))
    print("LEROBOT CHECK OK")


def compare_with_lerobot_writer(out: Path) -> None:
    """Write a dataset with the same features through lerobot's own writer (LeRobotDataset.create,
    add_frame, save_episode) and compare file layout, info.json keys and parquet schemas."""
    import tempfile

    import pyarrow.parquet as pq
    from lerobot.datasets import LeRobotDataset

    info = json.loads((out / "meta/info.json").read_text())
    feats = {k: {kk: (tuple(vv) if kk == "shape" else vv) for kk, vv in v.items() if kk != "info"}
             for k, v in info["features"].items()
             if k in ("observation.state", "observation.ee_pose", "action", "observation.images.rgb",
                      "observation.images.depth")}
    depth = "observation.images.depth" in feats
    if depth:
        feats["observation.images.depth"]["info"] = {"is_depth_map": True}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ref"
        ref = LeRobotDataset.create("actstudio/reference", fps=info["fps"], features=feats, root=root,
                                    robot_type=info["robot_type"], use_videos=True)
        h, w, _ = feats["observation.images.rgb"]["shape"]
        for ep in range(2):
            for i in range(5):
                ref.add_frame({k: np.zeros(v["shape"], np.float32) for k, v in feats.items() if v["dtype"] == "float32"}
                              | {"observation.images.rgb": np.full((h, w, 3), 10 * i, np.uint8), "task": "t"}
                              | ({"observation.images.depth": np.full((h, w, 1), 600 + i, np.uint16)} if depth else {}))
            ref.save_episode()
        ref.finalize()
        import re
        # the same kinds of file in the same places (how many files a dataset has depends on its size)
        layout = lambda r: sorted({re.sub(r"chunk-\d{3}/file-\d{3}", "chunk-XXX/file-XXX", str(p.relative_to(r)))
                                   for p in r.rglob("*") if p.is_file()})
        if layout(root) != layout(out):
            fail(f"file layout {layout(out)} != lerobot's {layout(root)}")
        rinfo = json.loads((root / "meta/info.json").read_text())
        if set(rinfo) != set(info):
            fail(f"info.json keys {sorted(info)} != lerobot's {sorted(rinfo)}")
        for k in feats:
            mine_i, theirs_i = info["features"][k].get("info", {}), rinfo["features"][k].get("info", {})
            if mine_i.keys() != theirs_i.keys():
                fail(f"{k} info keys differ from lerobot's: {sorted(set(mine_i) ^ set(theirs_i))}")
            if k == "observation.images.depth":
                same = ("is_depth_map", "depth_unit", "video.codec", "video.pix_fmt", "video.channels", "video.depth_min",
                        "video.depth_max", "video.shift", "video.use_log", "video.extra_options")
                diff = {x: (mine_i[x], theirs_i[x]) for x in same if mine_i[x] != theirs_i[x]}
                if diff:
                    fail(f"depth info differs from lerobot's: {diff}")
            if {x: y for x, y in rinfo["features"][k].items() if x != "info"} != {x: y for x, y in feats[k].items() if x != "info"} | {"shape": list(feats[k]["shape"])}:
                fail(f"{k} feature {info['features'][k]} != lerobot's {rinfo['features'][k]}")
        for rel in ("meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet", "meta/tasks.parquet"):
            mine, theirs = pq.read_schema(out / rel), pq.read_schema(root / rel)
            mine_t = {f.name: str(f.type) for f in mine if not f.name.startswith("language_")}
            theirs_t = {f.name: str(f.type) for f in theirs}
            if mine_t != theirs_t:
                diff = sorted(set(mine_t.items()) ^ set(theirs_t.items()))
                fail(f"{rel}: schema differs from lerobot's writer: {diff}")
        if pq.read_table(out / "meta/tasks.parquet").to_pandas().index.name != "task":
            fail("meta/tasks.parquet is not indexed by task")
        print("same file layout, info.json keys, feature entries and parquet schemas as lerobot's own writer")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2])
