"""Language-action pre-training and the LA4VLA instruction-following metrics (DAR/DCS/SR/SS)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.action_expert import ActionExpert, ExpertConfig
from policies.datasets import (la_windows, load_la_records, read_la_export, synthetic_la_records,
                               synthetic_windows)
from policies.language_eval import (DIRECTIONS, Trials, conflicting_pairs, dar, dcs, direction_metrics, endpoint_displacement,
                                    instruction_direction, separability_ratio, silhouette)
from policies.normalize import MinMaxNormalizer
from policies.train import TrainConfig, train
from recorder.annotations import AnnotationDoc, load_annotations, save_annotations
from recorder.export import export_language_action
from synthetic_pick_place import pick_place, write_episode

ROOT = Path(__file__).resolve().parents[1]
UP, DOWN = "upward", "downward"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------- metrics, known answers


def test_instruction_direction_reads_the_dominant_word_or_the_primitive():
    assert instruction_direction("move the gripper downward, forward and left") == DOWN
    assert instruction_direction("move the gripper left, downward and forward") == "left"
    assert instruction_direction("lift the object upward while holding it", "lift") == UP
    assert instruction_direction("push the object", "push") == "forward"
    assert instruction_direction("align with and grasp the object", "grasp") is None
    assert instruction_direction("hold still", "wait") is None


def test_dar_and_dcs_on_hand_made_predictions():
    pred = np.array([[0, 0, 0.1], [0, 0, -0.1], [0.05, 0, 0.2], [0, 0.1, 0]])
    labels = [UP, UP, DOWN, "left"]
    assert dar(pred, labels) == pytest.approx(2 / 4)
    gt = np.array([[0, 0, 0.3], [0, 0, 0.3], [0, 0, -0.2], [0, 0.2, 0]])
    # cos = 1, -1, 0.2/sqrt(0.0425)·(−1)… computed by hand below; a zero prediction scores 0.
    c3 = -0.2 / np.sqrt(0.05 ** 2 + 0.2 ** 2)
    assert dcs(pred, gt) == pytest.approx((1 - 1 + c3 + 1) / 4)
    assert dcs(np.zeros((2, 3)), gt[:2]) == 0.0
    # Displacement = last chunk position − start, i.e. the sum of increments.
    chunk = np.cumsum(np.full((1, 5, 3), 0.01), axis=1)
    assert endpoint_displacement(chunk, np.zeros((1, 3)))[0] == pytest.approx([0.05] * 3)


def test_separability_ratio_and_silhouette_by_hand():
    pred = np.array([[0, 0, 1.0], [0, 0, 1.2], [0, 0, -1.0], [0, 0, -1.2]])
    labels = [UP, UP, DOWN, DOWN]
    # within: 0.2 in each group; between: mean(2.0, 2.2, 2.2, 2.4) = 2.2
    assert separability_ratio(pred, labels) == pytest.approx(2.2 / 0.2, rel=1e-6)
    pred3 = np.array([[0, 0, 1.0], [0, 0, 2.0], [0, 0, -1.0]])
    # a: (2-1)/2 = 0.5, b: (3-1)/3, singleton c: 0
    assert silhouette(pred3, [UP, UP, DOWN]) == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    # Mixed-up predictions separate worse than clean ones.
    mixed = pred[[0, 2, 1, 3]]
    assert separability_ratio(mixed, labels) < 1 < separability_ratio(pred, labels)
    assert silhouette(mixed, labels) < 0 < silhouette(pred, labels)
    assert np.isnan(separability_ratio(pred[:2], labels[:2])) and np.isnan(silhouette(pred[:2], labels[:2]))
    m = direction_metrics(pred, -pred, labels)
    assert m["DAR"] == 1.0 and m["DCS"] == pytest.approx(-1.0) and m["n"] == 4
    with pytest.raises(ValueError, match="unknown direction"):
        dar(pred, ["up"] * 4)


def test_conflicting_state_partners_move_the_opposite_way():
    def tr(z_end):
        a = np.zeros((1, 4, 10))
        a[0, :, 2] = np.linspace(0, z_end, 4)
        return a
    labels = np.array([UP, UP, DOWN, "left"])
    action = np.concatenate([tr(0.1), tr(0.1), tr(-0.1), tr(-0.05)])
    trials = Trials(labels, ["lift", "lift", "lower", "move the gripper left"], np.zeros((4, 1, 10)), action,
                    np.zeros((4, 8)))
    keep, partner = conflicting_pairs(trials, seed=1)
    pairs = dict(zip(keep.tolist(), partner.tolist()))
    assert pairs[0] == pairs[1] == 2 and pairs[2] in (0, 1)
    # No "right" trial: "left" falls back to a trial moving against +y — there is none, so it is dropped.
    assert 3 not in pairs


# ---------------------------------------------------------------------------- data, model, CLI


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    d = tmp_path_factory.mktemp("la_eps")
    return [write_episode(d / f"ep{i}.h5", pick_place(i), images=False, propose=True) for i in range(3)]


def test_unscored_segments_need_opting_in_and_the_export_feeds_the_same_windows(episodes, tmp_path):
    assert load_la_records(episodes[:1]) == []  # auto proposals are unscored: not verified
    recs = load_la_records(episodes[:1], include_unscored=True)
    assert {r["primitive"] for r in recs} >= {"lift", "lower", "transport"}
    auto = load_annotations(episodes[0])["auto"]
    doc, _ = AnnotationDoc("alice", auto.n_frames, auto.segments).accept_all(quality=3)
    save_annotations(episodes[0], doc)
    out = tmp_path / "la.jsonl"
    assert export_language_action(episodes[:1], out) == len(recs)
    exported = read_la_export(out)
    cfg = ExpertConfig(lang_dim=384, horizon=8)
    w_ep, w_js = la_windows(recs, cfg), la_windows(exported, cfg)
    assert len(w_ep) == len(w_js) == sum(len(r["state"]) for r in recs)
    assert torch.allclose(w_ep.action, w_js.action, atol=1e-5) and torch.equal(w_ep.lang, w_js.lang)
    # Waypoint-agnostic: every guidance slot holds the current pose.
    assert torch.equal(w_ep.guide, w_ep.state[:, -1:].expand_as(w_ep.guide))
    # Windows mixed with language-free ones get zero features there.
    mixed = type(w_ep).concat([w_ep, synthetic_windows(1, cfg)])
    assert mixed.lang.shape == (len(mixed), 384) and not mixed.lang[len(w_ep):].any()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "lift"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1"):
        read_la_export(bad)


def test_synthetic_la_segments_move_the_way_their_instruction_says():
    recs = synthetic_la_records(300, seed=3)
    for r in recs:
        label = instruction_direction(r["instruction"], r["primitive"])
        disp = np.asarray(r["action"])[-1, :3] - np.asarray(r["state"])[0, :3]
        assert label == r["direction"] and float(disp @ DIRECTIONS[label]) > 0.04, r["instruction"]
        # The named (dominant) axis carries the largest component of the motion.
        assert np.argmax(np.abs(disp)) == np.argmax(np.abs(DIRECTIONS[label])), r["instruction"]
    assert len({r["direction"] for r in recs}) == 6
    # Every direction from open and from closed grippers, so the opening cannot tell the way.
    grip = {(r["direction"], bool(r["state"][0, 7] > 0.5)) for r in recs}
    assert grip == {(d, o) for d in DIRECTIONS for o in (True, False)}
    ups = np.array([r["state"][0, 7] for r in recs if r["direction"] == UP])
    downs = np.array([r["state"][0, 7] for r in recs if r["direction"] == DOWN])
    assert abs(ups.mean() - downs.mean()) < 0.15
    # Both phrasings (holding / empty) per vertical direction, and multi-word directions.
    texts = {r["instruction"] for r in recs}
    assert {"lift the object upward while holding it", "move the gripper upward"} <= texts
    assert any(t.startswith("move the gripper downward,") or t.startswith("move the gripper downward and")
               for t in texts)


def test_la_pretrain_needs_language_and_a_language_model(episodes, tmp_path):
    cfg = ExpertConfig(horizon=8)
    with pytest.raises(ValueError, match="la-pretrain"):
        train(TrainConfig(stage="la-pretrain", out_dir=str(tmp_path), steps=1), synthetic_windows(1, cfg), cfg,
              progress="none")


def test_language_changes_the_condition_and_old_checkpoints_load(tmp_path):
    norm = MinMaxNormalizer.fit(np.random.default_rng(0).random((50, 10)))
    m = ActionExpert(ExpertConfig(lang_dim=384, horizon=8), norm).eval()
    s, g = torch.rand(2, 1, 10), torch.rand(2, 4, 10)
    lang = torch.randn(2, 384)
    assert not torch.allclose(m.encode(s, g, None, lang=lang), m.encode(s, g, None, lang=-lang))
    assert torch.equal(m.encode(s, g, None), m.encode(s, g, None, lang=torch.zeros(2, 384)))
    # A checkpoint from before lang_dim existed: no language keys in its config.
    old = ActionExpert(ExpertConfig(horizon=8), norm)
    ck = old.checkpoint_dict()
    for k in ("lang_dim", "lang_feat"):
        ck["config"].pop(k)
    torch.save(ck, tmp_path / "old.pt")
    loaded = ActionExpert.load(tmp_path / "old.pt")
    assert loaded.config.lang_dim == 0 and loaded.lang_mlp is None
    assert loaded.encode(s, g, None).shape[1] == ExpertConfig().cond_dim


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


def test_la_pretrain_then_eval_language_cli(episodes, tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "expert", "--stage", "la-pretrain", "--la-data", *map(str, episodes[1:]), "--la-unscored",
             "--steps", "4", "--batch-size", "16", "--horizon", "8", "--out", str(out), "--progress", "none")
    assert r.returncode == 0, r.stderr
    ck = ActionExpert.read_checkpoint(out / "last.pt")
    assert ck["config"]["lang_dim"] == 384 and ck["train"]["step"] == 4
    js = tmp_path / "eval.json"
    r = _cli("eval-language", "--checkpoint", str(out / "last.pt"), "--name", "tiny", "--data", str(episodes[0]),
             "--la-unscored", "--ddim-steps", "2", "--json", str(js))
    assert r.returncode == 0, r.stderr
    assert "| Model | Condition | DAR | DCS | SR | SS | N |" in r.stdout
    assert "| tiny | paired |" in r.stdout and "| tiny | conflicting state |" in r.stdout
    res = json.loads(js.read_text())["models"]["tiny"]
    assert res["lang_dim"] == 384 and set(res["trials_per_direction"]) >= {UP, DOWN}
    for cond in ("paired", "conflicting state"):
        m = res["conditions"][cond]
        assert m["n"] > 0 and 0.0 <= m["DAR"] <= 1.0 and -1.0 <= m["DCS"] <= 1.0
    r = _cli("eval-language", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(episodes[0]))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "missing.pt" in r.stderr
