"""Build a dataset with lerobot's own writer, and check subtasks ActStudio wrote into it — both in the
separate lerobot venv (scripts/setup-lerobot-venv.sh), never in .venv. Used by
tests/test_lerobot_import_real.py:

    $ACTSTUDIO_LEROBOT_VENV/bin/python scripts/lerobot_roundtrip.py make  OUT SOURCE.npz
    $ACTSTUDIO_LEROBOT_VENV/bin/python scripts/lerobot_roundtrip.py check OUT SOURCE.npz EXPECTED.json

SOURCE.npz (written by the test: this venv has none of our code) holds per episode ``state_<e>``,
``ee_pose_<e>``, ``action_<e>`` and ``grey_<e>`` (the uniform grey level painted into each frame).
``make`` writes them with ``LeRobotDataset.create`` + ``add_frame`` + ``save_episode`` +
``finalize``. ``check`` loads OUT with ``LeRobotDataset`` and checks, for every frame listed in
EXPECTED.json ({"frames": [[episode, frame, subtask or null], …]}), that
``active_at(t, persistent=item["language_persistent"], style="subtask")`` is that subtask and that
the frame's state, action and decoded image are still the ones ``make`` wrote. Prints a log and
``ROUNDTRIP OK`` last; exits 1 on the first mismatch.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO_ID = "lab/pick-cube"
CAMERA = "observation.images.front"
FPS = 20


def fail(msg: str) -> None:
    print(f"ROUNDTRIP FAILED: {msg}")
    sys.exit(1)


def make(out: str, source: str) -> None:
    from lerobot.datasets import LeRobotDataset

    src = np.load(source)
    n_eps = len([k for k in src.files if k.startswith("state_")])
    dof = src["state_0"].shape[1]
    h, w = 48, 64
    features = {
        "observation.state": {"dtype": "float32", "shape": (dof,), "names": [f"joint_{i}" for i in range(dof - 1)] + ["gripper"]},
        "observation.ee_pose": {"dtype": "float32", "shape": (7,), "names": ["x", "y", "z", "qx", "qy", "qz", "qw"]},
        "action": {"dtype": "float32", "shape": (8,), "names": None},
        CAMERA: {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]},
    }
    ds = LeRobotDataset.create(REPO_ID, fps=FPS, features=features, root=Path(out), robot_type="franka", use_videos=True)
    for e in range(n_eps):
        for i in range(len(src[f"state_{e}"])):
            ds.add_frame({"observation.state": src[f"state_{e}"][i].astype(np.float32),
                          "observation.ee_pose": src[f"ee_pose_{e}"][i].astype(np.float32),
                          "action": src[f"action_{e}"][i].astype(np.float32),
                          CAMERA: np.full((h, w, 3), int(src[f"grey_{e}"][i]), np.uint8), "task": "pick the cube"})
        ds.save_episode()
    ds.finalize()
    print(f"lerobot wrote {n_eps} episodes, {ds.meta.total_frames} frames to {out}")


def check(out: str, source: str, expected: str) -> None:
    import lerobot
    from lerobot.datasets import LeRobotDataset
    from lerobot.datasets.language_render import active_at

    src = np.load(source)
    want = json.loads(Path(expected).read_text())["frames"]
    ds = LeRobotDataset(REPO_ID, root=out, video_backend="pyav")
    m = ds.meta
    print(f"lerobot {getattr(lerobot, '__version__', '?')}: {m.total_episodes} episodes, {m.total_frames} frames, "
          f"language columns {m.has_language_columns}")
    if not m.has_language_columns:
        fail("info.json declares no language columns")
    starts = np.cumsum([0] + [len(src[f"state_{e}"]) for e in range(m.total_episodes)])
    for e, i, text in want:
        item = ds[int(starts[e] + i)]
        if int(item["episode_index"]) != e or int(item["frame_index"]) != i:
            fail(f"item {starts[e] + i} is episode {int(item['episode_index'])} frame {int(item['frame_index'])}")
        t = float(item["timestamp"])
        act = active_at(t, persistent=item["language_persistent"] or [], style="subtask")
        got = act["content"] if act else None
        if got != text:
            fail(f"episode {e} frame {i} (t={t:.3f}): active subtask {got!r}, expected {text!r}")
        for key, name in (("observation.state", "state"), ("action", "action"), ("observation.ee_pose", "ee_pose")):
            if not np.array_equal(item[key].numpy(), src[f"{name}_{e}"][i].astype(np.float32)):
                fail(f"episode {e} frame {i}: {key} changed")
        level = float(item[CAMERA].mean()) * 255
        if abs(level - float(src[f"grey_{e}"][i])) > 3:
            fail(f"episode {e} frame {i}: decoded grey {level:.1f}, written {int(src[f'grey_{e}'][i])}")
        print(f"episode {e} frame {i:3d} t={t:5.2f}s: active subtask {got!r}; state, action, ee_pose, frame unchanged")
    print("ROUNDTRIP OK")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(__doc__)
        sys.exit(2)
