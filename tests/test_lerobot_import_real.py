"""A dataset this project did not write: built by lerobot 0.6.1's own writer (its venv, a
subprocess), opened in the Annotate controller, proposed + edited + saved, then loaded again by
lerobot, whose ``active_at(t, style="subtask")`` must return the edited segments with every frame
unchanged. Skips cleanly without the lerobot venv (scripts/setup-lerobot-venv.sh or
ACTSTUDIO_LEROBOT_VENV)."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from synthetic_pick_place import pick_place

from app.annotate_controller import PROPOSALS, AnnotateController
from recorder import lerobot_annotations as la
from recorder.lerobot_dataset import episode_path, load_episode

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/lerobot_roundtrip.py"


def lerobot_python() -> Path:
    venv = Path(os.environ.get("ACTSTUDIO_LEROBOT_VENV", ROOT / ".lerobot-venv"))
    py = venv / "bin" / "python"
    if not py.exists():
        pytest.skip("no lerobot venv (build it with scripts/setup-lerobot-venv.sh, or set ACTSTUDIO_LEROBOT_VENV)")
    probe = subprocess.run([str(py), "-c", "import lerobot.datasets"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"{py}: lerobot not importable")
    return py


def run(py: Path, *args, tmp: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
           "SVT_LOG": "1"}
    proc = subprocess.run([str(py), str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    print(proc.stdout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


def test_lerobot_written_dataset_edited_in_annotate_reads_back_in_lerobot(qtbot, tmp_path):
    py = lerobot_python()
    src = {}
    for e in range(2):
        syn = pick_place(e, fps=20.0)
        n = len(syn.gripper)
        src[f"state_{e}"] = np.hstack([np.linspace(-1, 1, 7)[None] + 0.01 * np.arange(n)[:, None], syn.gripper[:, None]])
        src[f"ee_pose_{e}"], src[f"action_{e}"] = syn.ee_pose, syn.action
        src[f"grey_{e}"] = 8 + (e * 37 + np.arange(n) * 6) % 240
    np.savez(tmp_path / "source.npz", **src)
    out = tmp_path / "lerobot_ds"
    run(py, "make", out, tmp_path / "source.npz", tmp=tmp_path)
    assert la.LANGUAGE_PERSISTENT not in json.loads((out / "meta/info.json").read_text())["features"]

    c = AnnotateController("dana")
    try:
        with qtbot.waitSignal(c.episodeOpened, timeout=20000):
            c.open_episode(episode_path(out, 1))
        assert c.episode.cannot_propose == "" and c.episode.n_frames == len(src["state_1"])
        with qtbot.waitSignal(c.busyChanged, timeout=20000, check_params_cb=lambda text: text == ""):
            assert c.propose()
        auto = c.docs[PROPOSALS]
        assert len(auto) >= 4 and c.doc.segments == auto.segments   # empty document: starts from the proposals
        grasp = next(k for k, s in enumerate(c.doc.segments) if s.primitive == "grasp")
        g0 = c.doc[grasp].start
        assert c.move_boundary(grasp, "start", g0 - 3)                  # an edit LeRobot must see
        assert c.set_field(grasp, "instruction", "close the gripper on the cube")
        assert c.set_field(0, "instruction", "reach the cube")
        with qtbot.waitSignal(c._autosave._saved, timeout=20000) as saved:
            c.save_now(queue_behind=True)
        assert saved.args[2] == ""
        doc = c.doc
    finally:
        c.shutdown()
    ep = load_episode(out, 1)
    assert [r["content"] for r in ep.subtasks][:1] == ["reach the cube"]

    def text_at(i: int) -> str:
        k = max(j for j, s in enumerate(doc.segments) if s.start <= i)
        s = doc[k]
        return s.instruction or f"{s.primitive} {s.object}".strip()

    g = g0 - 3
    frames = [[1, i, text_at(i)] for i in (0, g - 1, g, g + 1, g0, doc[-1].start, ep.n_frames - 1)]
    frames += [[0, i, None] for i in (0, 40)]                           # the other episode has no subtasks
    (tmp_path / "expected.json").write_text(json.dumps({"frames": frames}))
    log = run(py, "check", out, tmp_path / "source.npz", tmp_path / "expected.json", tmp=tmp_path)
    assert "ROUNDTRIP OK" in log and f"frame {g:3d}" in log and "'close the gripper on the cube'" in log
